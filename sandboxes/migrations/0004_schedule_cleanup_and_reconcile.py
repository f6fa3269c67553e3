"""Schedule the expired-sandbox cleanup (hourly) and the reconcile (weekly).

Idempotent: each schedule is found by its name and updated, never doubled;
running the migration again (or on a database that has the schedules) changes
nothing but their settings.
"""

from django.db import migrations

CLEANUP_NAME = "sandboxes: delete expired sandboxes"
RECONCILE_NAME = "sandboxes: reconcile database, git host and backend"
SCHEDULES = {
    CLEANUP_NAME: {"func": "sandboxes.tasks.cleanup_expired_sandboxes", "schedule_type": "H", "repeats": -1},
    RECONCILE_NAME: {"func": "sandboxes.tasks.reconcile_sandboxes", "schedule_type": "W", "repeats": -1},
}


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        Schedule.objects.update_or_create(name=name, defaults=fields)


def remove_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0003_revoke_permission"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
