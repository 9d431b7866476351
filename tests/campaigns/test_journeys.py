"""Journeys on a frozen clock: the right day for each event, once per occurrence, catch-up, consent."""

import datetime
import zoneinfo
from unittest import mock

import pytest
import time_machine
from django.core.exceptions import ValidationError

from campaigns import journeys
from campaigns.journey_services import (
    clean_step,
    festival_calendar,
    move_festival,
    seed_festivals,
    set_journey_active,
)
from campaigns.journeys import lunar_anniversaries, run_journeys, solar_anniversary
from campaigns.models import CampaignRun, Festival, Journey, JourneyStep, RunMember, TaskChannel
from members.models import Member, PointsEntry
from members.services import add_points, update_member
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import MemberFactory, TierFactory

from .factories import ScriptFactory, TaskFactory

pytestmark = pytest.mark.django_db

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
SYSTEM = Actor.system("test")


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def d(year: int, month: int, day: int) -> datetime.date:
    return datetime.date(year, month, day)


def tick(day: datetime.date, **kwargs):
    """The beat tick as it runs at 08:00 Shanghai time on ``day``."""
    with time_machine.travel(at(day.year, day.month, day.day, 8), tick=False):
        return run_journeys(**kwargs)


def make_step(
    event: str, offset: int, *, channel: str = TaskChannel.WECOM, active: bool = True
) -> JourneyStep:
    journey, _ = Journey.objects.get_or_create(name="生命周期", defaults={"active": active})
    return JourneyStep.objects.create(
        journey=journey,
        name=f"{event}{offset:+d}",
        event=event,
        offset_days=offset,
        channel=channel,
        script=ScriptFactory(),
    )


def member(**values) -> Member:
    """A member with WeCom consent (the channel of most steps here)."""
    created = MemberFactory(**{"joined_at": at(2020, 1, 1), **values})
    Member.objects.filter(pk=created.pk).update(consent_wecom=True)
    created.refresh_from_db()
    return created


def audience(step: JourneyStep, occurrence: str | None = None) -> set[int]:
    rows = RunMember.objects.filter(run__journey_step=step)
    if occurrence is not None:
        rows = rows.filter(run__occurrence=occurrence)
    return set(rows.values_list("member_id", flat=True))


@pytest.fixture(autouse=True)
def no_dispatch():
    """The hand-off to dispatch runs after commit; these tests look at the run and its audience."""
    with mock.patch.object(journeys, "_hand_to_dispatch") as hand_off:
        yield hand_off


# -- joined ----------------------------------------------------------------------------------------


def test_joined_step_fires_on_the_offset_day_in_shanghai_time():
    step = make_step("joined", 3)
    # 23:30 in Shanghai is still the 25th there (15:30 UTC): the event date is the local date.
    late_evening = member(joined_at=at(2026, 11, 25, 23, 30))
    morning = member(joined_at=at(2026, 11, 26, 0, 10))

    assert tick(d(2026, 11, 27), catch_up_days=0).runs == []
    first = tick(d(2026, 11, 28), catch_up_days=0)
    assert [run.occurrence for run in first.runs] == ["2026-11-25"]
    assert audience(step, "2026-11-25") == {late_evening.pk}
    tick(d(2026, 11, 29), catch_up_days=0)
    assert audience(step, "2026-11-26") == {morning.pk}


@pytest.mark.parametrize("offset", [3, 7, 15, 30, 60, 90, 150])
def test_joined_lifecycle_offsets(offset):
    step = make_step("joined", offset)
    joined = member(joined_at=at(2026, 1, 5))
    fire_day = d(2026, 1, 5) + datetime.timedelta(days=offset)
    assert tick(fire_day - datetime.timedelta(days=1), catch_up_days=0).runs == []
    assert len(tick(fire_day, catch_up_days=0).runs) == 1
    assert audience(step) == {joined.pk}


def test_rerun_the_same_day_is_harmless():
    step = make_step("joined", 7)
    joined = member(joined_at=at(2026, 3, 1))
    first = tick(d(2026, 3, 8))
    again = tick(d(2026, 3, 8))
    assert len(first.runs) == 1
    assert again.runs == []
    assert again.skipped == 1
    assert CampaignRun.objects.filter(journey_step=step).count() == 1
    assert RunMember.objects.filter(member=joined).count() == 1


def test_missed_days_are_caught_up_once():
    step = make_step("joined", 7)
    joined = member(joined_at=at(2026, 3, 1))
    # The beat was down on the 8th and 9th; the 10th catches up (window of 3 days) …
    result = tick(d(2026, 3, 10), catch_up_days=3)
    assert [run.occurrence for run in result.runs] == ["2026-03-01"]
    assert result.runs[0].snapshot["fire_date"] == "2026-03-10"
    # … and the following days, whose window still holds the 8th, do not fire it again.
    for day in (11, 12, 13):
        assert tick(d(2026, 3, day), catch_up_days=3).runs == []
    assert RunMember.objects.filter(member=joined, run__journey_step=step).count() == 1


def test_an_event_older_than_the_catch_up_window_is_not_replayed():
    step = make_step("joined", 7)
    member(joined_at=at(2026, 3, 1))
    assert tick(d(2026, 3, 12), catch_up_days=3).runs == []  # fire date 8th is 4 days back
    assert not CampaignRun.objects.filter(journey_step=step).exists()


def test_inactive_journey_does_not_fire():
    make_step("joined", 3, active=False)
    member(joined_at=at(2026, 3, 1))
    assert tick(d(2026, 3, 4)).runs == []


def test_nobody_matching_creates_no_run_and_a_late_member_is_still_caught():
    step = make_step("joined", 3)
    assert tick(d(2026, 3, 4), catch_up_days=2).empty == 3
    # The member's row arrives a day late (an import): the next tick, still in the window, fires.
    late = member(joined_at=at(2026, 3, 1))
    tick(d(2026, 3, 5), catch_up_days=2)
    assert audience(step, "2026-03-01") == {late.pk}


# -- purchases -------------------------------------------------------------------------------------


def test_first_purchase_without_repeat_after_30_days():
    step = make_step("first_purchase", 30)
    once = member()
    repeat = member()
    Member.objects.filter(pk=once.pk).update(
        first_purchase_at=at(2026, 5, 1), last_purchase_at=at(2026, 5, 1, 18), order_count=1
    )
    Member.objects.filter(pk=repeat.pk).update(
        first_purchase_at=at(2026, 5, 1), last_purchase_at=at(2026, 5, 20), order_count=2
    )
    tick(d(2026, 5, 31), catch_up_days=0)
    assert audience(step) == {once.pk}


def test_dormant_90_days_counts_from_the_last_purchase():
    step = make_step("dormant", 90)
    dormant = member()
    recent = member()
    Member.objects.filter(pk=dormant.pk).update(
        first_purchase_at=at(2026, 1, 1), last_purchase_at=at(2026, 3, 1)
    )
    Member.objects.filter(pk=recent.pk).update(
        first_purchase_at=at(2026, 1, 1), last_purchase_at=at(2026, 3, 2)
    )
    tick(d(2026, 5, 30), catch_up_days=0)  # 1 March + 90 days
    assert audience(step, "2026-03-01") == {dormant.pk}
    # The dormant member buys again and lapses again: a new occurrence, so the step fires again.
    Member.objects.filter(pk=dormant.pk).update(last_purchase_at=at(2026, 6, 10))
    tick(d(2026, 9, 8), catch_up_days=0)
    assert audience(step, "2026-06-10") == {dormant.pk}
    assert RunMember.objects.filter(member=dormant).count() == 2


# -- birthdays -------------------------------------------------------------------------------------


def test_birthday_fires_once_a_year_on_the_anniversary():
    step = make_step("birthday", 0)
    born = member(birthday=d(1990, 6, 15))
    member(birthday=d(1990, 6, 16))
    tick(d(2026, 6, 15), catch_up_days=0)
    tick(d(2026, 6, 15), catch_up_days=0)
    tick(d(2027, 6, 15), catch_up_days=0)
    assert audience(step, "2026-06-15") == {born.pk}
    assert audience(step, "2027-06-15") == {born.pk}
    assert RunMember.objects.filter(member=born).count() == 2


def test_birthday_a_week_ahead_uses_a_negative_offset():
    step = make_step("birthday", -7)
    born = member(birthday=d(1990, 6, 15))
    tick(d(2026, 6, 8), catch_up_days=0)
    assert audience(step, "2026-06-15") == {born.pk}


def test_leap_day_birthday_falls_on_28_february_in_a_common_year():
    step = make_step("birthday", 0)
    leap = member(birthday=d(2000, 2, 29))
    assert tick(d(2027, 2, 27), catch_up_days=0).runs == []
    tick(d(2027, 2, 28), catch_up_days=0)
    assert audience(step, "2027-02-28") == {leap.pk}
    # In a leap year the birthday is the 29th again, not the 28th.
    assert tick(d(2028, 2, 28), catch_up_days=0).runs == []
    tick(d(2028, 2, 29), catch_up_days=0)
    assert audience(step, "2028-02-29") == {leap.pk}


def test_lunar_birthday_moves_with_the_lunar_calendar():
    step = make_step("birthday", 0)
    # Born 3 October 1990 = the 15th of the 8th lunar month; in 2026 that is 25 September.
    lunar = member(birthday=d(1990, 10, 3), birthday_lunar=True)
    solar = member(birthday=d(1990, 10, 3))
    tick(d(2026, 9, 25), catch_up_days=0)
    tick(d(2026, 10, 3), catch_up_days=0)
    assert audience(step, "2026-09-25") == {lunar.pk}
    assert audience(step, "2026-10-03") == {solar.pk}


def test_lunar_birthday_late_in_the_lunar_year_can_fall_twice_in_a_solar_year():
    # 10 January 1985 = lunar 11/20: lunar 2025's falls on 8 January 2026, lunar 2026's on 28 December.
    assert {d(2026, 1, 8), d(2026, 12, 28)} <= lunar_anniversaries(d(1985, 1, 10), d(2026, 6, 1))
    step = make_step("birthday", 0)
    born = member(birthday=d(1985, 1, 10), birthday_lunar=True)
    tick(d(2026, 1, 8), catch_up_days=0)
    tick(d(2026, 12, 28), catch_up_days=0)
    assert RunMember.objects.filter(member=born, run__journey_step=step).count() == 2


def test_solar_anniversary_helper():
    assert solar_anniversary(d(2000, 2, 29), 2027) == d(2027, 2, 28)
    assert solar_anniversary(d(2000, 2, 29), 2028) == d(2028, 2, 29)


def test_birthday_week_fires_on_the_monday_of_the_week():
    step = make_step("birthday_week", 0)
    # 2026-06-15 is a Monday; birthdays from Monday 15 to Sunday 21 June are that week.
    in_week = [member(birthday=d(1990, 6, 15)), member(birthday=d(1991, 6, 21))]
    member(birthday=d(1990, 6, 22))
    assert tick(d(2026, 6, 14), catch_up_days=0).runs == []
    tick(d(2026, 6, 15), catch_up_days=0)
    assert audience(step, "2026-06-15") == {m.pk for m in in_week}
    assert tick(d(2026, 6, 16), catch_up_days=0).runs == []


# -- tier, points, festivals -----------------------------------------------------------------------


def test_tier_up_fires_for_upgrades_only():
    step = make_step("tier_up", 1)
    silver, gold = TierFactory(rank=1), TierFactory(rank=2)
    up = member(tier=silver)
    down = member(tier=gold)
    with time_machine.travel(at(2026, 7, 1, 15), tick=False):
        update_member(up, tier=gold, actor=SYSTEM)
        update_member(down, tier=silver, actor=SYSTEM)
    tick(d(2026, 7, 2), catch_up_days=0)
    assert audience(step, "2026-07-01") == {up.pk}


def test_tier_up_from_the_nightly_tier_evaluation():
    from loyalty.models import TierChange

    step = make_step("tier_up", 0)
    silver, gold = TierFactory(rank=1), TierFactory(rank=2)
    up, down = member(), member()
    for who, old, new, direction in ((up, silver, gold, "up"), (down, gold, silver, "down")):
        TierChange.objects.create(
            member=who,
            from_tier=old,
            to_tier=new,
            direction=direction,
            basis="spend",
            value=0,
            at=at(2026, 7, 1, 1),
        )
    tick(d(2026, 7, 1), catch_up_days=0)
    assert audience(step, "2026-07-01") == {up.pk}


def test_points_expiring_fires_before_the_expiry():
    step = make_step("points_expiring", -30)
    expiring = member()
    later = member()
    with time_machine.travel(at(2026, 1, 1), tick=False):
        add_points(
            expiring, delta=300, kind=PointsEntry.Kind.EARN, actor=SYSTEM, expires_at=at(2026, 12, 31, 23, 59)
        )
        add_points(
            later, delta=300, kind=PointsEntry.Kind.EARN, actor=SYSTEM, expires_at=at(2027, 1, 1, 0, 1)
        )
    result = tick(d(2026, 12, 1), catch_up_days=0)
    assert audience(step, "2026-12-31") == {expiring.pk}
    assert result.runs[0].snapshot["extra"] == {"expires_on": "2026-12-31"}


def test_festival_step_follows_the_calendar_when_the_date_moves():
    step = make_step("festival:中秋", -3)
    everyone = {member().pk, member().pk}
    festival = Festival.objects.create(name="中秋", date=d(2026, 9, 25))
    Festival.objects.create(name="国庆", date=d(2026, 10, 1))
    move_festival(festival, date=d(2026, 9, 26), actor=SYSTEM)
    assert tick(d(2026, 9, 22), catch_up_days=0).runs == []
    result = tick(d(2026, 9, 23), catch_up_days=0)
    assert audience(step, "2026-09-26") == everyone
    assert result.runs[0].snapshot["extra"] == {"festival": "中秋"}
    assert tick(d(2026, 9, 28), catch_up_days=0).runs == []  # 国庆 is another festival's date


def test_any_festival_step_fires_for_each_calendar_date():
    step = make_step("festival", 0)
    member()
    Festival.objects.create(name="双11", date=d(2026, 11, 11))
    Festival.objects.create(name="双12", date=d(2026, 12, 12))
    tick(d(2026, 11, 11), catch_up_days=0)
    tick(d(2026, 12, 12), catch_up_days=0)
    assert set(CampaignRun.objects.filter(journey_step=step).values_list("occurrence", flat=True)) == {
        "2026-11-11",
        "2026-12-12",
    }


# -- who may be contacted -------------------------------------------------------------------------


def test_consent_is_respected_per_channel():
    step = make_step("joined", 3, channel=TaskChannel.SMS)
    with_sms = member(joined_at=at(2026, 3, 1))
    Member.objects.filter(pk=with_sms.pk).update(consent_sms=True)
    member(joined_at=at(2026, 3, 1))  # WeCom consent only
    result = tick(d(2026, 3, 4), catch_up_days=0)
    assert audience(step) == {with_sms.pk}
    assert result.runs[0].counters == {
        "evaluated": 2,
        "no_consent": 1,
        "frequency_cap": 0,
        "holdout": 0,
        "eligible": 1,
    }


def test_in_store_step_needs_consent_on_some_channel():
    step = make_step("joined", 3, channel=TaskChannel.IN_STORE)
    consenting = member(joined_at=at(2026, 3, 1))
    silent = MemberFactory(joined_at=at(2026, 3, 1))
    tick(d(2026, 3, 4), catch_up_days=0)
    assert audience(step) == {consenting.pk}
    assert silent.pk not in audience(step)


def test_frequency_cap_excludes_members_with_recent_tasks():
    step = make_step("joined", 3)
    busy = member(joined_at=at(2026, 3, 1))
    free = member(joined_at=at(2026, 3, 1))
    with time_machine.travel(at(2026, 3, 2), tick=False):
        TaskFactory.create_batch(2, member=busy, store=busy.home_store)
    result = tick(d(2026, 3, 4), catch_up_days=0)
    assert audience(step) == {free.pk}
    assert result.runs[0].counters["frequency_cap"] == 1


def test_erased_members_are_never_in_a_journey():
    step = make_step("joined", 3)
    erased = member(joined_at=at(2026, 3, 1))
    Member.objects.filter(pk=erased.pk).update(status=Member.Status.ERASED)
    assert tick(d(2026, 3, 4), catch_up_days=0).runs == []
    assert audience(step) == set()


# -- hand-off, audit, services -------------------------------------------------------------------


def test_firing_is_audited_and_handed_to_dispatch_after_commit(
    no_dispatch, django_capture_on_commit_callbacks
):
    make_step("joined", 3)
    member(joined_at=at(2026, 3, 1))
    with django_capture_on_commit_callbacks(execute=True):
        result = tick(d(2026, 3, 4), catch_up_days=0)
    run = result.runs[0]
    no_dispatch.assert_called_once_with(run.pk)
    event = AuditEvent.objects.get(action="journey.step_fired")
    assert event.target_id == str(run.pk)
    assert event.changes["eligible"] == 1
    assert run.snapshot["script_body"] and run.snapshot["channel"] == TaskChannel.WECOM


def test_step_validation_refuses_unknown_events_and_bad_offsets():
    step = JourneyStep(event="anniversary", offset_days=3)
    with pytest.raises(ValidationError):
        clean_step(step)
    with pytest.raises(ValidationError):
        clean_step(JourneyStep(event="points_expiring", offset_days=7))
    with pytest.raises(ValidationError):
        clean_step(JourneyStep(event="joined", offset_days=400))
    clean_step(JourneyStep(event="festival:中秋", offset_days=-3))


def test_a_journey_without_steps_cannot_be_switched_on():
    journey = Journey.objects.create(name="空")
    with pytest.raises(ValidationError):
        set_journey_active(journey, active=True, actor=SYSTEM)
    journey.refresh_from_db()
    assert journey.active is False


def test_seed_festivals_has_the_right_dates_and_is_idempotent():
    calendar = {(name, date.year): date for name, date in festival_calendar([2026, 2027])}
    assert calendar[("春节", 2026)] == d(2026, 2, 17)
    assert calendar[("春节", 2027)] == d(2027, 2, 6)
    assert calendar[("元宵", 2026)] == d(2026, 3, 3)
    assert calendar[("元宵", 2027)] == d(2027, 2, 20)
    assert calendar[("七夕", 2026)] == d(2026, 8, 19)
    assert calendar[("七夕", 2027)] == d(2027, 8, 8)
    assert calendar[("中秋", 2026)] == d(2026, 9, 25)
    assert calendar[("中秋", 2027)] == d(2027, 9, 15)
    assert calendar[("双11", 2027)] == d(2027, 11, 11)
    assert len(seed_festivals(actor=SYSTEM)) == 20
    moved = Festival.objects.get(name="618", date__year=2026)
    move_festival(moved, date=d(2026, 6, 1), actor=SYSTEM)
    assert seed_festivals(actor=SYSTEM) == []  # a hand-moved date is not put back
    assert Festival.objects.count() == 20


def test_a_fired_step_becomes_guide_tasks_through_dispatch(django_capture_on_commit_callbacks):
    from campaigns import dispatch
    from campaigns.models import Task
    from tests.factories import GuideFactory

    step = make_step("joined", 3)
    joined = member(joined_at=at(2026, 3, 1))
    guide = GuideFactory(store=joined.home_store)
    run = tick(d(2026, 3, 4), catch_up_days=0).runs[0]
    with time_machine.travel(at(2026, 3, 4, 8, 1), tick=False):
        with django_capture_on_commit_callbacks(execute=False):
            dispatch.evaluate_run(run.pk)  # what start_run_from_audience sends to a worker
        assert dispatch.create_store_tasks(run.pk, joined.home_store_id) == 1
        assert dispatch.create_store_tasks(run.pk, joined.home_store_id) == 0  # a second delivery
    task = Task.objects.get(run=run)
    assert (task.member, task.guide, task.channel, task.title) == (
        joined,
        guide,
        TaskChannel.WECOM,
        f"生命周期：{step.name}",
    )
    run.refresh_from_db()
    assert run.counters["eligible"] == 1 and run.counters["stores"] == 1


def test_one_failing_step_does_not_stop_the_others():
    joined_step = make_step("joined", 3)
    make_step("birthday", 0)
    joined = member(joined_at=at(2026, 3, 1), birthday=d(1990, 3, 4))
    with mock.patch.object(journeys, "_birthday_members", side_effect=RuntimeError("broken")):
        result = tick(d(2026, 3, 4), catch_up_days=0)
    assert result.failed == 1
    assert audience(joined_step) == {joined.pk}
    # The next tick, with the fault gone, catches the birthday up.
    assert len(tick(d(2026, 3, 5), catch_up_days=1).runs) == 1
