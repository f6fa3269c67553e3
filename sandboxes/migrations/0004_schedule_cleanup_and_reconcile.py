"""Schedule the expired-sandbox cleanup (hourly) and the reconcile (weekly).

Idempotent: each schedule is found by its name and updated, never doubled;
running the migration again (or on a database that has the schedules) changes
nothing but their settings.

A new schedule first runs one interval after it is created, not as soon as a
worker starts: a fresh deployment's first `qcluster` does not start a cleanup
and a reconcile at once. (Deployments that ran an earlier version of this
migration are moved to the same footing by 0005.)
"""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

CLEANUP_NAME = "sandboxes: delete expired sandboxes"
RECONCILE_NAME = "sandboxes: reconcile database, git host and backend"
SCHEDULES = {
    CLEANUP_NAME: {"func": "sandboxes.tasks.cleanup_expired_sandboxes", "schedule_type": "H", "repeats": -1},
    RECONCILE_NAME: {"func": "sandboxes.tasks.reconcile_sandboxes", "schedule_type": "W", "repeats": -1},
}
# django-q2's interval of each schedule type used above (Schedule.calculate_next_run).
INTERVALS = {"H": timedelta(hours=1), "W": timedelta(weeks=1)}


def first_run(fields: dict):
    return timezone.now() + INTERVALS[fields["schedule_type"]]


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name, defaults=fields, create_defaults={**fields, "next_run": first_run(fields)}
        )


def remove_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0003_revoke_permission"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
