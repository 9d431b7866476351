"""The campaign admin: create a draft, preview, approve, launch, watch the run; who may press what."""

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from campaigns import dispatch
from campaigns.models import Campaign, CampaignRun, ContactPolicy, RunStore, Task, TaskChannel
from members.models import Member
from scrm.models import AuditEvent

from .factories import CampaignFactory, ScriptFactory, build_brand, stores_segment

pytestmark = pytest.mark.django_db


def test_hq_admin_creates_previews_approves_and_launches(
    client, hq_admin, django_capture_on_commit_callbacks
):
    stores, _ = build_brand(stores=2, members_per_store=10, guides_per_store=2)
    Member.objects.filter(pk__in=Member.objects.order_by("pk").values("pk")[:3]).update(consent_wecom=False)
    segment = stores_segment(stores)
    script = ScriptFactory(body="{name}您好，{store}的{guide}为您服务。")
    client.force_login(hq_admin)

    response = client.post(
        reverse("admin:campaigns_campaign_add"),
        {
            "name": "春季焕新",
            "segment": segment.pk,
            "channel": TaskChannel.WECOM,
            "script": script.pk,
            "schedule": "once",
            "due_days": 3,
            "assignment": "exclusive_first",
            "priority": 5,
            "holdout_percent": "0",
            "attribution_days": 7,
            "runs-TOTAL_FORMS": 0,
            "runs-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    campaign = Campaign.objects.get(name="春季焕新")
    assert campaign.created_by == hq_admin
    assert AuditEvent.objects.filter(action="campaign.created", target_id=str(campaign.pk)).exists()

    page = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    assert 'id="campaign-approve"' in page and 'id="campaign-preview"' in page

    with translation.override("en"):
        preview = client.get(reverse("admin:campaigns_campaign_preview", args=[campaign.pk]))
    assert preview.status_code == 200
    assert preview.context["preview"].total == 20
    assert preview.context["preview"].no_consent == 3
    assert preview.context["preview"].tasks == 17
    assert sum(g.total for g in preview.context["preview"].guides) == 17
    assert "您好" in preview.context["preview"].sample_script

    client.post(reverse("admin:campaigns_campaign_action", args=[campaign.pk, "approve"]))
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("admin:campaigns_campaign_action", args=[campaign.pk, "launch"]))
    run = CampaignRun.objects.get(campaign=campaign)
    assert response.url == reverse("admin:campaigns_campaignrun_change", args=[run.pk])

    dispatch.evaluate_run(run.pk)
    for store in stores:
        dispatch.create_store_tasks(run.pk, store.pk)
    run_page = client.get(reverse("admin:campaigns_campaignrun_change", args=[run.pk]))
    assert run_page.status_code == 200
    progress = client.get(reverse("admin:campaigns_campaignrun_progress", args=[run.pk])).json()
    assert (progress["created"], progress["expected"], progress["stores_done"]) == (17, 17, 2)
    assert Task.objects.filter(run=run).count() == 17
    assert client.get(reverse("admin:campaigns_task_changelist")).status_code == 200
    assert client.get(reverse("admin:campaigns_campaignrun_changelist")).status_code == 200
    assert client.get(reverse("admin:campaigns_campaign_changelist")).status_code == 200


def test_operator_sees_no_approve_button_and_cannot_approve(client, hq_operator):
    campaign = CampaignFactory()
    client.force_login(hq_operator)

    page = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    assert 'id="campaign-approve"' not in page
    assert 'id="campaign-cancel"' in page

    client.post(reverse("admin:campaigns_campaign_action", args=[campaign.pk, "approve"]))
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


def test_auditor_sees_campaigns_but_no_buttons_and_cannot_cancel(client, auditor):
    campaign = CampaignFactory()
    client.force_login(auditor)
    page = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    assert 'id="campaign-cancel"' not in page
    client.post(reverse("admin:campaigns_campaign_action", args=[campaign.pk, "cancel"]))
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


def test_approved_campaign_is_read_only(client, hq_admin):
    campaign = CampaignFactory(status=Campaign.Status.APPROVED)
    client.force_login(hq_admin)
    client.post(
        reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
        {"name": "changed", "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0},
    )
    assert Campaign.objects.get(pk=campaign.pk).name == campaign.name


def test_daily_campaign_needs_a_time(client, hq_admin):
    campaign = CampaignFactory()
    client.force_login(hq_admin)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    with translation.override("en"):
        response = client.post(
            reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
            {
                "name": campaign.name,
                "segment": campaign.segment_id,
                "channel": "wecom",
                "script": campaign.script_id,
                "schedule": "daily",
                "due_days": 3,
                "assignment": "exclusive_first",
                "priority": 5,
                "holdout_percent": "0",
                "attribution_days": 7,
                "runs-TOTAL_FORMS": 0,
                "runs-INITIAL_FORMS": 0,
            },
        )
    assert response.status_code == 200
    assert "needs the time of day" in response.content.decode()
    assert Campaign.objects.get(pk=campaign.pk).schedule == "once"


def test_contact_policy_has_one_row(client, hq_admin):
    client.force_login(hq_admin)
    assert client.get(reverse("admin:campaigns_contactpolicy_add")).status_code == 200
    policy = ContactPolicy.objects.create()
    # once the row exists, "add" edits it instead of adding a second
    response = client.get(reverse("admin:campaigns_contactpolicy_add"))
    assert response.status_code == 200 and response.context["original"] == policy
    assert RunStore.objects.count() == 0


@pytest.mark.parametrize("model", ["campaign", "campaignrun", "contactpolicy", "task"])
def test_every_campaign_admin_page_opens(client, hq_admin, model):
    from .factories import TaskFactory

    task = TaskFactory()
    ContactPolicy.objects.create()
    obj = {
        "campaign": task.run.campaign,
        "campaignrun": task.run,
        "contactpolicy": ContactPolicy.objects.get(),
        "task": task,
    }[model]
    client.force_login(hq_admin)
    assert client.get(reverse(f"admin:campaigns_{model}_changelist")).status_code == 200
    assert client.get(reverse(f"admin:campaigns_{model}_change", args=[obj.pk])).status_code == 200
