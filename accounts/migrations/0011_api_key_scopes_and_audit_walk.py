"""API keys get scopes; keys that exist already get every scope, so no client breaks.

The audit trail's indexes follow GET /api/audit's walk over (created_at, id),
newest first: per account, and over everything.
"""

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import accounts.models

# Written out, not imported: this migration must mean the same whatever accounts/scopes.py says later.
EVERY_SCOPE_AT_THE_TIME = ["sandboxes:read", "sandboxes:setup", "sandboxes:exec", "sandboxes:delete", "audit:read"]


def existing_keys_keep_every_scope(apps, schema_editor):
    apps.get_model("accounts", "ApiKey").objects.update(scopes=EVERY_SCOPE_AT_THE_TIME)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0010_live_sandbox_audit_actions'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='auditevent',
            name='audit_account_recent',
        ),
        migrations.AddField(
            model_name='apikey',
            name='scopes',
            field=models.JSONField(blank=True, default=accounts.models.default_scopes, help_text='What the key may do, e.g. ["sandboxes:read", "sandboxes:setup"]'),
        ),
        migrations.RunPython(existing_keys_keep_every_scope, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('setup.requested', 'Setup requested'), ('sandbox.deleted', 'Sandbox deleted'), ('sandbox.revoked', 'Sandbox revoked by staff'), ('sandbox.nothing_to_delete', 'Delete found no sandbox'), ('sandbox.renewed', 'Sandbox renewed'), ('key.created', 'API key created'), ('key.revoked', 'API key revoked'), ('run.completed', 'Setup run completed'), ('run.failed', 'Setup run failed'), ('run.canceled', 'Setup run canceled'), ('cleanup.finished', 'Cleanup finished'), ('reconcile.finished', 'Reconcile finished'), ('reconcile.fixed', 'Reconcile fixed an item'), ('reconcile.fix_failed', 'Reconcile fix failed'), ('org.created', 'Organization created'), ('org.changed', 'Organization changed'), ('org.deleted', 'Organization deleted'), ('membership.added', 'Member added'), ('membership.changed', 'Membership changed'), ('membership.removed', 'Member removed'), ('account.active_changed', 'Account activated or deactivated'), ('user.created', 'Admin user created'), ('user.changed', "Admin user's staff flags changed"), ('user.deleted', 'Admin user deleted'), ('account.deactivated', 'Account deactivated by staff'), ('webhook.disabled', 'Webhook endpoint disabled'), ('sandbox.started', 'Live sandbox started'), ('sandbox.stopped', 'Live sandbox stopped'), ('sandbox.files_uploaded', 'Files uploaded into a live sandbox'), ('command.killed', 'Command killed by staff'), ('key.scopes_changed', "API key's scopes changed")], max_length=32),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now, editable=False),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['account_ref', '-created_at', '-id'], name='audit_account_recent'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['-created_at', '-id'], name='audit_walk'),
        ),
    ]
