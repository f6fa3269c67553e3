"""The audit trail records renewals of a sandbox's expiry (PATCH /api/sandboxes)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_audit_event_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('setup.requested', 'Setup requested'), ('sandbox.deleted', 'Sandbox deleted'), ('sandbox.revoked', 'Sandbox revoked by staff'), ('sandbox.renewed', 'Sandbox renewed'), ('key.created', 'API key created'), ('key.revoked', 'API key revoked'), ('run.completed', 'Setup run completed'), ('run.failed', 'Setup run failed'), ('run.canceled', 'Setup run canceled'), ('cleanup.finished', 'Cleanup finished'), ('reconcile.finished', 'Reconcile finished')], max_length=32),
        ),
    ]
