import pytest

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_refusal_shows_a_translated_page_without_details(client):
    client.force_login(UserFactory())  # an account with no role
    response = client.get("/m/")
    assert response.status_code == 403
    body = response.content.decode()
    assert "你无法打开此页面" in body
    assert "Traceback" not in body


def test_a_missing_page_is_a_translated_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "这里什么也没有" in response.content.decode()
