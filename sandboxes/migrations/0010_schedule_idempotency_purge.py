"""Schedule the removal of Idempotency-Key records past their 24 hours (hourly).

Idempotent, as 0004: the schedule is found by its name and updated, never
doubled. Its first run is one interval after it is created; its task is
named "remove expired idempotency keys" on the queue's pages.
"""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

PURGE_NAME = "sandboxes: remove expired idempotency keys"
# Named on the queue's pages after what it does, as the other schedules (0007).
PURGE = {"func": "sandboxes.tasks.purge_idempotency_records", "schedule_type": "H", "repeats": -1,
         "kwargs": repr({"q_options": {"task_name": "remove expired idempotency keys"}})}


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    if not Schedule.objects.filter(name=PURGE_NAME).update(**PURGE):
        Schedule.objects.create(name=PURGE_NAME, next_run=timezone.now() + timedelta(hours=1), **PURGE)


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=PURGE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0009_snapshot_filetree_and_idempotency_records"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
