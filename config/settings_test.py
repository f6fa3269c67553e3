"""Settings for the test suite: the real settings with test secrets filled in.

DATABASE_URL and REDIS_URL are honoured, so the same suite runs on SQLite and
on PostgreSQL.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ.setdefault("API_KEY_PEPPER", "test-api-key-pepper")
os.environ.setdefault("ALLOWED_HOSTS", "testserver localhost 127.0.0.1")
os.environ.setdefault("SECURE_COOKIES", "false")
# The test client and the test servers speak plain HTTP.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# WhiteNoise finds static files as they are asked for, instead of indexing
# every one of them each time a test client builds its middleware (~80 ms).
WHITENOISE_AUTOREFRESH = True
