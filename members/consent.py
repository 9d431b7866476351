"""Consent: the rules that turn the append-only consent ledger into the member's marketing flags.

The ledger (``ConsentRecord``) is the truth; ``Member.consent_<channel>`` is its projection, kept on the
member so that segments and task dispatch filter on a column. The rule is written twice, on purpose:

- ``consent_granted``: a pure function over a member's events, used when one event is recorded
  (``members.services.record_consent``) and by ``verify_consent``, which replays the ledger in Python;
- ``project_consent``: one set-based SQL UPDATE for some or all members (nightly, after bulk imports).

Tests hold the two equal on random ledgers, and ``verify_consent`` proves the stored flags equal the
replay. The rule, for a member × channel × purpose:

1. default deny: no event, no consent;
2. the latest event (by ``at``, then id) decides: only a grant or a guardian grant opens;
3. the grant counts only under a privacy-notice version whose purposes include the purpose, so a
   version that adds a purpose needs new consent for it: grants under older versions never cover it;
4. a member under 14 today (PIPL art. 31; from the birthday, on the Asia/Shanghai date) needs a
   guardian grant. A guardian grant stays valid after the 14th birthday; a birthday corrected to under
   14 voids a plain grant at the next projection. An unknown birthday counts as 14 or older (the member
   declared it when joining). Age is judged on the day of evaluation, not the day of the grant:
   ``record_consent`` refuses a plain grant from a member under 14, so only rows written around it
   (COPY, raw SQL, a later birthday correction) can hold one, and such a grant counts from the 14th
   birthday on.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from scrm import audit
from scrm.audit import Actor

from .models import ConsentRecord, ContactChannel, Member, PrivacyNotice

Action = ConsentRecord.Action
Purpose = ConsentRecord.Purpose

# The member's marketing flag for each contact channel.
CONSENT_FLAG: dict[str, str] = {
    ContactChannel.SMS: "consent_sms",
    ContactChannel.CALL: "consent_call",
    ContactChannel.WECOM: "consent_wecom",
    ContactChannel.EMAIL: "consent_email",
}
GRANTING_ACTIONS = frozenset({Action.GRANT, Action.GUARDIAN_GRANT})
WITHDRAWING_ACTIONS = frozenset({Action.WITHDRAW, Action.REFUSE})

# PIPL art. 31: processing personal information of a minor under 14 needs a parent's or guardian's consent.
GUARDIAN_AGE = 14

# A clock that runs a little ahead (a till, a phone) may date an event slightly in the future; a later
# date than that is refused, since a future-dated grant would outrank every withdrawal until its date.
CLOCK_SKEW = datetime.timedelta(minutes=5)

# Called as handler(member, channel, actor) inside the transaction of every withdrawal or refusal, on
# any purpose, after the event is written and the flag projected. An exception rolls the withdrawal
# back. Campaign tasks register here to cancel the open tasks on that channel ("consent withdrawn").
WithdrawalHandler = Callable[[Member, str, Actor], None]
WITHDRAWAL_HANDLERS: list[WithdrawalHandler] = []

NoticePurposes = Mapping[str, frozenset[str]]


# --------------------------------------------------------------------------------------------------
# Pure rules


def local_today(now: datetime.datetime | None = None) -> datetime.date:
    """The date in the project's time zone (Asia/Shanghai), whatever zone a request has activated."""
    return timezone.localdate(now or timezone.now(), timezone.get_default_timezone())


@dataclass(frozen=True)
class ConsentEvent:
    """One ledger row, as much of it as the rule reads."""

    id: int
    channel: str
    purpose: str
    action: str
    policy_version: str
    at: datetime.datetime

    @classmethod
    def from_record(cls, record: ConsentRecord) -> ConsentEvent:
        return cls(
            id=record.pk,
            channel=record.channel,
            purpose=record.purpose,
            action=record.action,
            policy_version=record.policy_version,
            at=record.at,
        )


def guardian_age_cutoff(on: datetime.date) -> datetime.date:
    """The 14th-birthday cutoff: a member born after this date is under 14 on ``on``.

    29 February becomes 28 February in a common year, as PostgreSQL's ``date - interval`` does.
    """
    year = on.year - GUARDIAN_AGE
    try:
        return on.replace(year=year)
    except ValueError:
        return on.replace(year=year, day=28)


def is_under_guardian_age(birthday: datetime.date | None, on: datetime.date) -> bool:
    """True if a member with ``birthday`` is under 14 on ``on``; an unknown birthday counts as 14+."""
    return birthday is not None and birthday > guardian_age_cutoff(on)


def latest_event(events: Iterable[ConsentEvent], *, channel: str, purpose: str) -> ConsentEvent | None:
    """The event that decides: the latest by time, the higher id between two at the same moment."""
    relevant = (e for e in events if e.channel == channel and e.purpose == purpose)
    return max(relevant, key=lambda e: (e.at, e.id), default=None)


def consent_granted(
    events: Iterable[ConsentEvent],
    *,
    channel: str,
    purpose: str = Purpose.MARKETING,
    birthday: datetime.date | None,
    today: datetime.date,
    notices: NoticePurposes,
) -> bool:
    """The rule (see the module docstring) for one member × channel × purpose; ``notices`` maps version →
    purposes."""
    event = latest_event(events, channel=channel, purpose=purpose)
    if event is None or event.action not in GRANTING_ACTIONS:
        return False
    if purpose not in notices.get(event.policy_version, frozenset()):
        return False
    if event.action == Action.GUARDIAN_GRANT:
        return True
    return not is_under_guardian_age(birthday, today)


def projected_flags(
    events: Iterable[ConsentEvent],
    *,
    birthday: datetime.date | None,
    today: datetime.date,
    notices: NoticePurposes,
) -> dict[str, bool]:
    """``{"consent_sms": bool, ...}``: the marketing flags the ledger gives a member."""
    events = list(events)
    return {
        flag: consent_granted(
            events,
            channel=channel,
            purpose=Purpose.MARKETING,
            birthday=birthday,
            today=today,
            notices=notices,
        )
        for channel, flag in CONSENT_FLAG.items()
    }


def check_consent_event(
    *,
    action: str,
    purpose: str,
    policy_version: str,
    at: datetime.datetime,
    birthday: datetime.date | None,
    now: datetime.datetime,
    notices: NoticePurposes,
) -> None:
    """Refuse, with a translated ``ValidationError``, an event the ledger must not take.

    Grants must be valid by the rule. Withdrawals and refusals are never refused for the notice
    version or the member's age: stopping must be as easy as agreeing.
    """
    if at > now + CLOCK_SKEW:
        raise ValidationError(_("Consent cannot be recorded with a time in the future."), code="future")
    if action not in GRANTING_ACTIONS:
        return
    purposes = notices.get(policy_version)
    if purposes is None:
        raise ValidationError(
            _("Privacy notice version %(version)s does not exist.") % {"version": policy_version},
            code="unknown_notice",
        )
    if purpose not in purposes:
        raise ValidationError(
            _("Privacy notice version %(version)s does not ask consent for %(purpose)s.")
            % {"version": policy_version, "purpose": _purpose_label(purpose)},
            code="purpose_not_in_notice",
        )
    if action == Action.GRANT and is_under_guardian_age(birthday, local_today(now)):
        raise ValidationError(
            _("A guardian must grant consent for members under 14."), code="guardian_required"
        )


def _purpose_label(purpose: str) -> str:
    try:
        return str(Purpose(purpose).label)
    except ValueError:
        return purpose


# --------------------------------------------------------------------------------------------------
# Selectors


def notice_purposes() -> dict[str, frozenset[str]]:
    """Every published notice version → the purposes it asks consent for (a handful of rows)."""
    return {
        version: frozenset(purposes)
        for version, purposes in PrivacyNotice.objects.values_list("version", "purposes")
    }


_EVENT_FIELDS = ("member_id", "id", "channel", "purpose", "action", "policy_version", "at")


def member_consent_events(
    member_id: int, *, channel: str | None = None, purpose: str | None = None
) -> list[ConsentEvent]:
    """A member's ledger (optionally one channel and/or purpose) in the shape the rule reads."""
    rows = ConsentRecord.objects.filter(member_id=member_id).order_by()
    if channel is not None:
        rows = rows.filter(channel=channel)
    if purpose is not None:
        rows = rows.filter(purpose=purpose)
    return [ConsentEvent(*row[1:]) for row in rows.values_list(*_EVENT_FIELDS)]


def has_consent(
    member: Member, *, channel: str, purpose: str = Purpose.MARKETING, today: datetime.date | None = None
) -> bool:
    """Consent for any purpose, replayed from the ledger (marketing is also on the member's flags)."""
    return consent_granted(
        member_consent_events(member.pk, channel=channel, purpose=purpose),
        channel=channel,
        purpose=purpose,
        birthday=member.birthday,
        today=today or local_today(),
        notices=notice_purposes(),
    )


@dataclass(frozen=True)
class FlagMismatch:
    member_id: int
    flag: str
    stored: bool
    expected: bool


@dataclass
class ConsentFlagCheck:
    """What ``check_consent_flags`` found: members checked, members whose flags differ, the first few."""

    members_checked: int = 0
    members_mismatched: int = 0
    first_mismatches: list[FlagMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.members_mismatched == 0


FLAG_COLUMNS = tuple(CONSENT_FLAG.values())


def _mismatches(
    member_id: int,
    birthday: datetime.date | None,
    stored: Sequence[bool],
    events: Iterable[ConsentEvent],
    *,
    today: datetime.date,
    notices: NoticePurposes,
) -> list[FlagMismatch]:
    expected = projected_flags(events, birthday=birthday, today=today, notices=notices)
    return [
        FlagMismatch(member_id, flag, value, expected[flag])
        for flag, value in zip(FLAG_COLUMNS, stored, strict=True)
        if value != expected[flag]
    ]


def _marketing_events_by_member(member_ids: Sequence[int]) -> dict[int, list[ConsentEvent]]:
    by_member: dict[int, list[ConsentEvent]] = {}
    rows = (
        ConsentRecord.objects.filter(member_id__in=member_ids, purpose=Purpose.MARKETING)
        .order_by()
        .values_list(*_EVENT_FIELDS)
    )
    for row in rows.iterator(chunk_size=10_000):
        by_member.setdefault(row[0], []).append(ConsentEvent(*row[1:]))
    return by_member


def _recheck_locked(member_id: int, *, today: datetime.date, notices: NoticePurposes) -> list[FlagMismatch]:
    """Read one member again under its row lock, so a consent recorded meanwhile is not reported."""
    with transaction.atomic():
        row = (
            Member.objects.select_for_update()
            .filter(pk=member_id)
            .values_list("birthday", *FLAG_COLUMNS)
            .first()
        )
        if row is None:
            return []
        events = member_consent_events(member_id, purpose=Purpose.MARKETING)
        return _mismatches(member_id, row[0], row[1:], events, today=today, notices=notices)


# 2,000 members per batch: two queries each (members, their marketing events); memory stays flat
# however many members there are.
VERIFY_BATCH_SIZE = 2000


def check_consent_flags(
    *, batch_size: int = VERIFY_BATCH_SIZE, keep: int = 20, today: datetime.date | None = None
) -> ConsentFlagCheck:
    """Replay the ledger in Python for every member and compare with the stored marketing flags.

    Independent of the SQL in ``project_consent``. Members are read in id order, one batch at a
    time; a member that looks wrong is read again under its row lock before being reported, so
    consent recorded while the check runs does not raise false alarms.
    """
    today = today or local_today()
    notices = notice_purposes()
    check = ConsentFlagCheck()
    last_id = 0
    while True:
        batch = list(
            Member.objects.filter(pk__gt=last_id)
            .order_by("pk")
            .values_list("pk", "birthday", *FLAG_COLUMNS)[:batch_size]
        )
        if not batch:
            return check
        last_id = batch[-1][0]
        events = _marketing_events_by_member([row[0] for row in batch])
        for member_id, birthday, *stored in batch:
            check.members_checked += 1
            found = _mismatches(
                member_id, birthday, stored, events.get(member_id, ()), today=today, notices=notices
            )
            if found:
                found = _recheck_locked(member_id, today=today, notices=notices)
            if found:
                check.members_mismatched += 1
                check.first_mismatches.extend(found[: max(0, keep - len(check.first_mismatches))])


# --------------------------------------------------------------------------------------------------
# Services


def _projection_sql(*, only_some: bool) -> str:
    # Column names and channel values are this module's constants, never input.
    wanted = ",\n           ".join(
        f"coalesce(bool_or(v.channel = '{channel}'), false) AS {flag}"
        for channel, flag in CONSENT_FLAG.items()
    )
    assignments = ", ".join(f"{flag} = w.{flag}" for flag in FLAG_COLUMNS)
    stored = ", ".join(f"m.{flag}" for flag in FLAG_COLUMNS)
    computed = ", ".join(f"w.{flag}" for flag in FLAG_COLUMNS)
    only_events = "AND c.member_id = ANY(%(ids)s)" if only_some else ""
    only_members = "WHERE m.id = ANY(%(ids)s)" if only_some else ""
    return f"""
WITH latest AS (
    SELECT DISTINCT ON (c.member_id, c.channel) c.member_id, c.channel, c.action, c.policy_version, c.at
      FROM members_consentrecord c
     WHERE c.purpose = %(purpose)s {only_events}
     ORDER BY c.member_id, c.channel, c.at DESC, c.id DESC
), valid AS (
    SELECT l.member_id, l.channel
      FROM latest l
      JOIN members_member m ON m.id = l.member_id
     WHERE l.action = ANY(%(granting)s)
       AND EXISTS (SELECT 1 FROM members_privacynotice n
                    WHERE n.version = l.policy_version AND %(purpose)s = ANY(n.purposes))
       AND (l.action = %(guardian)s
            OR m.birthday IS NULL
            OR m.birthday <= %(cutoff)s)
), wanted AS (
    SELECT m.id AS member_id,
           {wanted}
      FROM members_member m
      LEFT JOIN valid v ON v.member_id = m.id
     {only_members}
     GROUP BY m.id
)
UPDATE members_member m
   SET {assignments}, updated_at = %(now)s
  FROM wanted w
 WHERE m.id = w.member_id
   AND ({stored}) IS DISTINCT FROM ({computed})
"""


@audit.service
def project_consent(
    member_ids: Iterable[int] | None = None,
    *,
    actor: Actor | None = None,
    today: datetime.date | None = None,
) -> int:
    """Recompute the marketing flags of ``member_ids`` (every member when None) from the ledger.

    One UPDATE (the latest marketing event per member × channel with ``DISTINCT ON``) that writes only
    the rows whose flags change, and one audit event with their number, which it returns. Run it
    nightly and after writing consent in bulk (imports, merges) or correcting birthdays.
    """
    now = timezone.now()
    today = today or local_today(now)
    params: dict[str, Any] = {
        "purpose": Purpose.MARKETING.value,
        "granting": sorted(a.value for a in GRANTING_ACTIONS),
        "guardian": Action.GUARDIAN_GRANT.value,
        "cutoff": guardian_age_cutoff(today),
        "now": now,
    }
    ids: list[int] | None = None
    if member_ids is not None:
        ids = sorted({int(i) for i in member_ids})
        params["ids"] = ids
    changed = 0
    if ids is None or ids:
        with connection.cursor() as cursor:
            cursor.execute(_projection_sql(only_some=ids is not None), params)
            changed = cursor.rowcount
    audit.record(
        actor or Actor.system("project_consent"),
        "consent.projected",
        target_type=Member._meta.label_lower,
        target_id="*",
        changes={"changed": changed, "members": "all" if ids is None else len(ids), "today": today},
    )
    return changed


def run_withdrawal_handlers(member: Member, channel: str, actor: Actor) -> None:
    """Call every registered handler; reads the list at call time, so tests and apps may extend it."""
    for handler in list(WITHDRAWAL_HANDLERS):
        handler(member, channel, actor)


def _clean_purposes(purposes: Iterable[str]) -> list[str]:
    wanted = {str(p).strip() for p in purposes if str(p).strip()}
    unknown = sorted(wanted - set(Purpose.values))
    if unknown:
        raise ValidationError(
            _("Unknown consent purpose: %(purposes)s.") % {"purposes": ", ".join(unknown)},
            code="unknown_purpose",
        )
    if not wanted:
        raise ValidationError(_("A privacy notice must ask consent for at least one purpose."), code="empty")
    return [p for p in Purpose.values if p in wanted]  # the choices' order, so versions compare cleanly


def previous_notice(notice: PrivacyNotice) -> PrivacyNotice | None:
    """The version published just before ``notice``."""
    return (
        PrivacyNotice.objects.filter(published_at__lte=notice.published_at)
        .exclude(pk=notice.pk)
        .order_by("-published_at", "-id")
        .first()
    )


def purposes_added(notice: PrivacyNotice) -> list[str]:
    """Purposes ``notice`` asks for that the version before it did not: consent to ask again."""
    previous = previous_notice(notice)
    before = set(previous.purposes) if previous else set()
    return [p for p in notice.purposes if p not in before]


@audit.service
def publish_privacy_notice(
    version: str, purposes: Iterable[str], summary: str = "", *, actor: Actor
) -> PrivacyNotice:
    """Publish a new privacy-notice version; versions are never edited afterwards.

    Grants made under earlier versions do not cover a purpose this one adds (the rule checks the
    purpose against the version each grant was made under): consent for it must be asked again.
    """
    version = version.strip()
    if not version:
        raise ValidationError(_("A privacy notice needs a version."), code="required")
    cleaned = _clean_purposes(purposes)
    try:
        with transaction.atomic():
            notice = PrivacyNotice.objects.create(
                version=version, purposes=cleaned, published_at=timezone.now(), summary=summary.strip()
            )
    except IntegrityError:
        raise ValidationError(
            _("Privacy notice version %(version)s already exists.") % {"version": version}, code="duplicate"
        ) from None
    previous = previous_notice(notice)
    before = set(previous.purposes) if previous else set()
    audit.record(
        actor,
        "privacy_notice.published",
        target=notice,
        changes={
            "version": version,
            "purposes": cleaned,
            "previous": previous.version if previous else None,
            "added_purposes": [p for p in cleaned if p not in before],
            "removed_purposes": [p for p in Purpose.values if p in before and p not in cleaned],
        },
    )
    return notice
