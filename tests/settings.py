"""Settings for the test run: production settings plus the few overrides tests need.

Servers: DATABASE_URL / REDIS_URL when set; else the machine's PostgreSQL on
127.0.0.1:5432 and Redis on 127.0.0.1:6379; else embedded servers started
here (they stop when the test run ends).
"""

import os
from urllib.parse import urlsplit, urlunsplit

from project import devstack

os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "k" * 50)
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SECURE_COOKIES", "0")
os.environ.setdefault("EMAIL_URL", "locmem://")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("SITE_URL", "http://testserver")

if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
    # Set in the pytest controller before xdist starts its workers, which inherit the environment.
    _found, _embedded_servers = devstack.start_missing_servers(devstack.DATA_DIR / "test", probe_local=True)
    os.environ.update(_found)


def _redis_db_for_this_worker(url: str) -> str:
    """Each xdist worker gets its own Redis database, so cache.clear() in one never touches another
    (TEST_REDIS_DB_BASE moves the range, for two test runs at once on one Redis)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    db = int(os.environ.get("TEST_REDIS_DB_BASE", "2")) + int(worker.removeprefix("gw") or 0)
    parts = urlsplit(url)
    if parts.scheme == "unix":  # urlunsplit would drop the empty authority: unix:/path
        return f"unix://{parts.path}?db={db}"
    return urlunsplit(parts._replace(path=f"/{db}"))


os.environ["REDIS_URL"] = _redis_db_for_this_worker(os.environ["REDIS_URL"])

from project.settings import *  # noqa: E402, F403

# Argon2 is deliberately slow; tests create many users. Production keeps Argon2 (checked in tests).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests do not run collectstatic; production uses the hashed manifest storage.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
# Nothing is collected in tests; the live server serves static files through the finders.
STATIC_ROOT = None
OUTGOING_ALLOW_LOOPBACK = True  # webhook tests deliver to receivers on 127.0.0.1 (the SSRF tests turn it off)
