"""Name the scheduled tasks after what they do, and keep the every-minute sweep off the queue's pages.

django-q2 names a task after its `task_name`, or else after random words
("june-nineteen-…"); a schedule hands its task the options in
`kwargs["q_options"]` (django_q/scheduler.py). The sweep runs every minute:
with `save: False` a sweep that succeeded is not kept among the successful
tasks (django-q2 keeps `save_limit`, 250, of those, which the sweep alone
would fill in four hours and push the setup tasks out). What a sweep fails
is in the audit trail (a "Setup run failed" event per run, by the worker) and
in the runs' list; a sweep that itself fails is kept among the failed tasks,
which django-q2 always keeps.

A schedule whose keyword arguments an operator changed (e.g. the reconcile's
`fix=False`) is left as it is.
"""

from django.db import migrations
from django.db.models import Q

SWEEP_NAME = "sandboxes: fail stale setup runs"
CLEANUP_NAME = "sandboxes: delete expired sandboxes"
RECONCILE_NAME = "sandboxes: reconcile database, git host and backend"
TASK_OPTIONS = {
    SWEEP_NAME: {"task_name": "sweep stale runs", "save": False},
    CLEANUP_NAME: {"task_name": "delete expired sandboxes"},
    RECONCILE_NAME: {"task_name": "reconcile database, git host and backend"},
}


def name_tasks(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, options in TASK_OPTIONS.items():
        unchanged = Q(kwargs__isnull=True) | Q(kwargs__in=["", "{}"])
        Schedule.objects.filter(unchanged, name=name).update(kwargs=repr({"q_options": options}))


def unname_tasks(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, options in TASK_OPTIONS.items():
        Schedule.objects.filter(name=name, kwargs=repr({"q_options": options})).update(kwargs=None)


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0006_snapshot_called_sandbox"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(name_tasks, unname_tasks)]
