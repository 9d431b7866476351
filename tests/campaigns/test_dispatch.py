"""Dispatch rules, in-process: holdout, frequency cap, consent, assignment, quiet hours, expiry, repeats."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns import dispatch, services
from campaigns.models import Campaign, CampaignRun, ContactPolicy, RunMember, RunStore, Task, TaskChannel
from members.models import Member
from members.services import record_consent
from scrm.models import AuditEvent
from stores.models import Guide
from tests.factories import GuideFactory, ManagerFactory, MemberFactory, StoreFactory

from .factories import CampaignFactory, TaskFactory, build_brand, stores_segment

pytestmark = pytest.mark.django_db

SHANGHAI = timezone.get_fixed_timezone(8 * 60)


def running_campaign(stores, **fields) -> Campaign:
    return CampaignFactory(segment=stores_segment(stores), status=Campaign.Status.RUNNING, **fields)


def dispatch_inline(campaign: Campaign, *, occurrence: str = "once") -> CampaignRun:
    """Open, evaluate and create every store's tasks in this process (no worker, no after-commit)."""
    from scrm.audit import Actor

    run, _ = dispatch.open_campaign_run(campaign, occurrence=occurrence, actor=Actor.system("tests"))
    dispatch.evaluate_run(run.pk)
    for store_id in RunStore.objects.filter(run=run, state="pending").values_list("store_id", flat=True):
        dispatch.create_store_tasks(run.pk, store_id)
    dispatch.finish_run_if_complete(run.pk)
    run.refresh_from_db()
    return run


# Holdout ----------------------------------------------------------------------------------------------


def test_holdout_is_drawn_by_hash_of_run_and_member_the_same_in_sql_and_python():
    stores, _ = build_brand(stores=2, members_per_store=300)
    campaign = running_campaign(stores, holdout_percent=Decimal("20.0"))

    run = dispatch_inline(campaign)

    rows = list(RunMember.objects.filter(run=run).values_list("member_id", "holdout"))
    assert len(rows) == 600
    assert all(holdout == dispatch.is_holdout(run.pk, member_id, "20.0") for member_id, holdout in rows)
    held = sum(holdout for _, holdout in rows)
    assert 80 <= held <= 160  # about 20 %
    assert run.counters["holdout"] == held
    assert Task.objects.filter(run=run).count() == 600 - held
    assert not Task.objects.filter(run=run, member_id__in=[m for m, h in rows if h]).exists()


def test_holdout_draw_does_not_change_when_evaluated_again():
    stores, _ = build_brand(stores=1, members_per_store=200)
    campaign = running_campaign(stores, holdout_percent=Decimal("50.0"))
    run = dispatch_inline(campaign)
    first = dict(RunMember.objects.filter(run=run).values_list("member_id", "holdout"))

    # a repeated evaluation message, even with the run pushed back to pending, draws the same
    CampaignRun.objects.filter(pk=run.pk).update(state="pending", evaluated_at=None)
    dispatch.evaluate_run(run.pk)

    assert dict(RunMember.objects.filter(run=run).values_list("member_id", "holdout")) == first
    assert dispatch.holdout_bucket(run.pk, 1) == dispatch.holdout_bucket(run.pk, 1)
    assert dispatch.holdout_threshold("12.5") == 125


# Consent and frequency cap ------------------------------------------------------------------------


def test_members_without_consent_on_the_channel_get_no_task():
    stores, _ = build_brand(stores=1, members_per_store=10)
    refusing = list(Member.objects.order_by("pk")[:3])
    Member.objects.filter(pk__in=[m.pk for m in refusing]).update(consent_wecom=False, consent_sms=True)
    campaign = running_campaign(stores)

    run = dispatch_inline(campaign)

    assert run.counters["no_consent"] == 3
    assert run.counters["eligible"] == 7
    assert not Task.objects.filter(member__in=refusing).exists()
    assert Task.objects.filter(run=run).count() == 7


def test_in_store_tasks_need_consent_on_any_channel():
    stores, _ = build_brand(stores=1, members_per_store=4, consent_flag="consent_sms")
    nobody = Member.objects.order_by("pk").first()
    Member.objects.filter(pk=nobody.pk).update(consent_sms=False)

    run = dispatch_inline(running_campaign(stores, channel=TaskChannel.IN_STORE))

    assert run.counters["no_consent"] == 1
    assert Task.objects.filter(run=run).count() == 3


def test_frequency_cap_counts_tasks_of_every_campaign_in_the_window_but_not_cancelled_ones():
    ContactPolicy.objects.create(max_tasks=2, per_days=7)
    stores, _ = build_brand(stores=1, members_per_store=4)
    capped, cancelled_only, old_only, fresh = Member.objects.order_by("pk")
    store = stores[0]
    TaskFactory.create_batch(2, member=capped, store=store)
    TaskFactory.create_batch(2, member=cancelled_only, store=store, state=Task.State.CANCELLED)
    old = TaskFactory.create_batch(2, member=old_only, store=store)
    Task.objects.filter(pk__in=[t.pk for t in old]).update(
        created_at=timezone.now() - datetime.timedelta(days=8)
    )

    run = dispatch_inline(running_campaign(stores))

    assert run.counters["frequency_cap"] == 1
    assert set(Task.objects.filter(run=run).values_list("member_id", flat=True)) == {
        cancelled_only.pk,
        old_only.pk,
        fresh.pk,
    }


def test_cap_reached_between_evaluation_and_creation_skips_the_member():
    ContactPolicy.objects.create(max_tasks=1, per_days=7)
    stores, _ = build_brand(stores=1, members_per_store=3)
    member = Member.objects.order_by("pk").first()
    from scrm.audit import Actor

    run, _ = dispatch.open_campaign_run(running_campaign(stores), occurrence="x", actor=Actor.system("t"))
    dispatch.evaluate_run(run.pk)
    TaskFactory(member=member, store=stores[0])  # another campaign got there first

    dispatch.create_store_tasks(run.pk, stores[0].pk)

    run_store = RunStore.objects.get(run=run)
    assert (run_store.expected, run_store.created, run_store.skipped) == (3, 2, 1)
    assert not Task.objects.filter(run=run, member=member).exists()


def test_consent_withdrawn_after_evaluation_means_no_task(system_actor):
    from members.models import PrivacyNotice

    PrivacyNotice.objects.get_or_create(
        version="t1", defaults={"purposes": ["marketing"], "published_at": timezone.now()}
    )
    stores, _ = build_brand(stores=1, members_per_store=5)
    member = Member.objects.order_by("pk").first()
    run, _ = dispatch.open_campaign_run(running_campaign(stores), occurrence="x", actor=system_actor)
    dispatch.evaluate_run(run.pk)

    record_consent(
        member, channel="wecom", action="withdraw", source="hq_admin", actor=system_actor, policy_version="t1"
    )
    dispatch.create_store_tasks(run.pk, stores[0].pk)

    assert not Task.objects.filter(member=member).exists()
    assert Task.objects.filter(run=run).count() == 4


def test_withdrawal_cancels_open_tasks_on_that_channel_only(system_actor):
    from members.models import PrivacyNotice

    PrivacyNotice.objects.get_or_create(
        version="t1", defaults={"purposes": ["marketing"], "published_at": timezone.now()}
    )
    member = MemberFactory()
    Member.objects.filter(pk=member.pk).update(consent_wecom=True, consent_call=True)
    member.refresh_from_db()
    wecom = TaskFactory(member=member, store=member.home_store, channel=TaskChannel.WECOM)
    call = TaskFactory(member=member, store=member.home_store, channel=TaskChannel.CALL)
    in_store = TaskFactory(member=member, store=member.home_store, channel=TaskChannel.IN_STORE)
    done = TaskFactory(
        member=member,
        store=member.home_store,
        channel=TaskChannel.WECOM,
        state=Task.State.DONE,
        outcome="reached",
        completed_at=timezone.now(),
    )

    record_consent(
        member, channel="wecom", action="withdraw", source="hq_admin", actor=system_actor, policy_version="t1"
    )

    states = {t.pk: (t.state, t.cancel_reason) for t in Task.objects.all()}
    assert states[wecom.pk] == ("cancelled", "consent")
    assert states[call.pk] == ("open", "")
    assert states[in_store.pk] == ("open", "")  # still consents to calls
    assert states[done.pk] == ("done", "")
    assert AuditEvent.objects.filter(action="task.cancelled", target_id=str(member.pk)).exists()

    record_consent(
        member, channel="call", action="withdraw", source="hq_admin", actor=system_actor, policy_version="t1"
    )
    assert Task.objects.get(pk=in_store.pk).state == "cancelled"  # no consent left anywhere


# Assignment ---------------------------------------------------------------------------------------


def test_exclusive_guide_first_else_least_loaded_guide_of_the_store():
    store = StoreFactory()
    first, second = GuideFactory(store=store), GuideFactory(store=store)
    left = GuideFactory(store=store)
    TaskFactory.create_batch(3, store=StoreFactory(), guide=first)  # first already has 3 open tasks
    own = MemberFactory(home_store=store, guide=second)
    orphan = MemberFactory(home_store=store, guide=left)
    Guide.objects.filter(pk=left.pk).update(status="left", left_on=timezone.localdate())
    others = [MemberFactory(home_store=store) for _ in range(4)]
    Member.objects.filter(home_store=store).update(consent_wecom=True)

    run = dispatch_inline(running_campaign([store]))

    assert Task.objects.get(run=run, member=own).guide == second
    # second holds 1 (own), first 3: orphan and the next go to second, then ties go to the lower id
    assert Task.objects.get(run=run, member=orphan).guide == second
    assert [Task.objects.get(run=run, member=m).guide_id for m in others] == [
        second.pk,
        first.pk,
        second.pk,
        first.pk,
    ]
    assert Task.objects.filter(guide=first, state="open").count() == 5
    assert Task.objects.filter(guide=second, state="open").count() == 4


def test_least_loaded_balances_within_the_batch():
    loads = {1: 5, 2: 0, 3: 2}
    assert dispatch.assign_least_loaded(10, loads) == [2, 2, 2, 3, 2, 3, 2, 3, 1, 2]
    assert loads == {1: 6, 2: 6, 3: 5}


def test_store_without_active_guide_goes_to_the_managers_queue():
    store = StoreFactory()
    ManagerFactory(store=store)
    gone = GuideFactory(store=store)
    Guide.objects.filter(pk=gone.pk).update(status="left", left_on=timezone.localdate())
    MemberFactory.create_batch(3, home_store=store)
    Member.objects.update(consent_wecom=True)

    run = dispatch_inline(running_campaign([store]))

    assert Task.objects.filter(run=run, guide__isnull=True).count() == 3
    assert RunStore.objects.get(run=run).unassigned == 3
    assert run.counters["unassigned"] == 3


def test_manager_assignment_sends_everything_to_the_queue():
    stores, _ = build_brand(stores=1, members_per_store=3, exclusive_every=1)
    run = dispatch_inline(running_campaign(stores, assignment=Campaign.Assignment.MANAGER))
    assert Task.objects.filter(run=run, guide__isnull=True).count() == 3


# Quiet hours ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-03-02 22:30", "2026-03-03 09:00"),  # evening → next morning
        ("2026-03-02 06:00", "2026-03-02 09:00"),  # early morning → same morning
        ("2026-03-02 09:00", "2026-03-02 09:00"),  # the end itself is not quiet
        ("2026-03-02 15:00", "2026-03-02 15:00"),
        ("2026-03-02 21:00", "2026-03-03 09:00"),
    ],
)
def test_tasks_never_open_inside_quiet_hours(local, expected):
    moment = datetime.datetime.fromisoformat(local).replace(tzinfo=SHANGHAI)
    result = dispatch.outside_quiet_hours(moment, quiet_start=datetime.time(21), quiet_end=datetime.time(9))
    assert result == datetime.datetime.fromisoformat(expected).replace(tzinfo=SHANGHAI)


def test_quiet_hours_within_one_day_and_none():
    noon = datetime.datetime(2026, 3, 2, 12, 30, tzinfo=SHANGHAI)
    lunch = dispatch.outside_quiet_hours(noon, quiet_start=datetime.time(12), quiet_end=datetime.time(14))
    assert lunch == datetime.datetime(2026, 3, 2, 14, 0, tzinfo=SHANGHAI)
    same = dispatch.outside_quiet_hours(noon, quiet_start=datetime.time(9), quiet_end=datetime.time(9))
    assert same == noon


def test_run_opens_tasks_after_quiet_hours():
    ContactPolicy.objects.create(quiet_start=datetime.time(21), quiet_end=datetime.time(9))
    stores, _ = build_brand(stores=1, members_per_store=2)
    late = datetime.datetime(2026, 3, 2, 23, 0, tzinfo=SHANGHAI)
    campaign = running_campaign(stores, due_days=3)
    from scrm.audit import Actor

    run, _ = dispatch.open_campaign_run(campaign, occurrence="x", actor=Actor.system("t"), now=late)
    dispatch.evaluate_run(run.pk)
    dispatch.create_store_tasks(run.pk, stores[0].pk)

    task = Task.objects.filter(run=run).first()
    assert timezone.localtime(task.opens_at, SHANGHAI) == datetime.datetime(2026, 3, 3, 9, 0, tzinfo=SHANGHAI)
    assert task.due_at - task.opens_at == datetime.timedelta(days=3)


# Repeats --------------------------------------------------------------------------------------------


def test_every_step_is_safe_to_repeat(system_actor):
    stores, _ = build_brand(stores=3, members_per_store=20)
    campaign = running_campaign(stores)
    run = dispatch_inline(campaign)
    assert Task.objects.filter(run=run).count() == 60

    again, created = dispatch.open_campaign_run(campaign, occurrence="once", actor=system_actor)
    assert (again.pk, created) == (run.pk, False)
    dispatch.evaluate_run(run.pk)
    for store in stores:
        for _ in range(3):
            assert dispatch.create_store_tasks(run.pk, store.pk) == 0
    RunStore.objects.filter(run=run).update(state="pending")  # as if the done mark had been lost
    CampaignRun.objects.filter(pk=run.pk).update(state="dispatching")
    for store in stores:
        assert dispatch.create_store_tasks(run.pk, store.pk) == 0
    assert Task.objects.filter(run=run).count() == 60
    assert RunStore.objects.filter(run=run, created=20, state="done").count() == 3


def test_reconciler_resends_stale_runs_and_stores_and_finishes_complete_ones(
    system_actor, django_capture_on_commit_callbacks
):
    stores, _ = build_brand(stores=2, members_per_store=5)
    campaign = running_campaign(stores)
    run, _ = dispatch.open_campaign_run(campaign, occurrence="x", actor=system_actor)
    sent = []
    from unittest import mock

    with (
        mock.patch.object(dispatch, "send_evaluation", side_effect=lambda r: sent.append(("eval", r))),
        mock.patch.object(dispatch, "send_store", side_effect=lambda r, s: sent.append(("store", r, s))),
    ):
        with django_capture_on_commit_callbacks(execute=True):
            fresh = dispatch.reconcile_dispatch()  # nothing is stale yet
        assert fresh["evaluations"] == 0
        with django_capture_on_commit_callbacks(execute=True):
            dispatch.reconcile_dispatch(older_than=datetime.timedelta(0))
        assert sent == [("eval", run.pk)]

        dispatch.evaluate_run(run.pk)
        dispatch.create_store_tasks(run.pk, stores[0].pk)
        sent.clear()
        with django_capture_on_commit_callbacks(execute=True):
            result = dispatch.reconcile_dispatch(older_than=datetime.timedelta(0))
        assert sent == [("store", run.pk, stores[1].pk)]
        assert result["stores"] == 1

    dispatch.create_store_tasks(run.pk, stores[1].pk)
    with django_capture_on_commit_callbacks(execute=True):
        dispatch.reconcile_dispatch(older_than=datetime.timedelta(0))
    run.refresh_from_db()
    assert run.state == "done"
    assert run.counters["created"] == 10


def test_reconciler_gives_up_after_the_attempt_cap(system_actor):
    stores, _ = build_brand(stores=1, members_per_store=2)
    run, _ = dispatch.open_campaign_run(running_campaign(stores), occurrence="x", actor=system_actor)
    CampaignRun.objects.filter(pk=run.pk).update(attempts=dispatch.MAX_ATTEMPTS)
    dispatch.reconcile_dispatch(older_than=datetime.timedelta(0))
    assert CampaignRun.objects.get(pk=run.pk).state == "failed"


# Expiry -------------------------------------------------------------------------------------------------


def test_open_tasks_past_due_expire():
    past = TaskFactory(due_at=timezone.now() - datetime.timedelta(minutes=1))
    future = TaskFactory()
    done = TaskFactory(
        due_at=timezone.now() - datetime.timedelta(days=1),
        state=Task.State.DONE,
        outcome="reached",
        completed_at=timezone.now(),
    )

    assert dispatch.expire_tasks() == 1

    assert Task.objects.get(pk=past.pk).state == "expired"
    assert Task.objects.get(pk=future.pk).state == "open"
    assert Task.objects.get(pk=done.pk).state == "done"
    assert AuditEvent.objects.get(action="task.expired").changes["expired"] == 1
    assert dispatch.expire_tasks() == 0


# Schedules and events ---------------------------------------------------------------------------------


def test_daily_campaign_opens_one_run_per_day_from_its_time(django_capture_on_commit_callbacks):
    stores, _ = build_brand(stores=1, members_per_store=2)
    campaign = running_campaign(stores, schedule=Campaign.Schedule.DAILY, run_at=datetime.time(10, 0))
    before = datetime.datetime(2026, 3, 2, 9, 59, tzinfo=SHANGHAI)
    after = datetime.datetime(2026, 3, 2, 10, 1, tzinfo=SHANGHAI)

    assert services.run_campaign_schedules(now=before) == []
    with django_capture_on_commit_callbacks() as callbacks:
        opened = services.run_campaign_schedules(now=after)
        services.run_campaign_schedules(now=after + datetime.timedelta(minutes=1))
    assert [run.occurrence for run in opened] == ["2026-03-02"]
    assert len(callbacks) == 1
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1

    Campaign.objects.filter(pk=campaign.pk).update(ends_on=datetime.date(2026, 3, 2))
    services.run_campaign_schedules(now=after + datetime.timedelta(days=1))
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.FINISHED


def test_event_campaign_opens_a_run_for_the_given_members_once_per_key(system_actor):
    stores, _ = build_brand(stores=1, members_per_store=5)
    campaign = running_campaign(stores, schedule=Campaign.Schedule.EVENT, event="order_paid")
    member = Member.objects.order_by("pk").first()

    runs = services.trigger_campaign_event("order_paid", [member.pk], key="NO1", actor=system_actor)
    again = services.trigger_campaign_event("order_paid", [member.pk], key="NO1", actor=system_actor)
    assert len(runs) == 1 and again == []
    dispatch.evaluate_run(runs[0].pk)
    dispatch.create_store_tasks(runs[0].pk, stores[0].pk)
    assert list(Task.objects.filter(run=runs[0]).values_list("member_id", flat=True)) == [member.pk]
    assert runs[0].campaign == campaign


def test_a_journey_run_with_its_audience_frozen_only_fans_out():
    from campaigns.models import Journey, JourneyStep

    from .factories import ScriptFactory

    stores, _ = build_brand(stores=2, members_per_store=3)
    step = JourneyStep.objects.create(
        journey=Journey.objects.create(name="新会员"),
        name="入会第3天",
        event="joined",
        offset_days=3,
        channel=TaskChannel.WECOM,
        script=ScriptFactory(),
    )
    run = CampaignRun.objects.create(
        journey_step=step,
        occurrence="2026-03-02",
        state=CampaignRun.State.EVALUATING,
        evaluated_at=timezone.now(),
        snapshot={"kind": "journey", "channel": "wecom", "title": "入会第3天", "due_days": 2, "priority": 3},
    )
    RunMember.objects.bulk_create(
        RunMember(run=run, member=m, store_id=m.home_store_id) for m in Member.objects.all()[:5]
    )

    dispatch.evaluate_run(run.pk)
    for store in stores:
        dispatch.create_store_tasks(run.pk, store.pk)
    dispatch.finish_run_if_complete(run.pk)

    run.refresh_from_db()
    assert run.state == "done"
    assert Task.objects.filter(run=run, title="入会第3天", priority=3).count() == 5
    task = Task.objects.filter(run=run).first()
    assert task.due_at - task.opens_at == datetime.timedelta(days=2)
