"""Django's own admin users, with their changes recorded.

The admin of django.contrib.auth's User, unchanged but for the audit trail:
adding, changing and deleting an admin user records its staff, superuser and
active flags, before → after (accounts/access_changes.py).
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User

from config.admin_audit import AuditedAdminMixin


class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    pass


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
