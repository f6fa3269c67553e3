"""Create the database cache's table (CACHES in config/settings.py), so `migrate` is enough.

Without REDIS_URL the API's rate limits count requests in a cache table of the
database; `createcachetable` makes it (and does nothing when it exists, or when
the cache is Redis). https://docs.djangoproject.com/en/5.2/topics/cache/#database-caching
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = []

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=False)]
