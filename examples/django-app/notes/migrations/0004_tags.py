from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0003_longer_titles")]

    operations = [
        migrations.CreateModel(
            name="Tag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=40, unique=True)),
            ],
        ),
        migrations.AddField(model_name="note", name="tags", field=models.ManyToManyField(blank=True, to="notes.tag")),
    ]
