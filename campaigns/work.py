"""The guide's work on tasks: recording an outcome and moving open tasks between guides.

Completing is a compare-and-set (``UPDATE … WHERE state = 'open'``): a double tap, a retried POST over
flaky 4G or a second tab all meet a task that is no longer open and get the first result back instead
of an error. The form carries a client token (one per rendered page); it is kept on the audit event, so
a repeat of the same submission is told apart from a different outcome sent from another tab.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from members import services as member_services
from members.models import ConsentRecord, Member, MemberTag, Tag
from members.privacy import latest_notice_version
from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent
from stores.models import Guide

from .models import CONSENT_CHANNEL, Task, TaskChannel

Outcome = Task.Outcome

# Outcomes that mean the guide actually spoke with the member: they count as "reached" for the
# numbers and for attribution (campaigns.attribution).
REACHED_OUTCOMES = frozenset({Outcome.REACHED, Outcome.VISIT_BOOKED, Outcome.PURCHASED})
# The tag a "wrong number" outcome puts on the member, so HQ can find and fix those numbers.
WRONG_NUMBER_TAG = "号码有误"
NOTE_MAX_LENGTH = 1000
TOKEN_MAX_LENGTH = 64
# A follow-up further out than this is a typo, not a plan.
FOLLOW_UP_MAX_DAYS = 366

CONSENT_FLAGS = {
    "sms": "consent_sms",
    "call": "consent_call",
    "wecom": "consent_wecom",
    "email": "consent_email",
}


def contact_allowed(member: Member, channel: str) -> bool:
    """Whether the member's consent allows a task on ``channel`` now (read from the projected flags).

    An in-store talk is not a remote contact but still a marketing approach: it needs consent on at
    least one channel, as dispatch does.
    """
    consent_channel = CONSENT_CHANNEL.get(channel)
    if consent_channel is None:
        return any(getattr(member, flag) for flag in CONSENT_FLAGS.values())
    return bool(getattr(member, CONSENT_FLAGS[str(consent_channel)]))


@dataclass(frozen=True)
class CompletionResult:
    """What a submission did: ``recorded`` the first time; ``repeated`` for the same submission again
    (same client token); ``conflict`` when the task was already closed some other way."""

    task: Task
    recorded: bool
    repeated: bool = False

    @property
    def conflict(self) -> bool:
        return not self.recorded and not self.repeated


def clean_completion(
    outcome: str, note: str, follow_up_on: datetime.date | None, *, today: datetime.date
) -> str:
    """Validate the form's values; returns the trimmed note. Raises a translated ``ValidationError``."""
    if outcome not in Outcome.values:
        raise ValidationError(_("Choose an outcome."), code="outcome")
    note = (note or "").strip()
    if len(note) > NOTE_MAX_LENGTH:
        raise ValidationError(
            _("The note is too long (at most %(limit)d characters).") % {"limit": NOTE_MAX_LENGTH},
            code="note",
        )
    if follow_up_on is not None and not (
        today <= follow_up_on <= today + datetime.timedelta(days=FOLLOW_UP_MAX_DAYS)
    ):
        raise ValidationError(
            _("The follow-up date must be between today and a year from now."), code="follow_up"
        )
    return note


@audit.service
def complete_task(
    task: Task,
    *,
    outcome: str,
    actor: Actor,
    note: str = "",
    follow_up_on: datetime.date | None = None,
    token: str = "",
    now: datetime.datetime | None = None,
) -> CompletionResult:
    """Record the outcome of an open task, once.

    Consent is checked again here: a member who withdrew since the task was created cannot be
    contacted, so only "asked to stop" may still be recorded. "Asked to stop" withdraws the member's
    marketing consent on the task's channel (every granted channel for an in-store talk) through
    ``record_consent`` in this transaction; "wrong number" tags the member for HQ.
    """
    now = now or timezone.now()
    token = (token or "")[:TOKEN_MAX_LENGTH]
    note = clean_completion(outcome, note, follow_up_on, today=timezone.localdate(now))
    if task.state != Task.State.OPEN:
        return _closed_result(Task.objects.select_related("member").get(pk=task.pk), token)
    # The caller's copy may be stale: the compare-and-set below, not this read, decides who wins.
    member = task.member
    if outcome != Outcome.STOP and not contact_allowed(member, task.channel):
        raise ValidationError(
            _("This member no longer consents to this channel. Only “asked to stop” can be recorded."),
            code="no_consent",
        )
    values = {
        "state": Task.State.DONE,
        "outcome": outcome,
        "note": note,
        "follow_up_on": follow_up_on,
        "completed_at": now,
        "completed_by": actor.user if actor.user is not None and actor.user.pk else None,
        "updated_at": now,
    }
    updated = Task.objects.filter(pk=task.pk, state=Task.State.OPEN).update(**values)
    if not updated:  # another request closed it first (double tap, second tab, a colleague)
        return _closed_result(Task.objects.select_related("member").get(pk=task.pk), token)
    for name, value in values.items():
        setattr(task, name, value)
    audit.record(
        actor,
        "task.completed",
        target=task,
        changes={
            "state": [Task.State.OPEN, Task.State.DONE],
            "outcome": outcome,
            "on_time": now <= task.due_at,
            "follow_up_on": follow_up_on,
            "has_note": bool(note),
            "token": token,
        },
    )
    if outcome == Outcome.STOP:
        _withdraw(member, task, actor=actor, now=now)
    elif outcome == Outcome.WRONG_NUMBER:
        tag, _created = Tag.objects.get_or_create(name=WRONG_NUMBER_TAG)
        member_services.tag_member(member, tag, source=MemberTag.Source.GUIDE, actor=actor)
    return CompletionResult(task=task, recorded=True)


def _closed_result(task: Task, token: str) -> CompletionResult:
    repeated = False
    if token and task.state == Task.State.DONE:
        repeated = AuditEvent.objects.filter(
            action="task.completed",
            target_type=Task._meta.label_lower,
            target_id=str(task.pk),
            changes__token=token,
        ).exists()
    return CompletionResult(task=task, recorded=False, repeated=repeated)


def _withdraw(member: Member, task: Task, *, actor: Actor, now: datetime.datetime) -> None:
    consent_channel = CONSENT_CHANNEL.get(task.channel)
    if consent_channel is not None:
        channels = [str(consent_channel)]
    else:  # said in the store: stop every channel the member had allowed
        member.refresh_from_db(fields=list(CONSENT_FLAGS.values()))
        channels = [channel for channel, flag in CONSENT_FLAGS.items() if getattr(member, flag)]
    version = latest_notice_version()
    for channel in channels:
        member_services.record_consent(
            member,
            channel=channel,
            action=ConsentRecord.Action.WITHDRAW,
            source=ConsentRecord.Source.GUIDE,
            method=ConsentRecord.Method.VERBAL,
            policy_version=version,
            actor=actor,
            evidence={"task": task.pk},
            store=task.store,
            at=now,
        )


@audit.service
def reassign_tasks(tasks: Iterable[Task] | QuerySet[Task], to_guide: Guide, *, actor: Actor) -> int:
    """Give the open ones of ``tasks`` to ``to_guide`` (an active colleague of the same store).

    Closed tasks keep their guide: what was done stays credited to whoever did it. Returns how many
    moved. One UPDATE and one INSERT of audit events, however many tasks.
    """
    if not to_guide.is_active_staff:
        raise ValidationError(
            _("%(guide)s has left and cannot take tasks.") % {"guide": to_guide}, code="left"
        )
    ids = [t.pk for t in tasks]
    movable = list(
        Task.objects.select_for_update()
        .filter(pk__in=ids, state=Task.State.OPEN)
        .exclude(guide_id=to_guide.pk)
        .order_by("pk")
    )
    if any(t.store_id != to_guide.store_id for t in movable):
        raise ValidationError(_("Tasks can only go to a guide of the same store."), code="wrong_store")
    if not movable:
        return 0
    previous = {t.pk: t.guide_id for t in movable}
    Task.objects.filter(pk__in=previous).update(guide=to_guide, updated_at=timezone.now())
    for task in movable:
        task.guide = to_guide
    # One INSERT per previous guide (a handful): each event keeps who had the task before.
    by_previous: dict[int | None, list[Task]] = {}
    for task in movable:
        by_previous.setdefault(previous[task.pk], []).append(task)
    for old_guide, group in by_previous.items():
        audit.record_many(actor, "task.reassigned", group, changes={"guide": [old_guide, to_guide.pk]})
    return len(movable)


__all__ = [
    "REACHED_OUTCOMES",
    "CompletionResult",
    "TaskChannel",
    "clean_completion",
    "complete_task",
    "contact_allowed",
    "reassign_tasks",
]
