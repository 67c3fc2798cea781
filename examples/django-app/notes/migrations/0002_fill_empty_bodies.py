"""Data migration: a note without a body gets its title as body."""

from django.db import migrations


def fill(apps, schema_editor):
    Note = apps.get_model("notes", "Note")
    for note in Note.objects.filter(body=""):
        note.body = note.title
        note.save(update_fields=["body"])


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
