"""HQ creates, previews, approves, launches and watches a campaign in the admin, in a real browser,
with a real Celery worker creating the tasks."""

import pytest
from django.urls import reverse

from campaigns.models import Campaign, CampaignRun, Task
from members.models import Member
from scrm.roles import Role
from tests.browser import browser_page, log_in, screenshot
from tests.campaigns.factories import ScriptFactory, build_brand, stores_segment
from tests.factories import UserFactory
from tests.worker import celery_worker

PASSWORD = "pw-for-tests"

pytestmark = [pytest.mark.browser, pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def test_hq_creates_previews_launches_and_watches_a_campaign(live_server):
    # given an HQ administrator, 6 stores of 40 members (2 guides each), 10 without WeCom consent
    UserFactory(username="hq_campaigns", role=Role.HQ_ADMIN)
    stores, _ = build_brand(stores=6, members_per_store=40, guides_per_store=2, exclusive_every=3)
    Member.objects.filter(pk__in=Member.objects.order_by("pk").values("pk")[:10]).update(consent_wecom=False)
    segment = stores_segment(stores)
    segment.name = "华东老客"
    segment.save()
    ScriptFactory(title="春季回访", body="{name}您好，我是{store}的{guide}，春季新品已到店。")

    with celery_worker(), browser_page() as page:
        log_in(page, live_server.url, "hq_campaigns", PASSWORD)

        # when they draft a campaign
        page.goto(live_server.url + reverse("admin:campaigns_campaign_add"))
        page.locator("input[name=name]").fill("春季新品回访")
        page.locator("select[name=segment]").select_option(label="华东老客")
        page.locator("select[name=channel]").select_option("wecom")
        page.locator("select[name=script]").select_option(label="春季回访")
        page.locator("input[name=holdout_percent]").fill("10")
        screenshot(page, "campaign-edit-desktop")
        page.locator("input[name=_continue]").click()
        page.wait_for_selector("#campaign-lifecycle")
        assert page.locator("#campaign-status").get_attribute("data-status") == "draft"

        # and preview it: counts, exclusions by reason and the script filled in for a real member
        page.locator("#campaign-preview").click()
        page.wait_for_selector("#preview-summary")
        assert page.locator("#count-total strong").inner_text() == "240"
        assert page.locator("#count-no-consent").inner_text() == "10"
        holdout = int(page.locator("#count-holdout").inner_text())
        assert 5 <= holdout <= 45
        assert int(page.locator("#count-tasks strong").inner_text()) == 230 - holdout
        assert "您好，我是" in page.locator("#sample-script").inner_text()
        assert page.locator("#preview-stores tbody tr").count() == 6
        assert page.locator("#preview-guides tbody tr").count() == 12
        screenshot(page, "campaign-preview-desktop")

        # then approve and launch it from the preview page
        page.locator("#campaign-approve").click()
        page.wait_for_selector("#campaign-launch")
        assert page.locator("#campaign-status").get_attribute("data-status") == "approved"
        page.locator("#campaign-launch").click()

        # and watch the run: the page refreshes itself until every store is done
        page.wait_for_selector("#run-progress")
        page.wait_for_selector("#run-progress[data-state=done]", timeout=60_000)
        assert page.locator("#run-stores tbody tr").count() == 6
        created = int(page.locator("#run-created").inner_text())
        screenshot(page, "campaign-run-desktop")

    run = CampaignRun.objects.get(campaign__name="春季新品回访")
    assert run.state == "done"
    assert Task.objects.filter(run=run).count() == created == run.counters["eligible"]
    assert 230 - 45 <= created <= 230 - 5
    assert Campaign.objects.get(pk=run.campaign_id).status == "finished"
