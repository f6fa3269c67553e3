"""Record the git host's id of each repository: a setup run's created one, and the Snapshot's."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sandboxes', '0007_schedule_task_names_and_quiet_sweep'),
    ]

    operations = [
        migrations.AddField(
            model_name='setuprun',
            name='created_repository_id',
            field=models.BigIntegerField(blank=True, help_text="The git host's id of the repository this run created", null=True),
        ),
        migrations.AddField(
            model_name='snapshot',
            name='github_repo_id',
            field=models.BigIntegerField(blank=True, help_text="The git host's id of the repository (GitHub's, kept across renames)", null=True),
        ),
    ]
