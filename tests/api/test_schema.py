"""The OpenAPI schema, its locally served reference page, and schemathesis against the running app."""

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from scrm.wsgi import application
from tests.factories import GuideFactory, MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


def test_the_schema_is_public_and_lists_every_endpoint(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/v1/members/",
        "/api/v1/members/lookup/",
        "/api/v1/members/{id}/",
        "/api/v1/members/{id}/consent/",
        "/api/v1/orders/",
        "/api/v1/orders/batch/",
        "/api/v1/orders/{channel}/{order_no}/refund/",
        "/api/v1/orders/{channel}/{order_no}/cancel/",
        "/api/v1/guide-bindings/",
    } <= set(paths)
    assert "ApiKey" in response.json()["components"]["securitySchemes"]


def test_the_reference_page_is_served_locally_without_a_cdn(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")  # shipped, collected


# Loaded once at collection, through the WSGI app (the schema view touches no database).
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)


@pytest.fixture
def in_process_requests(db):
    """As Django's test client does: the WSGI handler would otherwise close the connection holding the
    test's transaction at the end of each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(make_client):
    """A key with every scope, and a little data for the generated calls to find."""
    store = StoreFactory(code="S0001")
    GuideFactory(store=store, employee_no="E00001")
    MemberFactory(home_store=store, mobile="+8613800138000")
    _client, http = make_client()
    return http._credentials["HTTP_AUTHORIZATION"]


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_schemathesis_no_server_errors_and_no_schema_violations(case, api_key, in_process_requests):
    case.call_and_validate(
        headers={"Authorization": api_key},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
