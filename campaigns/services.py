"""Campaign writes: approve, launch, pause, resume, cancel, the schedule tick and event triggers.

Each service is one transaction with its audit event. Status changes are compare-and-set updates, so
a double click or two operators at once change a campaign once. Dispatch itself is campaigns.dispatch.

Lifecycle::

    draft ──approve──► approved ──launch──► running ⇄ paused        running ──(once: run done)──► finished
      └──────────────────────── cancel (any state but cancelled) ──────────────────────► cancelled

Approving, launching and resuming need ``campaigns.approve_campaign``; pausing and cancelling (the
direction that stops contact) need only ``campaigns.change_campaign``. Cancelling also cancels the
open tasks of every run of the campaign (reason "campaign") and stops runs still in progress.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from members.models import Member, Order
from scrm import audit
from scrm.audit import Actor

from . import dispatch
from .models import Campaign, CampaignRun, Task

Status = Campaign.Status

# Events an event campaign can wait for; the paths that record them call ``trigger_campaign_event``.
CAMPAIGN_EVENTS: dict[str, Any] = {
    "member_joined": _lazy("A member joined"),
    "order_paid": _lazy("An order was paid"),
}
APPROVE_PERMISSION = "campaigns.approve_campaign"
CHANGE_PERMISSION = "campaigns.change_campaign"
ONCE_OCCURRENCE = "once"


def _require(actor: Actor, permission: str) -> None:
    user = actor.user
    if user is None:  # the system (scheduler, reconciler) acts on already approved campaigns
        return
    if not user.has_perm(permission):
        raise PermissionDenied(_("You may not do this to campaigns."))


def _transition(campaign: Campaign, *, allowed: Iterable[str], to: str, **also: Any) -> Campaign:
    """Compare-and-set the status; a translated error and no change when the campaign has moved on."""
    now = timezone.now()
    updated = Campaign.objects.filter(pk=campaign.pk, status__in=list(allowed)).update(
        status=to, updated_at=now, **also
    )
    current = Campaign.objects.select_related("segment", "script").get(pk=campaign.pk)
    if not updated:
        raise ValidationError(
            _("The campaign “%(name)s” is %(status)s and cannot be changed this way.")
            % {"name": current.name, "status": current.get_status_display()},
            code="wrong_status",
        )
    return current


def validate_campaign(campaign: Campaign) -> None:
    """What a campaign needs before it can be approved; a translated error per problem."""
    from .scripts import validate_script
    from .segments import validate_definition

    errors: list[ValidationError] = []
    try:
        validate_definition(campaign.segment.definition)
    except ValidationError as error:
        errors.append(
            ValidationError(
                _("The segment “%(segment)s” is not valid: %(error)s")
                % {"segment": campaign.segment.name, "error": "; ".join(error.messages)}
            )
        )
    try:
        validate_script(campaign.script.body)
    except ValidationError as error:
        errors.extend(ValidationError(message) for message in error.messages)
    if campaign.schedule == Campaign.Schedule.DAILY and campaign.run_at is None:
        errors.append(ValidationError(_("A daily campaign needs the time of day it runs at.")))
    if campaign.schedule == Campaign.Schedule.EVENT and not campaign.event:
        errors.append(ValidationError(_("A campaign run on an event needs the event.")))
    if errors:
        raise ValidationError(errors)


@audit.service
def approve_campaign(campaign: Campaign, *, actor: Actor) -> Campaign:
    _require(actor, APPROVE_PERMISSION)
    validate_campaign(campaign)
    campaign = _transition(
        campaign,
        allowed=[Status.DRAFT],
        to=Status.APPROVED,
        approved_by=actor.user if actor.user is not None and actor.user.pk else None,
        approved_at=timezone.now(),
    )
    audit.record(
        actor, "campaign.approved", target=campaign, changes={"status": [Status.DRAFT, Status.APPROVED]}
    )
    return campaign


@audit.service
def launch_campaign(
    campaign: Campaign, *, actor: Actor, now: datetime.datetime | None = None
) -> CampaignRun | None:
    """Start an approved campaign: a one-off or daily one opens its first run now if it is due
    (after commit, evaluation follows); an event campaign waits for its events. The run, or None."""
    _require(actor, APPROVE_PERMISSION)
    campaign = _transition(campaign, allowed=[Status.APPROVED], to=Status.RUNNING)
    audit.record(
        actor, "campaign.launched", target=campaign, changes={"status": [Status.APPROVED, Status.RUNNING]}
    )
    return open_due_run(campaign, actor=actor, now=now or timezone.now())


@audit.service
def pause_campaign(campaign: Campaign, *, actor: Actor) -> Campaign:
    """Stop creating tasks: runs in progress stop at their next store; open tasks stay open."""
    _require(actor, CHANGE_PERMISSION)
    campaign = _transition(campaign, allowed=[Status.RUNNING], to=Status.PAUSED)
    audit.record(
        actor, "campaign.paused", target=campaign, changes={"status": [Status.RUNNING, Status.PAUSED]}
    )
    return campaign


@audit.service
def resume_campaign(campaign: Campaign, *, actor: Actor) -> Campaign:
    """Running again: runs left unfinished by the pause continue where they stopped."""
    _require(actor, APPROVE_PERMISSION)
    campaign = _transition(campaign, allowed=[Status.PAUSED], to=Status.RUNNING)
    audit.record(
        actor, "campaign.resumed", target=campaign, changes={"status": [Status.PAUSED, Status.RUNNING]}
    )
    unfinished = list(
        CampaignRun.objects.filter(
            campaign=campaign,
            state__in=[
                CampaignRun.State.PENDING,
                CampaignRun.State.EVALUATING,
                CampaignRun.State.DISPATCHING,
            ],
        ).values_list("pk", flat=True)
    )
    if unfinished:
        transaction.on_commit(functools.partial(dispatch.resend_pending, unfinished))
    return campaign


@audit.service
def cancel_campaign(campaign: Campaign, *, actor: Actor) -> int:
    """Cancel the campaign, its unfinished runs and its open tasks; the number of tasks cancelled."""
    _require(actor, CHANGE_PERMISSION)
    before = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).first()
    campaign = _transition(
        campaign,
        allowed=[Status.DRAFT, Status.APPROVED, Status.RUNNING, Status.PAUSED, Status.FINISHED],
        to=Status.CANCELLED,
    )
    now = timezone.now()
    # Runs first: a store creating tasks holds its run FOR SHARE, so this waits for it and the
    # tasks it made are cancelled below; a store starting later sees the run cancelled.
    runs = CampaignRun.objects.filter(
        campaign=campaign,
        state__in=[CampaignRun.State.PENDING, CampaignRun.State.EVALUATING, CampaignRun.State.DISPATCHING],
    ).update(state=CampaignRun.State.CANCELLED, finished_at=now, updated_at=now)
    tasks = Task.objects.filter(run__campaign=campaign, state=Task.State.OPEN).update(
        state=Task.State.CANCELLED, cancel_reason=Task.CancelReason.CAMPAIGN, updated_at=now
    )
    audit.record(
        actor,
        "campaign.cancelled",
        target=campaign,
        changes={"status": [before, Status.CANCELLED], "runs_stopped": runs, "tasks_cancelled": tasks},
    )
    return tasks


# --------------------------------------------------------------------------------------------------
# Schedules


def due_occurrence(campaign: Campaign, now: datetime.datetime) -> str | None:
    """The occurrence a running campaign should have a run for at ``now``, or None.

    Once: "once", from ``starts_at`` (or at launch). Daily: the local date, from ``run_at`` on that
    day, between ``starts_at`` and ``ends_on``. Event campaigns open runs only on events.
    """
    local = timezone.localtime(now, timezone.get_default_timezone())
    if campaign.starts_at is not None and now < campaign.starts_at:
        return None
    if campaign.schedule == Campaign.Schedule.ONCE:
        return ONCE_OCCURRENCE
    if campaign.schedule == Campaign.Schedule.DAILY:
        if campaign.ends_on is not None and local.date() > campaign.ends_on:
            return None
        if campaign.run_at is not None and local.time() < campaign.run_at:
            return None
        return local.date().isoformat()
    return None


def open_due_run(campaign: Campaign, *, actor: Actor, now: datetime.datetime) -> CampaignRun | None:
    occurrence = due_occurrence(campaign, now)
    if occurrence is None:
        return None
    run, _created = dispatch.open_campaign_run(campaign, occurrence=occurrence, actor=actor, now=now)
    return run


@audit.service
def run_campaign_schedules(*, now: datetime.datetime | None = None) -> list[CampaignRun]:
    """The beat tick: open every run that is due (a repeat opens nothing); finish daily campaigns
    past their last day. Runs of the day are keyed by the date, so no ETA is ever scheduled."""
    now = now or timezone.now()
    actor = Actor.system("schedule")
    today = timezone.localdate(now, timezone.get_default_timezone())
    ended = Campaign.objects.filter(
        status=Status.RUNNING, schedule=Campaign.Schedule.DAILY, ends_on__lt=today
    ).update(status=Status.FINISHED, updated_at=now)
    if ended:
        audit.record(
            actor,
            "campaign.finished",
            target_type="campaigns.campaign",
            target_id="*",
            changes={"campaigns": ended},
        )
    opened = []
    running = Campaign.objects.filter(
        status=Status.RUNNING, schedule__in=[Campaign.Schedule.ONCE, Campaign.Schedule.DAILY]
    ).select_related("segment", "script")
    for campaign in running:
        occurrence = due_occurrence(campaign, now)
        if occurrence is None:
            continue
        run, created = dispatch.open_campaign_run(campaign, occurrence=occurrence, actor=actor, now=now)
        if created:
            opened.append(run)
    return opened


@audit.service
def trigger_campaign_event(
    event: str, member_ids: Iterable[int], *, key: str, actor: Actor | None = None
) -> list[CampaignRun]:
    """Open a run of every running campaign waiting for ``event``, for these members only.

    ``key`` names the occurrence (an order number, a date and member id …): the same key twice opens
    nothing new, so callers may repeat themselves. Call it inside the transaction that recorded the
    event; evaluation runs after commit.
    """
    ids = sorted({int(i) for i in member_ids})
    if not ids:
        return []
    actor = actor or Actor.system("event")
    runs = []
    campaigns = Campaign.objects.filter(
        status=Status.RUNNING, schedule=Campaign.Schedule.EVENT, event=event
    ).select_related("segment", "script")
    for campaign in campaigns:
        run, created = dispatch.open_campaign_run(
            campaign, occurrence=f"{event}:{key}"[:64], actor=actor, member_ids=ids
        )
        if created:
            runs.append(run)
    return runs


def on_member_joined(member: Member, actor: Actor) -> None:
    """members.services.JOIN_HOOKS: a new member opens a run of each campaign waiting for joins."""
    trigger_campaign_event("member_joined", [member.pk], key=str(member.pk), actor=actor)


def on_orders_paid(orders: list[Order], member_ids: list[int], actor: Actor) -> None:
    """members.services.ORDER_HOOKS: a batch of paid orders opens one run per waiting campaign."""
    if orders and member_ids:
        ids = [o.pk for o in orders]
        trigger_campaign_event("order_paid", member_ids, key=f"{min(ids)}-{max(ids)}", actor=actor)
