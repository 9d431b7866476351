"""Every write to members and their records. Each service is one transaction and leaves an audit event."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from scrm import audit
from scrm.audit import Actor
from scrm.masking import mask_mobile
from stores.models import Guide, Store

from . import consent
from .consent import CONSENT_FLAG, GRANTING_ACTIONS, WITHDRAWING_ACTIONS  # noqa: F401 (re-exported)
from .metrics import refresh_member_metrics
from .models import (
    Channel,
    ConsentRecord,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    OrderLine,
    PointsEntry,
    Tag,
    Tier,
)
from .phones import normalize_mobile


@audit.service
def create_member(
    *,
    mobile: str,
    home_store: Store,
    actor: Actor,
    name: str = "",
    gender: str = Member.Gender.UNKNOWN,
    birthday: datetime.date | None = None,
    joined_at: datetime.datetime | None = None,
    join_channel: str = Channel.STORE,
    tier: Tier | None = None,
    guide: Guide | None = None,
    region: str = "CN",
) -> Member:
    """Register a member. The mobile is normalised to E.164; a duplicate is refused, not merged."""
    e164 = normalize_mobile(mobile, region)
    if Member.objects.filter(mobile=e164).exists():
        raise ValidationError(_("A member with this mobile number already exists."), code="duplicate")
    member = Member(
        mobile=e164,
        name=name.strip(),
        gender=gender,
        birthday=birthday,
        home_store=home_store,
        joined_at=joined_at or timezone.now(),
        join_channel=join_channel,
        tier=tier,
    )
    member.full_clean(exclude=["guide"])
    member.save(force_insert=True)
    audit.record(
        actor,
        "member.created",
        target=member,
        # Masked: the audit trail is append-only and outlives an erasure, so it keeps no full number.
        changes={"mobile": mask_mobile(e164), "home_store": home_store.code, "join_channel": join_channel},
    )
    if guide is not None:
        member = assign_guide(member, guide, actor=actor, reason=GuideAssignment.Reason.JOINED)
    return member


EDITABLE_MEMBER_FIELDS = frozenset({"name", "gender", "birthday", "home_store", "tier", "join_channel"})


@audit.service
def update_member(member: Member, *, actor: Actor, **values: Any) -> Member:
    """Change a member's editable attributes; records old and new values of what changed."""
    unknown = set(values) - EDITABLE_MEMBER_FIELDS - {"mobile"}
    if unknown:
        raise ValueError(f"not editable through update_member: {sorted(unknown)}")
    if "mobile" in values:
        values["mobile"] = normalize_mobile(values["mobile"])
        if Member.objects.filter(mobile=values["mobile"]).exclude(pk=member.pk).exists():
            raise ValidationError(_("A member with this mobile number already exists."), code="duplicate")
    member = Member.objects.select_for_update().get(pk=member.pk)
    changes = audit.diff(member, values)
    if not changes:
        return member
    if "mobile" in changes:
        changes["mobile"] = [mask_mobile(number) for number in changes["mobile"]]
    for name, value in values.items():
        setattr(member, name, value)
    member.full_clean(exclude=["guide"])
    member.save(update_fields=[*values, "updated_at"])
    audit.record(actor, "member.updated", target=member, changes=changes)
    return member


@audit.service
def assign_guide(member: Member, guide: Guide | None, *, actor: Actor, reason: str) -> Member:
    """Bind ``member`` to ``guide`` (or unbind with None), closing the previous binding in the history."""
    member = Member.objects.select_for_update().get(pk=member.pk)
    if guide is not None:
        if not guide.is_active_staff:
            raise ValidationError(_("%(guide)s has left and cannot take members.") % {"guide": guide})
        if guide.store_id != member.home_store_id:
            raise ValidationError(_("The guide must work in the member's home store."), code="wrong_store")
    if member.guide_id == (guide.pk if guide else None):
        return member
    now = timezone.now()
    GuideAssignment.objects.filter(member=member, ended_at__isnull=True).update(ended_at=now)
    if guide is not None:
        GuideAssignment.objects.create(
            member=member,
            guide=guide,
            started_at=now,
            reason=reason,
            actor=actor.user if actor.user else None,
        )
    previous = member.guide_id
    member.guide = guide
    member.save(update_fields=["guide", "updated_at"])
    audit.record(
        actor,
        "member.guide_assigned",
        target=member,
        changes={"guide": [previous, guide.pk if guide else None], "reason": reason},
    )
    return member


@audit.service
def add_points(
    member: Member,
    *,
    delta: int,
    kind: str,
    actor: Actor,
    reason: str = "",
    ref: str = "",
    expires_at: datetime.datetime | None = None,
) -> PointsEntry:
    """Append a ledger row; the database moves the balance and refuses to let it go below zero."""
    if delta == 0:
        raise ValidationError(_("A points movement cannot be zero."), code="zero")
    try:
        with transaction.atomic():
            entry = PointsEntry.objects.create(
                member=member,
                delta=delta,
                kind=kind,
                reason=reason,
                ref=ref,
                expires_at=expires_at,
                actor=actor.user if actor.user else None,
            )
    except IntegrityError as error:
        if "member_points_non_negative" in str(error):
            raise ValidationError(
                _("Not enough points: the balance cannot go below zero."), code="balance"
            ) from None
        if "points_sign_matches_kind" in str(error):
            raise ValidationError(
                _("The sign of the points does not match the kind of movement."), code="sign"
            ) from None
        raise
    member.refresh_from_db(fields=["points_balance"])
    audit.record(
        actor,
        "points.added",
        target=member,
        changes={
            "delta": delta,
            "kind": kind,
            "reason": reason,
            "ref": ref,
            "balance": member.points_balance,
        },
    )
    return entry


@audit.service
def record_consent(
    member: Member,
    *,
    channel: str,
    action: str,
    source: str,
    actor: Actor,
    policy_version: str,
    purpose: str = ConsentRecord.Purpose.MARKETING,
    method: str = ConsentRecord.Method.CHECKBOX,
    evidence: dict[str, Any] | None = None,
    store: Store | None = None,
    at: datetime.datetime | None = None,
) -> ConsentRecord:
    """Append one consent event — grant, guardian grant, withdraw or refuse — and project the ledger.

    The one service for the admin, guide pages, imports and the API; withdrawing takes exactly the
    same fields as granting. A grant the rules refuse (members.consent: unknown notice version, a
    version without the purpose, a plain grant for a member under 14, a future time) raises a
    translated ``ValidationError`` and writes nothing. Withdrawals and refusals are always taken and
    run ``members.consent.WITHDRAWAL_HANDLERS`` in this transaction. The member's marketing flag for
    the channel is then what replaying the ledger gives, even for an event dated in the past.
    """
    member = Member.objects.select_for_update().get(pk=member.pk)
    now = timezone.now()
    record = ConsentRecord(
        member=member,
        channel=channel,
        purpose=purpose,
        action=action,
        source=source,
        method=method,
        policy_version=policy_version,
        evidence={"request_id": actor.request_id, "ip": actor.ip, **(evidence or {})},
        actor=actor.user if actor.user else None,
        store=store,
        at=at or now,
    )
    record.full_clean(exclude=["member", "actor", "store"])  # choices and lengths, translated
    notices = consent.notice_purposes()
    consent.check_consent_event(
        action=action,
        purpose=purpose,
        policy_version=policy_version,
        at=record.at,
        birthday=member.birthday,
        now=now,
        notices=notices,
    )
    record.save(force_insert=True)
    changes: dict[str, Any] = {
        "channel": channel,
        "purpose": purpose,
        "action": action,
        "source": source,
        "policy_version": policy_version,
    }
    if purpose == ConsentRecord.Purpose.MARKETING:
        flag = CONSENT_FLAG[channel]
        granted = consent.consent_granted(
            consent.member_consent_events(member.pk, channel=channel, purpose=purpose),
            channel=channel,
            purpose=purpose,
            birthday=member.birthday,
            today=consent.local_today(now),
            notices=notices,
        )
        if getattr(member, flag) != granted:
            changes[flag] = [getattr(member, flag), granted]
            setattr(member, flag, granted)
            member.save(update_fields=[flag, "updated_at"])
    audit.record(actor, "consent.recorded", target=member, changes=changes)
    if action in WITHDRAWING_ACTIONS:
        consent.run_withdrawal_handlers(member, channel, actor)
    return record


@audit.service
def tag_member(member: Member, tag: Tag, *, source: str, actor: Actor) -> MemberTag:
    member_tag, created = MemberTag.objects.get_or_create(
        member=member, tag=tag, defaults={"source": source, "added_by": actor.user if actor.user else None}
    )
    if created:
        audit.record(actor, "member.tagged", target=member, changes={"tag": tag.name, "source": source})
    return member_tag


@audit.service
def untag_member(member: Member, tag: Tag, *, actor: Actor) -> bool:
    deleted, _detail = MemberTag.objects.filter(member=member, tag=tag).delete()
    if deleted:
        audit.record(actor, "member.untagged", target=member, changes={"tag": tag.name})
    return bool(deleted)


@dataclass
class OrderLineInput:
    sku: str
    category: str
    quantity: int
    amount: Decimal
    name: str = ""


@dataclass
class OrderInput:
    channel: str
    external_no: str
    paid_at: datetime.datetime
    amount: Decimal
    member: Member | None = None
    store: Store | None = None
    guide: Guide | None = None
    status: str = Order.Status.PAID
    refunded_amount: Decimal = Decimal("0")
    lines: Sequence[OrderLineInput] = field(default_factory=list)


@audit.service
def record_orders(orders: Iterable[OrderInput], *, actor: Actor) -> list[Order]:
    """Store new orders, skipping any already known by (channel, order number); refresh buyers' metrics.

    Safe to repeat: a retried batch creates nothing twice. Returns only the orders created now.
    """
    inputs = list(orders)
    if not inputs:
        return []
    keys = {(o.channel, o.external_no) for o in inputs}
    if len(keys) != len(inputs):
        raise ValidationError(_("The same order number appears twice in one batch."), code="duplicate")
    existing = set(
        Order.objects.filter(external_no__in=[o.external_no for o in inputs]).values_list(
            "channel", "external_no"
        )
    )
    fresh = [o for o in inputs if (o.channel, o.external_no) not in existing]
    created = Order.objects.bulk_create(
        [
            Order(
                channel=o.channel,
                external_no=o.external_no,
                member=o.member,
                store=o.store,
                guide=o.guide,
                paid_at=o.paid_at,
                amount=o.amount,
                refunded_amount=o.refunded_amount,
                item_count=sum(line.quantity for line in o.lines),
                status=o.status,
            )
            for o in fresh
        ],
        batch_size=1000,
    )
    OrderLine.objects.bulk_create(
        [
            OrderLine(
                order=order,
                line_no=number,
                sku=line.sku,
                name=line.name,
                category=line.category,
                quantity=line.quantity,
                amount=line.amount,
            )
            for order, source in zip(created, fresh, strict=True)
            for number, line in enumerate(source.lines, start=1)
        ],
        batch_size=2000,
    )
    audit.record_many(actor, "order.created", created)
    refresh_member_metrics({o.member.pk for o in fresh if o.member is not None})
    return created


def recompute_all_member_metrics(*, actor: Actor, now: datetime.datetime | None = None) -> int:
    """The nightly run: every member's metrics from their orders; one audit event with the count."""
    with audit.app_audited():
        changed = refresh_member_metrics(None, now=now)
        audit.record(
            actor,
            "member.metrics_recomputed",
            target_type="members.member",
            target_id="*",
            changes={"changed": changed},
        )
    return changed
