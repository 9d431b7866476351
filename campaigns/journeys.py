"""Journeys: lifecycle steps that fire a fixed number of days after (or before) a member's event.

A daily beat tick (``run_journeys``) looks, for each step of each active journey, at the event dates
``fire date - offset`` for today and the previous ``CATCH_UP_DAYS`` days, and fires each (step, event
date) once: the run is keyed ``(journey_step, occurrence = event date)`` by a unique constraint, and its
audience (``RunMember``) is unique per member. So

- a re-run the same day finds the run and does nothing;
- a missed day is caught up the next day (the event date of yesterday's fire date is still in the window);
- each member gets each step at most once per occurrence of the event (joined date, first-purchase date,
  last-purchase date, birthday anniversary, tier-change date, points expiry date, festival date).

No long ETAs: the tick is a plain daily beat entry, and a late tick only shifts the fire date within the
catch-up window. The audience is computed in SQL (``INSERT … SELECT``) except for lunar birthdays, whose
anniversary is computed in Python per distinct birth date.

Events and the meaning of the date:

=====================  ===================================================================================
``joined``             the day the member joined (offsets 3, 7, 15, 30, 60, 90, 150 …)
``first_purchase``     the day of the first purchase, for members with no purchase on a later day
``dormant``            the day of the last purchase (offset 90: "dormant 90 days")
``birthday``           the birthday anniversary (lunar for members with a lunar birthday; 29 Feb → 28 Feb)
``birthday_week``      the Monday of the week holding the birthday anniversary ("birthday this week")
``tier_up``            the day the member moved to a higher tier (from the audit trail)
``points_expiring``    the day earned points expire (use a negative offset: -30 fires 30 days before)
``festival``           a date of the festival calendar (any festival); ``festival:<name>`` for one name
=====================  ===================================================================================
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from members.models import Member, PointsEntry, Tier
from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent

from . import dispatch
from .models import CampaignRun, Festival, JourneyStep, RunMember

# A tick looks back this many days, so a missed or failed day is caught up (a late greeting beats none;
# a longer window would greet people for events long past).
CATCH_UP_DAYS: int = getattr(settings, "SCRM_JOURNEY_CATCH_UP_DAYS", 3)

FESTIVAL_PREFIX = "festival:"

log = logging.getLogger(__name__)

EVENTS: dict[str, Any] = {
    "joined": _("Joined"),
    "first_purchase": _("First purchase, no repeat since"),
    "dormant": _("Last purchase (dormant)"),
    "birthday": _("Birthday"),
    "birthday_week": _("Birthday this week (Monday)"),
    "tier_up": _("Tier upgraded"),
    "points_expiring": _("Points expire"),
    "festival": _("Festival (any in the calendar)"),
}


def event_choices() -> list[tuple[str, Any]]:
    """Choices for the step form: the fixed events plus one entry per festival name in the calendar."""
    names = Festival.objects.order_by("name").values_list("name", flat=True).distinct()
    festivals = [(FESTIVAL_PREFIX + name, _("Festival: %(name)s") % {"name": name}) for name in names]
    return [*EVENTS.items(), *festivals]


def validate_event(event: str) -> None:
    if event in EVENTS:
        return
    if event.startswith(FESTIVAL_PREFIX) and event[len(FESTIVAL_PREFIX) :].strip():
        return
    raise ValidationError(
        gettext("Unknown journey event “%(event)s”.") % {"event": event}, code="unknown_event"
    )


# -- dates -----------------------------------------------------------------------------------------


def _day_bounds(day: datetime.date) -> tuple[datetime.datetime, datetime.datetime]:
    """The local (Asia/Shanghai) day as an aware half-open range, so indexed timestamps are compared."""
    start = timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))
    end = timezone.make_aware(datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time.min))
    return start, end


def solar_anniversary(birthday: datetime.date, year: int) -> datetime.date:
    """The birthday in ``year``; 29 February falls on 28 February in a common year."""
    try:
        return birthday.replace(year=year)
    except ValueError:
        return datetime.date(year, 2, 28)


@functools.lru_cache(maxsize=65536)
def _lunar_month_day(birthday: datetime.date) -> tuple[int, int] | None:
    from lunardate import LunarDate

    try:
        lunar = LunarDate.from_solar_date(birthday.year, birthday.month, birthday.day)
    except ValueError:  # outside the library's range (1900–2099)
        return None
    return lunar.month, lunar.day


@functools.lru_cache(maxsize=65536)
def _lunar_to_solar(year: int, month: int, day: int) -> datetime.date | None:
    """Solar date of lunar ``month``/``day`` in lunar ``year``; day 30 of a short month falls on the
    29th. A birthday in a leap month is kept in the ordinary month of that number (the common custom)."""
    from lunardate import LunarDate

    for candidate in (day, 29) if day == 30 else (day,):
        try:
            return LunarDate(year, month, candidate).to_solar_date()
        except ValueError:
            continue
    return None


def lunar_anniversaries(birthday: datetime.date, around: datetime.date) -> set[datetime.date]:
    """Solar dates of the lunar birthday in the lunar years around ``around`` (one lunar year can end
    in the next solar year, so three are looked at)."""
    month_day = _lunar_month_day(birthday)
    if month_day is None:
        return {solar_anniversary(birthday, year) for year in (around.year - 1, around.year, around.year + 1)}
    dates = {_lunar_to_solar(year, *month_day) for year in (around.year - 1, around.year, around.year + 1)}
    return {d for d in dates if d is not None}


def birthday_falls_on(birthday: datetime.date, day: datetime.date, *, lunar: bool) -> bool:
    if lunar:
        return day in lunar_anniversaries(birthday, day)
    return solar_anniversary(birthday, day.year) == day


def occurrence_key(event_date: datetime.date) -> str:
    """The run key: the event's date. A member has at most one event of a kind per date."""
    return event_date.isoformat()


# -- who has an event on a date ------------------------------------------------------------------------


def _solar_birthday_q(day: datetime.date) -> Q:
    q = Q(birthday__month=day.month, birthday__day=day.day)
    if day.month == 2 and day.day == 28 and not _is_leap(day.year):
        q |= Q(birthday__month=2, birthday__day=29)
    return q & Q(birthday_lunar=False)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _lunar_birthday_member_ids(days: Iterable[datetime.date]) -> list[int]:
    """Members with a lunar birthday on one of ``days``: converted per distinct birth date."""
    days = set(days)
    if not days:
        return []
    by_birthday: dict[datetime.date, list[int]] = {}
    rows = Member.objects.filter(birthday_lunar=True, birthday__isnull=False, status=Member.Status.ACTIVE)
    for pk, birthday in rows.values_list("pk", "birthday").iterator(chunk_size=5000):
        by_birthday.setdefault(birthday, []).append(pk)
    ids: list[int] = []
    for birthday, pks in by_birthday.items():
        if any(day in lunar_anniversaries(birthday, day) for day in days):
            ids.extend(pks)
    return ids


def _birthday_members(days: list[datetime.date]) -> QuerySet[Member]:
    q = Q(pk__in=[])
    for day in days:
        q |= _solar_birthday_q(day)
    lunar_ids = _lunar_birthday_member_ids(days)
    if lunar_ids:
        q |= Q(pk__in=lunar_ids)
    return Member.objects.filter(q)


def _tier_up_member_ids(day: datetime.date) -> list[int]:
    """Members whose tier went up on ``day``: from the loyalty tier history (the nightly evaluation)
    and from the audit trail (a tier set by hand: services write ``{"tier": [old, new]}``, row
    triggers ``{"tier_id": [old, new]}``), compared by tier rank."""
    start, end = _day_bounds(day)
    tiers = Tier._meta.db_table
    sql = f"""
        SELECT e.target_id::bigint
          FROM {AuditEvent._meta.db_table} e
          CROSS JOIN LATERAL (SELECT COALESCE(e.changes->'tier', e.changes->'tier_id') AS pair) c
          JOIN {tiers} new_tier ON new_tier.id = (c.pair->>1)::bigint
          LEFT JOIN {tiers} old_tier ON old_tier.id = (c.pair->>0)::bigint
         WHERE e.at >= %s AND e.at < %s
           AND e.target_type = 'members.member'
           AND jsonb_typeof(c.pair) = 'array'
           AND (old_tier.id IS NULL OR new_tier.rank > old_tier.rank)
    """
    params: list[Any] = [start, end]
    if django_apps.is_installed("loyalty"):
        tier_changes = django_apps.get_model("loyalty", "TierChange")._meta.db_table
        sql += f" UNION SELECT member_id FROM {tier_changes} WHERE direction = 'up' AND at >= %s AND at < %s"
        params += [start, end]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def festivals_on(event: str, day: datetime.date) -> list[str]:
    festivals = Festival.objects.filter(date=day)
    if event.startswith(FESTIVAL_PREFIX):
        festivals = festivals.filter(name=event[len(FESTIVAL_PREFIX) :])
    return list(festivals.order_by("name").values_list("name", flat=True))


def members_with_event(event: str, day: datetime.date) -> QuerySet[Member]:
    """Active members whose ``event`` falls on ``day`` (a local date), as one queryset."""
    start, end = _day_bounds(day)
    members = Member.objects.filter(status=Member.Status.ACTIVE)
    if event == "joined":
        return members.filter(joined_at__gte=start, joined_at__lt=end)
    if event == "first_purchase":
        # First purchase that day and nothing bought on a later day.
        return members.filter(
            first_purchase_at__gte=start, first_purchase_at__lt=end, last_purchase_at__lt=end
        )
    if event == "dormant":
        return members.filter(last_purchase_at__gte=start, last_purchase_at__lt=end)
    if event == "birthday":
        return members.filter(pk__in=_birthday_members([day]).values("pk"))
    if event == "birthday_week":
        if day.weekday() != 0:
            return members.none()
        week = [day + datetime.timedelta(days=i) for i in range(7)]
        return members.filter(pk__in=_birthday_members(week).values("pk"))
    if event == "tier_up":
        ids = _tier_up_member_ids(day)
        return members.filter(pk__in=ids) if ids else members.none()
    if event == "points_expiring":
        expiring = PointsEntry.objects.filter(
            member=OuterRef("pk"), delta__gt=0, expires_at__gte=start, expires_at__lt=end
        )
        return members.filter(Exists(expiring), points_balance__gt=0)
    if event == "festival" or event.startswith(FESTIVAL_PREFIX):
        return members if festivals_on(event, day) else members.none()
    return members.none()


def event_extra(event: str, day: datetime.date) -> dict[str, Any]:
    """Placeholder values shared by the whole run (see campaigns.scripts)."""
    if event == "festival" or event.startswith(FESTIVAL_PREFIX):
        return {"festival": "、".join(festivals_on(event, day))}
    if event == "points_expiring":
        return {"expires_on": day.isoformat()}
    return {}


# -- the tick ------------------------------------------------------------------------------------


@dataclass
class TickResult:
    """What one tick did: runs created, and (step, event date) pairs that were already done."""

    today: datetime.date
    runs: list[CampaignRun] = field(default_factory=list)
    skipped: int = 0
    empty: int = 0
    failed: int = 0


def step_event_dates(step: JourneyStep, today: datetime.date, *, catch_up_days: int) -> list[datetime.date]:
    """Event dates whose fire date (event date + offset) is today or within the catch-up window."""
    offset = datetime.timedelta(days=step.offset_days)
    return [today - datetime.timedelta(days=back) - offset for back in range(catch_up_days, -1, -1)]


def run_journeys(
    today: datetime.date | None = None, *, catch_up_days: int | None = None, actor: Actor | None = None
) -> TickResult:
    """The daily tick: fire every active step for every event date in the window. Safe to repeat."""
    today = today or timezone.localdate()
    catch_up_days = CATCH_UP_DAYS if catch_up_days is None else catch_up_days
    actor = actor or Actor.system("journeys")
    result = TickResult(today=today)
    steps = JourneyStep.objects.filter(journey__active=True).select_related("journey", "script")
    for step in steps:
        done = set(
            CampaignRun.objects.filter(journey_step=step).values_list("occurrence", flat=True)
        )  # read once per step: a re-run does no audience query at all
        for event_date in step_event_dates(step, today, catch_up_days=catch_up_days):
            if occurrence_key(event_date) in done:
                result.skipped += 1
                continue
            try:
                run = fire_step(step, event_date=event_date, today=today, actor=actor)
            except (OperationalError, InterfaceError):
                raise  # the database is away: the task retries the whole (idempotent) tick
            except Exception:
                # One broken step must not hold up the others; it is tried again at the next tick
                # while its event date is still in the window.
                log.exception("journey step %s failed for event date %s", step.pk, event_date)
                result.failed += 1
                continue
            if run is None:
                result.empty += 1
            else:
                result.runs.append(run)
    return result


def step_snapshot(step: JourneyStep, *, event_date: datetime.date, today: datetime.date) -> dict[str, Any]:
    """Everything dispatch needs, frozen: later edits of the step or script do not change this run."""
    return {
        "kind": "journey",
        "journey": step.journey.name,
        "journey_id": step.journey_id,
        "step": step.name,
        "event": step.event,
        "offset_days": step.offset_days,
        "event_date": event_date.isoformat(),
        "fire_date": today.isoformat(),
        "channel": step.channel,
        "script_id": step.script_id,
        "script_title": step.script.title,
        "script_body": step.script.body,
        "title": f"{step.journey.name}：{step.name}"[:100],
        "due_days": step.due_days,
        "priority": step.priority,
        "holdout_percent": "0",
        "extra": event_extra(step.event, event_date),
    }


class _NobodyEligible(Exception):
    """Rolls back the run of a (step, event date) whose audience turned out empty."""


def _write_audience(run: CampaignRun, matched: QuerySet[Member], *, now: datetime.datetime) -> dict[str, int]:
    """Write the run's audience in one statement: the matched members with current consent for the
    channel and under the frequency cap (dispatch's rules), and the counts by reason of exclusion."""
    try:
        audience, audience_params = matched.order_by().values("pk", "home_store_id").query.sql_with_params()
    except EmptyResultSet:  # a condition that matches nobody (e.g. an empty id list)
        raise _NobodyEligible from None
    policy = dispatch.policy_snapshot()
    since = now - datetime.timedelta(days=int(policy["per_days"]))
    sql = f"""
WITH seg AS MATERIALIZED (
    SELECT m.id, m.home_store_id,
           {dispatch.consent_sql(run.snapshot["channel"])} AS consented,
           {dispatch.capped_sql()} AS capped
      FROM {Member._meta.db_table} m
     WHERE m.id IN (SELECT a.id FROM ({audience}) AS a(id, home_store_id))
), written AS (
    INSERT INTO {RunMember._meta.db_table} (run_id, member_id, store_id, holdout)
    SELECT %s, s.id, s.home_store_id, false
      FROM seg s
     WHERE s.consented AND NOT s.capped
    ON CONFLICT (run_id, member_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM seg),
       (SELECT count(*) FROM seg WHERE NOT consented),
       (SELECT count(*) FROM seg WHERE consented AND capped),
       (SELECT count(*) FROM written)
"""
    params = [policy["max_tasks"], since, policy["max_tasks"], *audience_params, run.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        evaluated, no_consent, capped, eligible = cursor.fetchone()
    return {
        "evaluated": evaluated,
        "no_consent": no_consent,
        "frequency_cap": capped,
        "holdout": 0,
        "eligible": eligible,
    }


@audit.service
def fire_step(
    step: JourneyStep, *, event_date: datetime.date, today: datetime.date, actor: Actor
) -> CampaignRun | None:
    """Fire one step for one event date: the run and its audience in one transaction, handed to
    dispatch after commit. None when nobody qualifies or the run already exists."""
    now = timezone.now()
    occurrence = occurrence_key(event_date)
    matched = members_with_event(step.event, event_date)
    if matched.query.is_empty():  # e.g. no festival that day, or not a Monday for a birthday week
        return None
    try:
        with transaction.atomic():  # a savepoint: a conflict or an empty audience leaves nothing behind
            run = CampaignRun.objects.create(
                journey_step=step,
                occurrence=occurrence,
                snapshot=step_snapshot(step, event_date=event_date, today=today),
                state=CampaignRun.State.PENDING,
                attempts=1,
                evaluated_at=now,
            )
            counters = _write_audience(run, matched, now=now)
            if not counters["eligible"]:
                raise _NobodyEligible
    except IntegrityError:  # another tick created this run a moment ago
        return None
    except _NobodyEligible:
        return None
    run.counters = counters
    run.save(update_fields=["counters", "updated_at"])
    audit.record(
        actor,
        "journey.step_fired",
        target=run,
        changes={"step": step.pk, "event_date": event_date.isoformat(), **counters},
    )
    transaction.on_commit(functools.partial(_hand_to_dispatch, run.pk))
    return run


def _hand_to_dispatch(run_id: int) -> None:
    """Dispatch fans the frozen audience out per store (its reconciler resends a lost message)."""
    dispatch.start_run_from_audience(run_id)
