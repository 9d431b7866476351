"""Test profile: fast hashing, eager nothing (tests that need Celery use a real worker)."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CELERY_BROKER_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
WHITENOISE_AUTOREFRESH = True  # serve from the finders; tests never run collectstatic

# django-axes refuses an authenticate() call without a request, and the test client's login() makes
# exactly that call. The first backend is axes' own with a stand-in request for that one case, so the
# lockout stays on in tests (a locked-out user cannot client.login either).
AUTHENTICATION_BACKENDS = [
    "tests.scrm.client_login.ClientLoginAxesBackend",
    "guides.backends.StaffLoginBackend",  # employee number or mobile + password
    "django.contrib.auth.backends.ModelBackend",
]
