"""Bring schedules made by an earlier 0004 to the safe footing.

An earlier version of 0004 created the hourly cleanup and the weekly reconcile
due at once, and the reconcile task fixed by default. On a database where a
schedule has not run yet (no task was ever made from it), its first run is
moved to one interval from now; the reconcile schedule keeps no arguments, so
whether it fixes is decided by RECONCILE_AUTOFIX when it runs. A schedule that
has run keeps its time.
"""

import importlib

from django.db import migrations
from django.db.models import Q
from django.utils import timezone

schedules_0004 = importlib.import_module("sandboxes.migrations.0004_schedule_cleanup_and_reconcile")


def wait_one_interval_and_drop_stored_arguments(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    now = timezone.now()
    for name, fields in schedules_0004.SCHEDULES.items():
        never_ran = Schedule.objects.filter(name=name, task__isnull=True)
        never_ran.filter(Q(next_run__isnull=True) | Q(next_run__lte=now)).update(
            next_run=schedules_0004.first_run(fields)
        )
    Schedule.objects.filter(name=schedules_0004.RECONCILE_NAME).update(args=None, kwargs=None)


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0004_schedule_cleanup_and_reconcile"),
    ]

    operations = [migrations.RunPython(wait_one_interval_and_drop_stored_arguments, migrations.RunPython.noop)]
