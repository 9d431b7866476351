"""The dashboard and a campaign's results in a real browser at desktop width, on demo data."""

import pytest
from django.urls import reverse

from campaigns.models import Campaign
from dashboard.demo import CAMPAIGN_NAME, seed_campaign_results
from members.demo_data import DEMO_PASSWORD, seed_demo
from tests.browser import browser_page, horizontal_overflow, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP_WIDE = {"width": 1440, "height": 900}


def test_dashboard_and_campaign_results_at_desktop_width(live_server):
    # given the demo brand with its finished win-back campaign and the facts computed
    seed_demo(members=1500)
    seeded = seed_campaign_results()
    assert seeded["created"] and seeded["holdout"] > 0
    campaign = Campaign.objects.get(name=CAMPAIGN_NAME)

    with browser_page() as page:
        page.set_viewport_size(DESKTOP_WIDE)
        # when HQ signs in, the dashboard is their home page
        log_in(page, live_server.url, "hq_admin", DEMO_PASSWORD)
        page.wait_for_selector("#dashboard")
        assert page.url.endswith(reverse("admin:index"))
        # then the cards, the charts (drawn by the locally served library) and the tables are there
        assert page.locator(".dash-card").count() == 12
        page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length === 5")
        assert page.locator("#chart-sales").bounding_box()["height"] > 150
        assert page.locator(".dash-table").count() >= 4
        assert horizontal_overflow(page) == 0
        screenshot(page, "dashboard-desktop")

        # and drilling into a region shows its stores
        page.locator(".dash-table tbody tr td a").first.click()
        page.wait_for_selector(".dash-crumbs a")
        assert "region=" in page.url
        screenshot(page, "dashboard-region-desktop")

        # and the campaign's results show the uplift over the holdout, significant on the demo data
        page.goto(live_server.url + reverse("dashboard:campaign", args=[campaign.pk]))
        page.wait_for_selector("#uplift")
        assert page.locator("#uplift .dash-good").count() >= 1
        assert horizontal_overflow(page) == 0
        screenshot(page, "campaign-results-desktop")
