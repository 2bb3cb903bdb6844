"""Settings for the test suite: the real settings with throwaway keys when none are given."""

import os

os.environ.setdefault("WEFT_SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("WEFT_FIELD_ENCRYPTION_KEY", "test-only-field-key-not-for-production-0123456789")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from .settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not shared-cache memory: the server run loop's thread writes while the test reads,
    # and shared-cache SQLite locks whole tables across connections.
    # One file per pytest process, so that concurrent test runs never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-weft-{os.getpid()}.sqlite3")}  # noqa: F405

# The embedded reaper would wake up in the background of unrelated tests (and after the test
# database is gone); tests call runs_reap() themselves where they mean it.
WEFT = {**WEFT, "ENGINE": {**WEFT.get("ENGINE", {}), "EMBEDDED_REAPER": False}}  # noqa: F405
