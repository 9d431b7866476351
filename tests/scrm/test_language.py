import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db


def test_pages_are_chinese_whatever_the_browser_says(client):
    response = client.get("/login/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    assert response.headers["Content-Language"] == "zh-hans"
    assert "登录" in response.content.decode()


def test_the_switcher_chooses_english_and_back(client):
    response = client.post("/i18n/setlang/", {"language": "en", "next": "/login/"})
    assert response.status_code == 302
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "en"
    english = client.get("/login/").content.decode()
    assert "Sign in" in english and "登录" not in english.split("</header>")[1]
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/login/"})
    assert "登录" in client.get("/login/").content.decode()


def test_the_admin_offers_the_switch_too(client, hq_operator):
    client.force_login(hq_operator)
    body = client.get("/admin/").content.decode()
    assert 'name="language" value="en"' in body
    assert "站点管理" in body or "SCRM 总部管理" in body
