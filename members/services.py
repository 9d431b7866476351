"""Every write to members and their records. Each service is one transaction and leaves an audit event."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from scrm import audit
from scrm.audit import Actor
from scrm.masking import mask_mobile
from stores.models import Guide, Store

from . import consent
from .consent import CONSENT_FLAG, GRANTING_ACTIONS, WITHDRAWING_ACTIONS  # noqa: F401 (re-exported)
from .metrics import bound_cursor, refresh_member_metrics, refresh_member_metrics_detailed
from .models import (
    Channel,
    ConsentRecord,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    PointsEntry,
    Tag,
    Tier,
)
from .phones import normalize_mobile
from .rfm import rebin_rfm


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
    for hook in JOIN_HOOKS:
        hook(member, actor)
    return member


# Run by ``create_member`` in its transaction with the new member and the actor (e.g. campaigns that
# wait for "a member joined"). Bulk paths (the member import) do not run them.
MemberHook = Callable[[Member, Actor], None]
JOIN_HOOKS: list[MemberHook] = []

# Run in the transaction that takes a member out of contact for good other than by consent (merged
# into another member), with the member and the actor: e.g. campaigns cancels the open tasks.
MERGED_HOOKS: list[MemberHook] = []


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


_LOCK_MEMBERS_SQL = "SELECT id FROM members_member WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"
# Both columns of the unique index, so the lookup is an index scan even over millions of orders.
_KNOWN_ORDERS_SQL = (
    "SELECT channel, external_no FROM members_order WHERE channel = ANY(%s) AND external_no = ANY(%s)"
)

# Column arrays travel in binary (%b): no quoting of a thousand strings on the client.
_INSERT_ORDERS_SQL = """
INSERT INTO members_order (channel, external_no, member_id, store_id, guide_id, paid_at, amount,
                           refunded_amount, item_count, status, created_at)
SELECT t.*, %s
  FROM unnest(%b::varchar[], %b::varchar[], %b::bigint[], %b::bigint[], %b::bigint[],
              %b::timestamptz[], %b::numeric[], %b::numeric[], %b::integer[], %b::varchar[]) AS t
RETURNING id, channel, external_no
"""

_INSERT_LINES_SQL = """
INSERT INTO members_orderline (order_id, line_no, sku, name, category, quantity, amount)
SELECT * FROM unnest(%b::bigint[], %b::smallint[], %b::varchar[], %b::varchar[], %b::varchar[],
                     %b::integer[], %b::numeric[])
"""


def _insert_orders(fresh: list[OrderInput]) -> list[Order]:
    """Insert orders and their lines in two statements (column arrays); the orders, with ids."""
    now = timezone.now()
    orders = [
        Order(
            channel=o.channel,
            external_no=o.external_no,
            member_id=o.member.pk if o.member is not None else None,
            store_id=o.store.pk if o.store is not None else None,
            guide_id=o.guide.pk if o.guide is not None else None,
            paid_at=o.paid_at,
            amount=o.amount,
            refunded_amount=o.refunded_amount,
            item_count=sum(line.quantity for line in o.lines),
            status=o.status,
            created_at=now,
        )
        for o in fresh
    ]
    columns = ("channel", "external_no", "member_id", "store_id", "guide_id", "paid_at", "amount")
    columns += ("refunded_amount", "item_count", "status")
    with bound_cursor() as cursor:
        cursor.execute(
            _INSERT_ORDERS_SQL, [now, *([getattr(o, c) for o in orders] for c in columns)], prepare=False
        )
        ids = {(channel, number): pk for pk, channel, number in cursor.fetchall()}
        for order in orders:
            order.pk = ids[(order.channel, order.external_no)]
            order._state.adding = False
            order._state.db = connection.alias
        lines = [
            (order.pk, number, line.sku, line.name, line.category, line.quantity, line.amount)
            for order, source in zip(orders, fresh, strict=True)
            for number, line in enumerate(source.lines, start=1)
        ]
        if lines:
            cursor.execute(
                _INSERT_LINES_SQL, [list(column) for column in zip(*lines, strict=True)], prepare=False
            )
    return orders


# Post-ingest hooks: callables run by ``record_orders`` in its transaction, after the buyers' metrics,
# lifecycle stages and transitions are current. Each receives the orders created now, the ids of
# their members and the actor; e.g. points and tiers register here. Keep them set-based: they run
# once per batch, on the ingestion path that must sustain thousands of orders a second.
OrderHook = Callable[[list[Order], list[int], Actor], None]
ORDER_HOOKS: list[OrderHook] = []


def lock_members(member_ids: Iterable[int]) -> None:
    """Row-lock members in id order (two batches never deadlock) until the transaction ends.

    The metrics refresh is one statement over each buyer's orders: two batches committing orders of
    the same member at the same moment would each count only their own, and the later write would
    drop the other's. Holding the buyer's row first makes the second batch count after the first.
    Orders' foreign-key checks take KEY SHARE locks, which NO KEY UPDATE does not block.
    """
    ids = sorted({int(i) for i in member_ids})
    if ids:
        with bound_cursor() as cursor:
            cursor.execute(_LOCK_MEMBERS_SQL, [ids], prepare=False)


@audit.service
def record_orders(orders: Iterable[OrderInput], *, actor: Actor) -> list[Order]:
    """Store new orders, skipping any already known by (channel, order number); refresh buyers' metrics.

    One batch (500–1,000 orders is the sweet spot) costs a handful of statements whatever its
    size: the lookup of known numbers, the order and line inserts, one audit event, one metrics
    refresh for all buyers (members.metrics, which also records lifecycle transitions) and the
    ``ORDER_HOOKS``. Safe to repeat: a retried batch creates nothing twice. Returns only the orders
    created now.
    """
    inputs = list(orders)
    if not inputs:
        return []
    keys = {(o.channel, o.external_no) for o in inputs}
    if len(keys) != len(inputs):
        raise ValidationError(_("The same order number appears twice in one batch."), code="duplicate")
    lock_members(o.member.pk for o in inputs if o.member is not None)
    with bound_cursor() as cursor:
        cursor.execute(
            _KNOWN_ORDERS_SQL, [sorted({c for c, _n in keys}), [n for _c, n in keys]], prepare=False
        )
        existing = set(cursor.fetchall())
    fresh = [o for o in inputs if (o.channel, o.external_no) not in existing]
    if not fresh:
        return []
    created = _insert_orders(fresh)
    audit.record(
        actor,
        "orders.created",
        target_type="members.order",
        target_id=created[0].pk if len(created) == 1 else "*",
        # One event per batch, listing every order: a per-order row would cost more than the insert.
        changes={
            "count": len(created),
            "orders": [
                [o.pk, o.channel, o.external_no, o.member_id, o.store_id, str(o.amount)] for o in created
            ],
        },
    )
    member_ids = sorted({o.member.pk for o in fresh if o.member is not None})
    refresh_member_metrics(member_ids)
    # Post-ingest hooks: metrics, stages and transitions are current from here on.
    for hook in ORDER_HOOKS:
        hook(created, member_ids, actor)
    return created


def recompute_all_member_metrics(*, actor: Actor, now: datetime.datetime | None = None) -> int:
    """The nightly run: every member's metrics, stage and RFM cell; one audit event with the counts.

    Moves members to dormant and lost as time passes (recording the transitions), re-cuts the RFM
    edges over the fresh metrics and re-scores the cells. Writes only rows whose values change.
    """
    with audit.app_audited():
        refresh = refresh_member_metrics_detailed(None, now=now)
        rebin = rebin_rfm(now=now)
        audit.record(
            actor,
            "member.metrics_recomputed",
            target_type="members.member",
            target_id="*",
            changes={
                "changed": refresh.members_changed,
                "transitions": refresh.transitions,
                "rfm_cells_changed": rebin.cells_changed,
                "rfm_populations": rebin.populations,
            },
        )
    return refresh.members_changed + rebin.cells_changed
