"""A snapshot keeps its file listing; requests sent with an Idempotency-Key keep their answer."""

import django.core.serializers.json
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_audit_event_indexes'),
        ('sandboxes', '0008_record_repository_ids'),
    ]

    operations = [
        migrations.AddField(
            model_name='snapshot',
            name='filetree',
            field=models.JSONField(blank=True, help_text="The snapshot's files and folders", null=True),
        ),
        migrations.CreateModel(
            name='IdempotencyRecord',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=255)),
                ('fingerprint', models.CharField(help_text='Method, path and SHA-256 of the body', max_length=200)),
                ('state', models.CharField(choices=[('in_flight', 'In flight'), ('done', 'Done')], default='in_flight', max_length=10)),
                ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('body', models.JSONField(blank=True, encoder=django.core.serializers.json.DjangoJSONEncoder, null=True)),
                ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, help_text='When the key was taken')),
                ('api_key', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.apikey')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('api_key', 'key'), name='one_idempotency_record_per_key')],
            },
        ),
    ]
