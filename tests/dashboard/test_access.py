"""Who sees the dashboard: HQ roles only; store staff are turned away; the admin index stays reachable."""

import pytest
from django.urls import reverse

from dashboard.models import KpiFact
from scrm.models import AuditEvent
from tests.campaigns.factories import CampaignFactory

pytestmark = pytest.mark.django_db

PAGES = ["admin:index", "dashboard:index", "dashboard:campaigns"]


@pytest.mark.parametrize("role", ["hq_admin", "hq_operator", "auditor"])
def test_hq_roles_see_the_dashboard_with_the_admin_index_below(english, request, role):
    user = request.getfixturevalue(role)
    english.force_login(user)
    response = english.get(reverse("admin:index"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="dashboard"' in html
    assert "dashboard/vendor/chart.umd.min.js" in html  # served from static/, no CDN
    assert "cdn" not in html.lower()
    # the model index is still there: every app the role may see, with its links
    assert reverse("admin:members_member_changelist") in html
    campaign = CampaignFactory()
    for name in PAGES:
        assert english.get(reverse(name)).status_code == 200, name
    assert english.get(reverse("dashboard:campaign", args=[campaign.pk])).status_code == 200


def test_store_staff_are_turned_away(client, guide, manager):
    campaign = CampaignFactory()
    for staff in (guide, manager):
        client.force_login(staff.user)
        for url in [reverse(n) for n in PAGES] + [
            reverse("dashboard:campaign", args=[campaign.pk]),
            reverse("dashboard:campaign_export", args=[campaign.pk]),
        ]:
            response = client.get(url)
            assert response.status_code in (302, 403), url
            if response.status_code == 302:
                assert response.url == reverse("home")


def test_store_staff_get_403_from_the_views_themselves(rf, guide):
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.core.exceptions import PermissionDenied

    from dashboard import views

    request = rf.get("/admin/dashboard/")
    guide.user.is_staff = True  # even with the admin flag set by mistake (the middleware aside)
    request.user = guide.user
    request.session = {}
    request._messages = FallbackStorage(request)
    with pytest.raises(PermissionDenied):
        views.dashboard(request)


def test_anonymous_users_are_sent_to_the_login(client):
    for name in PAGES:
        response = client.get(reverse(name))
        assert response.status_code == 302 and "login" in response.url


def test_recompute_is_for_administrators_and_operators(client, hq_operator, auditor):
    client.force_login(auditor)
    assert client.post(reverse("dashboard:refresh")).status_code == 403
    assert not KpiFact.objects.exists()
    client.force_login(hq_operator)
    response = client.post(reverse("dashboard:refresh"), {"next": reverse("admin:index")})
    assert response.status_code == 302
    assert KpiFact.objects.exists()
    assert AuditEvent.objects.filter(action="dashboard.refreshed").count() == 1
    assert client.get(reverse("dashboard:refresh")).status_code == 405
    elsewhere = client.post(reverse("dashboard:refresh"), {"next": "https://evil.example/"})
    assert elsewhere.url == reverse("admin:index")


def test_bad_query_parameters_get_a_message_and_the_brand(english, hq_operator):
    english.force_login(hq_operator)
    response = english.get(reverse("admin:index") + "?month=1999-01&region=abc")
    assert response.status_code == 200
    html = response.content.decode()
    assert "There are no figures for the month" in html
    assert "does not exist; showing the whole brand" in html
