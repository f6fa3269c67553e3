"""Schedule the sweep of live sandboxes (every minute): idle ones are stopped with a snapshot, lost starts and
stops are ended, overdue background commands are finished.

Idempotent, as 0004: the schedule is found by its name and updated, never
doubled; named on the queue's pages after what it does (0007).
"""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

SWEEP_NAME = "sandboxes: stop idle live sandboxes"
SWEEP = {"func": "sandboxes.tasks.sweep_live_sandboxes", "schedule_type": "I", "minutes": 1, "repeats": -1,
         # Every minute: a successful run is not kept (as the stale-run sweep, 0007).
         "kwargs": repr({"q_options": {"task_name": "stop idle live sandboxes", "save": False}})}


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    if not Schedule.objects.filter(name=SWEEP_NAME).update(**SWEEP):
        Schedule.objects.create(name=SWEEP_NAME, next_run=timezone.now() + timedelta(minutes=1), **SWEEP)


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SWEEP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0011_live_sandboxes_and_commands"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
