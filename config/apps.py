"""The admin, installed with the back office's own site (sandboxes/admin_site.py, whose data its front page shows)
as its default site."""

# The module, not the class: an AppConfig class in this module's namespace would become `config`'s own.
from django.contrib.admin import apps as admin_apps


class BackOfficeAdminConfig(admin_apps.AdminConfig):
    # Not the app config of `config` itself: only INSTALLED_APPS names this one, in place of django.contrib.admin.
    default = False
    default_site = "sandboxes.admin_site.BackOfficeSite"
