"""Django's SQLite backend, with SQLite's real limit on variables per statement.

Django 5.2 assumes the limit of SQLite before 3.32 (999 variables) and splits
a bulk INSERT of a few hundred rows into many statements; SQLite since 3.32
allows 32766, and Django 6.0 reads the limit from the connection
(https://code.djangoproject.com/ticket/34547). This backend does the same, so
a batch of the cleanup is one INSERT of audit events on SQLite too.
"""

import sqlite3

from django.db.backends.sqlite3 import base, features
from django.utils.functional import cached_property


class DatabaseFeatures(features.DatabaseFeatures):
    @cached_property
    def max_query_params(self):
        self.connection.ensure_connection()
        return self.connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
