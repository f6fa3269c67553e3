"""Links into the admin that survive any primary key.

The admin escapes a key in its URLs with its own scheme (`_` starts an escape),
so a run id such as `run_26…` must be quoted the way the admin unquotes it, or
the link opens `run&…`, which does not exist.
"""

from django.contrib.admin.utils import quote
from django.urls import reverse


def admin_change_url(model, pk) -> str:
    """The admin change page of the object of `model` with primary key `pk`."""
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(pk)])
