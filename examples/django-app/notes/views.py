from django.http import JsonResponse

from .models import Note


def index(request):
    return JsonResponse({"notes": Note.objects.count()})
