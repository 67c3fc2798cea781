from django.db import connection
from django.http import JsonResponse

from .models import Note


def health(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM django_migrations")
        applied = cursor.fetchone()[0]
    return JsonResponse({"migrations": applied, "notes": Note.objects.count()})
