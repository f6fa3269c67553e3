"""Schedule the sweep that delivers events whose task was lost (every minute) and the snapshot.expiring
warnings (every 15 minutes).

Idempotent: each schedule is found by its name and updated, never doubled.
Each first runs one interval after it is created.
"""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

DELIVERY_NAME = "webhooks: deliver events whose delivery is due"
EXPIRING_NAME = "webhooks: warn of expiring snapshots"
# Named on the queue's pages after what they do; the every-minute sweep, like
# the stale-run sweep (sandboxes/migrations/0007), is not kept among the
# successful tasks, which it alone would fill (a failed one is kept).
SCHEDULES = {
    DELIVERY_NAME: {"func": "webhooks.tasks.deliver_due_events", "schedule_type": "I", "minutes": 1,
                    "repeats": -1,
                    "kwargs": repr({"q_options": {"task_name": "deliver due webhooks", "save": False}})},
    EXPIRING_NAME: {"func": "webhooks.tasks.record_expiring_snapshots", "schedule_type": "I", "minutes": 15,
                    "repeats": -1, "kwargs": repr({"q_options": {"task_name": "warn of expiring snapshots"}})},
}


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        next_run = timezone.now() + timedelta(minutes=fields["minutes"])
        Schedule.objects.update_or_create(name=name, defaults=fields, create_defaults={**fields, "next_run": next_run})


def remove_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_endpoints_events_attempts"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
