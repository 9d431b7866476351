"""Campaign lifecycle services: approve, launch, pause, resume, cancel; permissions; audit."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from campaigns import services
from campaigns.models import Campaign, CampaignRun, RunStore, Task
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.factories import UserFactory

from .factories import CampaignFactory, TaskFactory, build_brand, stores_segment

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_actor(hq_admin):
    return Actor.for_user(hq_admin)


@pytest.fixture
def operator_actor(hq_operator):
    return Actor.for_user(hq_operator)


def draft(stores=None, **fields):
    if stores is None:
        stores, _ = build_brand(stores=1, members_per_store=3)
    return CampaignFactory(segment=stores_segment(stores), **fields)


def test_approve_and_launch_open_one_run_and_enqueue_its_evaluation_after_commit(
    admin_actor, django_capture_on_commit_callbacks
):
    campaign = draft()
    campaign = services.approve_campaign(campaign, actor=admin_actor)
    assert (campaign.status, campaign.approved_by_id) == ("approved", admin_actor.user.pk)

    with django_capture_on_commit_callbacks() as callbacks:
        run = services.launch_campaign(campaign, actor=admin_actor)

    assert len(callbacks) == 1
    assert run.state == CampaignRun.State.PENDING
    assert run.snapshot["segment"] == campaign.segment.definition
    assert run.snapshot["channel"] == campaign.channel
    assert run.snapshot["script_body"] == campaign.script.body
    assert set(run.snapshot["policy"]) == {"max_tasks", "per_days", "quiet_start", "quiet_end"}
    assert Campaign.objects.get(pk=campaign.pk).status == "running"
    actions = list(
        AuditEvent.objects.filter(target_type="campaigns.campaign").values_list("action", flat=True)
    )
    assert "campaign.approved" in actions and "campaign.launched" in actions


def test_a_second_launch_is_refused_and_changes_nothing(admin_actor):
    campaign = services.approve_campaign(draft(), actor=admin_actor)
    services.launch_campaign(campaign, actor=admin_actor)
    with pytest.raises(ValidationError):
        services.launch_campaign(campaign, actor=admin_actor)
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_operator_may_not_approve_or_launch_but_may_pause_and_cancel(admin_actor, operator_actor):
    campaign = draft()
    with pytest.raises(PermissionDenied):
        services.approve_campaign(campaign, actor=operator_actor)
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"

    campaign = services.approve_campaign(campaign, actor=admin_actor)
    with pytest.raises(PermissionDenied):
        services.launch_campaign(campaign, actor=operator_actor)
    services.launch_campaign(campaign, actor=admin_actor)

    services.pause_campaign(campaign, actor=operator_actor)
    with pytest.raises(PermissionDenied):
        services.resume_campaign(campaign, actor=operator_actor)
    services.cancel_campaign(campaign, actor=operator_actor)
    assert Campaign.objects.get(pk=campaign.pk).status == "cancelled"


def test_auditor_and_store_staff_may_change_nothing(auditor, guide):
    campaign = draft()
    for user in (auditor, guide.user):
        with pytest.raises(PermissionDenied):
            services.cancel_campaign(campaign, actor=Actor.for_user(user))
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


def test_invalid_campaign_cannot_be_approved(admin_actor):
    campaign = draft(schedule=Campaign.Schedule.DAILY)  # no time of day
    with pytest.raises(ValidationError) as error:
        services.approve_campaign(campaign, actor=admin_actor)
    assert "daily" in " ".join(error.value.messages).lower() or error.value.messages
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


def test_cancel_cancels_open_tasks_and_stops_unfinished_runs(admin_actor):
    campaign = services.approve_campaign(draft(), actor=admin_actor)
    run = services.launch_campaign(campaign, actor=admin_actor)
    open_task = TaskFactory(run=run)
    done_task = TaskFactory(run=run, state="done", outcome="reached", completed_at=run.started_at)
    other = TaskFactory()

    cancelled = services.cancel_campaign(campaign, actor=admin_actor)

    assert cancelled == 1
    assert Task.objects.get(pk=open_task.pk).cancel_reason == "campaign"
    assert Task.objects.get(pk=done_task.pk).state == "done"
    assert Task.objects.get(pk=other.pk).state == "open"
    assert CampaignRun.objects.get(pk=run.pk).state == "cancelled"
    event = AuditEvent.objects.get(action="campaign.cancelled")
    assert event.changes["tasks_cancelled"] == 1


def test_a_store_arriving_after_the_cancel_creates_nothing(admin_actor):
    from campaigns import dispatch

    stores, _ = build_brand(stores=2, members_per_store=4)
    campaign = services.approve_campaign(draft(stores), actor=admin_actor)
    run = services.launch_campaign(campaign, actor=admin_actor)
    dispatch.evaluate_run(run.pk)
    services.cancel_campaign(campaign, actor=admin_actor)

    assert dispatch.create_store_tasks(run.pk, stores[0].pk) == 0
    assert not Task.objects.filter(run=run).exists()


def test_paused_campaign_creates_nothing_until_resumed(admin_actor, django_capture_on_commit_callbacks):
    from campaigns import dispatch

    stores, _ = build_brand(stores=2, members_per_store=4)
    campaign = services.approve_campaign(draft(stores), actor=admin_actor)
    run = services.launch_campaign(campaign, actor=admin_actor)
    dispatch.evaluate_run(run.pk)
    services.pause_campaign(campaign, actor=admin_actor)

    assert dispatch.create_store_tasks(run.pk, stores[0].pk) == 0
    assert RunStore.objects.filter(run=run, state="pending").count() == 2

    with django_capture_on_commit_callbacks() as callbacks:
        services.resume_campaign(campaign, actor=admin_actor)
    assert len(callbacks) == 1
    for store in stores:
        dispatch.create_store_tasks(run.pk, store.pk)
    assert Task.objects.filter(run=run).count() == 8


def test_once_campaign_is_finished_when_its_run_is_done(admin_actor):
    from campaigns import dispatch

    campaign = services.approve_campaign(draft(), actor=admin_actor)
    run = services.launch_campaign(campaign, actor=admin_actor)
    dispatch.evaluate_run(run.pk)
    for store_id in RunStore.objects.filter(run=run).values_list("store_id", flat=True):
        dispatch.create_store_tasks(run.pk, store_id)
    dispatch.finish_run_if_complete(run.pk)
    assert Campaign.objects.get(pk=campaign.pk).status == "finished"
    assert CampaignRun.objects.get(pk=run.pk).counters["created"] == 3


def test_hq_operator_role_has_no_approve_permission():
    user = UserFactory(role=Role.HQ_OPERATOR)
    assert not user.has_perm("campaigns.approve_campaign")
    assert user.has_perm("campaigns.change_campaign")
