import os
import shutil

import pytest

from scrm.audit import Actor
from scrm.roles import Role

from .factories import GuideFactory, ManagerFactory, StoreFactory, UserFactory

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = "/usr/bin/chromium"


def require_browser() -> str:
    """Path of Debian's chromium; in CI a missing browser fails the test instead of skipping it."""
    if shutil.which(CHROMIUM) is None:
        if IN_CI:
            pytest.fail("chromium is required in CI (apt-get install chromium fonts-noto-cjk)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    return CHROMIUM


@pytest.fixture(autouse=True, scope="session")
def _fresh_cache_namespace():
    """Rate-limit and lockout counters live in Redis keyed by user id; ids restart with each test
    database, so every test session counts in a namespace of its own."""
    import uuid

    from django.conf import settings

    settings.CACHES["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hq_admin(db):
    return UserFactory(username="hq_admin_t", role=Role.HQ_ADMIN)


@pytest.fixture
def hq_operator(db):
    return UserFactory(username="hq_operator_t", role=Role.HQ_OPERATOR)


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor_t", role=Role.AUDITOR)


@pytest.fixture
def store(db):
    return StoreFactory()


@pytest.fixture
def guide(store):
    return GuideFactory(store=store)


@pytest.fixture
def manager(store):
    return ManagerFactory(store=store)


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("tests")


@pytest.fixture
def actor_for():
    return Actor.for_user


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Transactional tests are reset with TRUNCATE, which the audit trail refuses in real databases.

    Only the TRUNCATE guard is lifted, only in the test database; row-level UPDATE/DELETE guards stay.
    tests/scrm/test_audit.py re-enables it inside a transaction to prove it works.
    """
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE scrm_auditevent DISABLE TRIGGER scrm_auditevent_no_truncate")
