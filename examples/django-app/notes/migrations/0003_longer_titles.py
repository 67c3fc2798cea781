"""Titles up to 200 characters: on SQLite Django rebuilds the table (new table, copy, rename)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_fill_empty_bodies")]

    operations = [
        migrations.AlterField(model_name="note", name="title", field=models.CharField(max_length=200)),
    ]
