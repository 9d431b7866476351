import pytest
from django.utils import translation
from rest_framework.test import APIClient

from api import services
from api.models import Scope
from members.consent import publish_privacy_notice
from scrm.audit import Actor

ALL_SCOPES = [s.value for s in Scope]


@pytest.fixture(autouse=True)
def _chinese_by_default():
    with translation.override("zh-hans"):
        yield


@pytest.fixture
def make_client(db):
    """``make_client(scopes=..., stores=..., rate_limit=...)`` → (ApiClient, an APIClient sending its key)."""

    def make(*, scopes=None, stores=(), rate_limit=10_000, name=None):
        make.count += 1
        client, key = services.create_api_client(
            name=name or f"client-{make.count}",
            scopes=ALL_SCOPES if scopes is None else scopes,
            stores=stores,
            rate_limit=rate_limit,
            actor=Actor.system("tests"),
        )
        http = APIClient()
        http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        return client, http

    make.count = 0
    return make


@pytest.fixture
def api(make_client):
    """An APIClient with every scope and no store limits."""
    return make_client()[1]


@pytest.fixture
def notice(db):
    return publish_privacy_notice("2026-01", ["marketing", "service"], actor=Actor.system("tests"))
