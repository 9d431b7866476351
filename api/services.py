"""Writes made through the API, and the admin's writes on API clients and merge proposals.

Members, orders, consent and guide bindings go through ``members.services`` like every other path;
this module resolves what the caller named (store codes, mobiles, platform ids), enforces the
client's store limits and returns per-item results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from loyalty import services as loyalty_services
from members import merge
from members.metrics import refresh_member_metrics
from members.models import ConsentRecord, ExternalIdentity, GuideAssignment, Member, Order
from members.phones import normalize_mobile
from members.services import (
    OrderInput,
    OrderLineInput,
    assign_guide,
    create_member,
    lock_members,
    record_consent,
    record_orders,
    update_member,
)
from scrm import audit
from scrm.audit import Actor
from stores.models import Guide, Store

from . import keys, webhooks
from .errors import ApiError, not_found
from .fastpath import CANONICAL_CN_MOBILE
from .models import ApiClient, MergeProposal

# --------------------------------------------------------------------------------------------------
# API clients (admin)


@audit.service
def create_api_client(
    *, name: str, scopes: Sequence[str], actor: Actor, stores: Iterable[Store] = (), rate_limit: int = 600
) -> tuple[ApiClient, str]:
    """Create a client; returns it and its full key, which is shown once and never stored."""
    key, prefix, secret_hash = keys.new_key()
    client = ApiClient(
        name=name.strip(),
        key_prefix=prefix,
        secret_hash=secret_hash,
        scopes=sorted(set(scopes)),
        rate_limit=rate_limit,
        created_by=actor.user if actor.user else None,
    )
    client.full_clean()
    client.save(force_insert=True)
    client.stores.set(list(stores))
    audit.record(
        actor,
        "api_client.created",
        target=client,
        changes={
            "scopes": client.scopes,
            "stores": sorted(s.code for s in client.stores.all()),
            "rate_limit": rate_limit,
            "key_prefix": prefix,
        },
    )
    return client, key


@audit.service
def update_api_client(client: ApiClient, *, actor: Actor, **values: Any) -> ApiClient:
    """Change name, scopes, rate limit or store limits; records old and new values."""
    stores = values.pop("stores", None)
    client = ApiClient.objects.select_for_update().get(pk=client.pk)
    changes = audit.diff(client, values)
    for name, value in values.items():
        setattr(client, name, value)
    client.full_clean()
    client.save()
    if stores is not None:
        before = sorted(client.stores.values_list("code", flat=True))
        client.stores.set(list(stores))
        after = sorted(client.stores.values_list("code", flat=True))
        if before != after:
            changes["stores"] = [before, after]
    if changes:
        audit.record(actor, "api_client.updated", target=client, changes=changes)
    return client


@audit.service
def rotate_api_client_key(client: ApiClient, *, actor: Actor) -> str:
    """A new key for the client; the old one stops working at once. Returns the new key, shown once."""
    key, prefix, secret_hash = keys.new_key()
    client = ApiClient.objects.select_for_update().get(pk=client.pk)
    if not client.is_active:
        raise ValidationError(_("A revoked client cannot get a new key."), code="revoked")
    old_prefix = client.key_prefix
    client.key_prefix, client.secret_hash, client.rotated_at = prefix, secret_hash, timezone.now()
    client.save(update_fields=["key_prefix", "secret_hash", "rotated_at"])
    audit.record(actor, "api_client.key_rotated", target=client, changes={"key_prefix": [old_prefix, prefix]})
    return key


@audit.service
def revoke_api_client(client: ApiClient, *, actor: Actor) -> ApiClient:
    """Revoke the client's key for good; its history and audit trail stay."""
    client = ApiClient.objects.select_for_update().get(pk=client.pk)
    if not client.is_active:
        return client
    client.is_active, client.revoked_at = False, timezone.now()
    client.save(update_fields=["is_active", "revoked_at"])
    audit.record(actor, "api_client.revoked", target=client, changes={"is_active": [True, False]})
    return client


def record_api_call(
    actor: Actor, client: ApiClient, *, method: str, path: str, status: int, items: int | None
) -> None:
    """One audit event per call, with the client as actor (writes inside it have their own events)."""
    changes: dict[str, Any] = {"method": method, "path": path, "status": status}
    if items is not None:
        changes["items"] = items
    with audit.app_audited():
        audit.record(actor, "api.called", target=client, changes=changes)


# --------------------------------------------------------------------------------------------------
# Resolving what the caller named


@dataclass
class CallerScope:
    """The calling client's store limits (empty: every store)."""

    store_ids: frozenset[int] = frozenset()

    def allows(self, store_id: int | None) -> bool:
        return not self.store_ids or store_id in self.store_ids

    def members(self) -> Any:
        qs = Member.objects.all()
        return qs.filter(home_store_id__in=self.store_ids) if self.store_ids else qs


def survivor_of(member: Member) -> Member:
    """Follow a merged member to the member it was merged into (a chain at most a few links long)."""
    seen = set()
    while member.status == Member.Status.MERGED and member.pk not in seen:
        seen.add(member.pk)
        proposal = (
            MergeProposal.objects.select_related("survivor")
            .filter(duplicate=member, state=MergeProposal.State.MERGED)
            .first()
        )
        if proposal is None:
            break
        member = proposal.survivor
    return member


def find_member(
    scope: CallerScope,
    *,
    member_id: int | None = None,
    mobile: str | None = None,
    platform: str | None = None,
    external_id: str | None = None,
) -> Member | None:
    """A member by id, mobile or platform identity, followed through merges; None if missing/out of scope."""
    member: Member | None = None
    if member_id is not None:
        member = Member.objects.filter(pk=member_id).first()
    elif mobile:
        member = Member.objects.filter(mobile=normalize_mobile(mobile)).first()
    elif platform and external_id:
        identity = (
            ExternalIdentity.objects.select_related("member")
            .filter(platform=platform, external_id=external_id)
            .first()
        )
        member = identity.member if identity else None
    if member is None:
        return None
    member = survivor_of(member)
    if member.status == Member.Status.ERASED or not scope.allows(member.home_store_id):
        return None
    return member


def store_by_code(code: str | None, scope: CallerScope, *, field: str = "store") -> Store | None:
    if not code:
        return None
    store = Store.objects.filter(code=code.strip().upper()).first()
    if store is None or not scope.allows(store.pk):
        raise ApiError(
            _("Unknown store code: %(code)s.") % {"code": code},
            code="unknown_store",
            field=field,
            status_code=404,
        )
    return store


def guide_by_employee_no(employee_no: str | None, *, field: str = "guide") -> Guide | None:
    if not employee_no:
        return None
    guide = Guide.objects.filter(employee_no=employee_no.strip()).first()
    if guide is None:
        raise ApiError(
            _("Unknown guide employee number: %(no)s.") % {"no": employee_no},
            code="unknown_guide",
            field=field,
            status_code=404,
        )
    return guide


# --------------------------------------------------------------------------------------------------
# Members


@dataclass
class UpsertResult:
    member: Member
    created: bool
    merge_proposal: MergeProposal | None = None


def _propose_merge(
    keep: Member,
    other: Member,
    *,
    reason: str,
    evidence: dict[str, Any],
    client: ApiClient | None,
    actor: Actor,
) -> MergeProposal:
    """An open proposal for the pair (the existing one if there is one); HQ decides in the admin."""
    pending = MergeProposal.objects.filter(
        Q(survivor=keep, duplicate=other) | Q(survivor=other, duplicate=keep),
        state=MergeProposal.State.PENDING,
    ).first()
    if pending is not None:
        return pending
    try:
        with transaction.atomic():
            proposal = MergeProposal.objects.create(
                survivor=keep, duplicate=other, reason=reason, evidence=evidence, client=client
            )
    except IntegrityError:  # proposed at the same moment by another call
        return MergeProposal.objects.get(
            Q(survivor=keep, duplicate=other) | Q(survivor=other, duplicate=keep),
            state=MergeProposal.State.PENDING,
        )
    audit.record(
        actor,
        "merge.proposed",
        target=proposal,
        changes={"survivor": keep.pk, "duplicate": other.pk, "reason": reason},
    )
    return proposal


def _link_identity(member: Member, platform: str, external_id: str, *, actor: Actor) -> None:
    _identity, created = ExternalIdentity.objects.get_or_create(
        platform=platform, external_id=external_id, defaults={"member": member}
    )
    if created:
        audit.record(
            actor,
            "member.identity_linked",
            target=member,
            changes={"platform": platform, "external_id": external_id},
        )


@audit.service
def upsert_member(
    data: dict[str, Any], *, scope: CallerScope, actor: Actor, client: ApiClient | None = None
) -> UpsertResult:
    """Find the member by mobile and/or platform identity; update it or create it.

    When the mobile and the identity point at two different members, the mobile's member is updated
    and a merge proposal is opened for HQ; nothing is merged automatically.
    """
    identity = data.get("identity") or None
    mobile = data.get("mobile") or None
    try:
        e164 = normalize_mobile(mobile) if mobile else None
    except ValidationError as error:
        raise ApiError(error.messages[0], code="invalid_mobile", field="mobile") from None
    by_mobile = Member.objects.filter(mobile=e164).first() if e164 else None
    by_identity = None
    if identity:
        found = (
            ExternalIdentity.objects.select_related("member")
            .filter(platform=identity["platform"], external_id=identity["external_id"])
            .first()
        )
        by_identity = found.member if found else None
    by_mobile = survivor_of(by_mobile) if by_mobile else None
    by_identity = survivor_of(by_identity) if by_identity else None
    for found in (by_mobile, by_identity):
        if found is not None and (
            found.status == Member.Status.ERASED or not scope.allows(found.home_store_id)
        ):
            raise not_found()

    values = {}
    for name in ("name", "gender", "birthday"):
        if data.get(name) not in (None, ""):
            values[name] = data[name]
    home_store = store_by_code(data.get("home_store"), scope, field="home_store")

    proposal = None
    member = by_mobile or by_identity
    created = False
    if member is None:
        if e164 is None:
            raise ApiError(
                _("A mobile number is needed to register a new member."), code="required", field="mobile"
            )
        if home_store is None:
            if len(scope.store_ids) != 1:
                raise ApiError(
                    _("A home store is needed to register a new member."), code="required", field="home_store"
                )
            home_store = Store.objects.get(pk=next(iter(scope.store_ids)))
        member = create_member(
            mobile=e164,
            home_store=home_store,
            actor=actor,
            joined_at=data.get("joined_at"),
            join_channel=data.get("join_channel") or "store",
            guide=guide_by_employee_no(data.get("guide")),
            **values,
        )
        created = True
    else:
        if by_mobile is not None and by_identity is not None and by_mobile.pk != by_identity.pk:
            proposal = _propose_merge(
                by_mobile,
                by_identity,
                reason="mobile_and_identity_differ",
                evidence={"platform": identity["platform"], "external_id": identity["external_id"]},
                client=client,
                actor=actor,
            )
        elif by_mobile is None and e164 is not None and by_identity is not None:
            raise ApiError(
                _("This platform identity belongs to a member with another mobile number."),
                code="identity_conflict",
                field="mobile",
                status_code=409,
            )
        if home_store is not None:
            values["home_store"] = home_store
        if values:
            member = update_member(member, actor=actor, **values)
    if identity and proposal is None:
        _link_identity(member, identity["platform"], identity["external_id"], actor=actor)
    return UpsertResult(member=member, created=created, merge_proposal=proposal)


# --------------------------------------------------------------------------------------------------
# Orders


@dataclass
class OrderResult:
    index: int
    channel: str
    order_no: str
    status: str  # created / exists / error
    order_id: int | None = None
    error: dict[str, Any] | None = None


def _item_error(index: int, item: dict[str, Any], code: str, message: str, field: str | None) -> OrderResult:
    return OrderResult(
        index=index,
        channel=item.get("channel", ""),
        order_no=item.get("order_no", ""),
        status="error",
        error={"code": code, "message": str(message), "field": field},
    )


@dataclass
class _Lookups:
    stores: dict[str, Store] = field(default_factory=dict)
    guides: dict[str, Guide] = field(default_factory=dict)
    by_mobile: dict[str, Member] = field(default_factory=dict)
    by_identity: dict[tuple[str, str], Member] = field(default_factory=dict)


# What a batch needs of each buyer (a member row is wide: metrics, consent flags).
BUYER_FIELDS = ("id", "mobile", "status", "home_store")


def _lookups(items: Sequence[dict[str, Any]], mobiles: dict[int, str]) -> _Lookups:
    """Everything a batch names, in one query per kind."""
    found = _Lookups()
    codes = {i["store"].strip().upper() for i in items if i.get("store")}
    if codes:
        found.stores = {s.code: s for s in Store.objects.filter(code__in=codes)}
    numbers = {i["guide"].strip() for i in items if i.get("guide")}
    if numbers:
        found.guides = {g.employee_no: g for g in Guide.objects.filter(employee_no__in=numbers)}
    if mobiles:
        found.by_mobile = {
            m.mobile: m for m in Member.objects.filter(mobile__in=set(mobiles.values())).only(*BUYER_FIELDS)
        }
    pairs = {
        (i["member"]["platform"], i["member"]["external_id"])
        for i in items
        if (i.get("member") or {}).get("platform")
    }
    if pairs:
        condition = Q(pk__in=[])
        for platform, external_id in pairs:
            condition |= Q(platform=platform, external_id=external_id)
        identities = ExternalIdentity.objects.select_related("member").filter(condition)
        for identity in identities.only("platform", "external_id", *(f"member__{f}" for f in BUYER_FIELDS)):
            found.by_identity[(identity.platform, identity.external_id)] = identity.member
    merged = [
        m
        for m in [*found.by_mobile.values(), *found.by_identity.values()]
        if m.status == Member.Status.MERGED
    ]
    if merged:
        survivors = {m.pk: survivor_of(m) for m in merged}
        found.by_mobile = {k: survivors.get(m.pk, m) for k, m in found.by_mobile.items()}
        found.by_identity = {k: survivors.get(m.pk, m) for k, m in found.by_identity.items()}
    return found


def record_order_batch(
    items: Sequence[dict[str, Any]], *, scope: CallerScope, actor: Actor
) -> list[OrderResult]:
    """Validate each order against what exists, then record the valid ones in one call of
    ``members.services.record_orders``. Idempotent by (channel, order number): a repeated order is
    reported as ``exists`` and not written again. Invalid orders are reported and nothing of them kept.
    """
    results: list[OrderResult | None] = [None] * len(items)
    mobiles: dict[int, str] = {}
    unchecked: list[int] = []
    for index, item in enumerate(items):
        mobile = (item.get("member") or {}).get("mobile")
        if mobile and CANONICAL_CN_MOBILE.match(mobile):
            mobiles[index] = mobile
            unchecked.append(index)
        elif mobile:
            try:
                mobiles[index] = normalize_mobile(mobile)
            except ValidationError as error:
                results[index] = _item_error(
                    index, item, "invalid_mobile", error.messages[0], "member.mobile"
                )
    found = _lookups(items, mobiles)
    for index in unchecked:
        if mobiles[index] not in found.by_mobile:  # no member has it: check it is a real mobile number
            try:
                normalize_mobile(mobiles[index])
            except ValidationError as error:
                del mobiles[index]
                results[index] = _item_error(
                    index, items[index], "invalid_mobile", error.messages[0], "member.mobile"
                )
    seen: set[tuple[str, str]] = set()
    inputs: list[tuple[int, OrderInput]] = []
    for index, item in enumerate(items):
        if results[index] is not None:
            continue
        key = (item["channel"], item["order_no"])
        if key in seen:
            results[index] = _item_error(
                index, item, "duplicate", _("The same order number appears twice in one batch."), "order_no"
            )
            continue
        seen.add(key)
        store = None
        if item.get("store"):
            store = found.stores.get(item["store"].strip().upper())
            if store is None or not scope.allows(store.pk):
                results[index] = _item_error(
                    index,
                    item,
                    "unknown_store",
                    _("Unknown store code: %(code)s.") % {"code": item["store"]},
                    "store",
                )
                continue
        elif scope.store_ids:
            results[index] = _item_error(
                index, item, "required", _("This client must name the store of each order."), "store"
            )
            continue
        guide = None
        if item.get("guide"):
            guide = found.guides.get(item["guide"].strip())
            if guide is None:
                results[index] = _item_error(
                    index,
                    item,
                    "unknown_guide",
                    _("Unknown guide employee number: %(no)s.") % {"no": item["guide"]},
                    "guide",
                )
                continue
        buyer = item.get("member") or {}
        member = None
        if index in mobiles:
            member = found.by_mobile.get(mobiles[index])
        elif buyer.get("platform"):
            member = found.by_identity.get((buyer["platform"], buyer["external_id"]))
        if member is not None and (
            member.status == Member.Status.ERASED or not scope.allows(member.home_store_id)
        ):
            member = None  # a buyer this client may not see is recorded as a non-member order of its store
        lines = [
            OrderLineInput(
                sku=line["sku"],
                category=line.get("category") or "",
                quantity=line["quantity"],
                amount=line["amount"],
                name=line.get("name") or "",
            )
            for line in item.get("items") or []
        ]
        inputs.append(
            (
                index,
                OrderInput(
                    channel=item["channel"],
                    external_no=item["order_no"],
                    paid_at=item["paid_at"],
                    amount=item["amount"],
                    member=member,
                    store=store,
                    guide=guide,
                    lines=lines,
                ),
            )
        )
    if inputs:
        try:
            created = record_orders([o for _i, o in inputs], actor=actor)
        except IntegrityError:
            # The same order sent at the same moment by a parallel call: the retry sees it as existing.
            created = record_orders([o for _i, o in inputs], actor=actor)
        created_ids = {(o.channel, o.external_no): o.pk for o in created}
        missing = [o.external_no for _i, o in inputs if (o.channel, o.external_no) not in created_ids]
        existing_ids = {}
        if missing:
            existing_ids = {
                (channel, number): pk
                for pk, channel, number in Order.objects.filter(external_no__in=missing).values_list(
                    "pk", "channel", "external_no"
                )
            }
        for index, order in inputs:
            key = (order.channel, order.external_no)
            if key in created_ids:
                results[index] = OrderResult(
                    index, order.channel, order.external_no, "created", created_ids[key]
                )
            else:
                results[index] = OrderResult(
                    index, order.channel, order.external_no, "exists", existing_ids.get(key)
                )
    return [r for r in results if r is not None]


def order_in_scope(channel: str, order_no: str, scope: CallerScope) -> Order:
    order = Order.objects.filter(channel=channel, external_no=order_no).first()
    if order is None:
        raise not_found()
    if scope.store_ids:
        member_store = (
            Member.objects.filter(pk=order.member_id).values_list("home_store_id", flat=True).first()
        )
        if not (scope.allows(order.store_id) or (member_store is not None and scope.allows(member_store))):
            raise not_found()
    return order


@audit.service
def refund_order(order: Order, *, refunded_amount: Decimal, actor: Actor) -> Order:
    """Set the order's total refunded so far; repeating the same total changes nothing.

    The total can only grow and never past the amount paid; the whole amount makes the order
    ``refunded``, part of it ``partially_refunded``. The buyer's metrics are refreshed.
    """
    lock_members([order.member_id] if order.member_id else [])
    order = Order.objects.select_for_update().get(pk=order.pk)
    if order.status == Order.Status.CANCELLED:
        raise ApiError(
            _("A cancelled order cannot be refunded."), code="cancelled", field=None, status_code=409
        )
    if refunded_amount < order.refunded_amount:
        raise ApiError(
            _("The refunded total cannot go down (already refunded: %(amount)s).")
            % {"amount": order.refunded_amount},
            code="refund_decrease",
            field="refunded_amount",
        )
    if refunded_amount > order.amount:
        raise ApiError(
            _("The refunded total cannot exceed the order amount."),
            code="refund_too_large",
            field="refunded_amount",
        )
    if refunded_amount == order.refunded_amount:
        return order
    status = Order.Status.REFUNDED if refunded_amount == order.amount else Order.Status.PARTIALLY_REFUNDED
    changes = {"refunded_amount": [order.refunded_amount, refunded_amount], "status": [order.status, status]}
    order.refunded_amount, order.status = refunded_amount, status
    order.save(update_fields=["refunded_amount", "status"])
    audit.record(actor, "order.refunded", target=order, changes=changes)
    if order.member_id:
        refresh_member_metrics({order.member_id})
        # The refunded share of the order's points goes back now, not at the nightly catch-up.
        loyalty_services.on_orders_recorded([order.pk], actor=actor)
    return order


@audit.service
def cancel_order(order: Order, *, actor: Actor) -> Order:
    """Cancel an order (it stops counting in every metric); cancelling twice changes nothing."""
    lock_members([order.member_id] if order.member_id else [])
    order = Order.objects.select_for_update().get(pk=order.pk)
    if order.status == Order.Status.CANCELLED:
        return order
    changes = {"status": [order.status, Order.Status.CANCELLED]}
    order.status = Order.Status.CANCELLED
    order.save(update_fields=["status"])
    audit.record(actor, "order.cancelled", target=order, changes=changes)
    if order.member_id:
        refresh_member_metrics({order.member_id})
        loyalty_services.on_orders_recorded([order.pk], actor=actor)
    return order


# --------------------------------------------------------------------------------------------------
# Consent and guide bindings


def record_member_consent(
    member: Member, data: dict[str, Any], *, scope: CallerScope, actor: Actor
) -> ConsentRecord:
    """Through ``members.services.record_consent``, the same service as every other path (source: API)."""
    return record_consent(
        member,
        channel=data["channel"],
        action=data["action"],
        source=ConsentRecord.Source.API,
        actor=actor,
        policy_version=data["policy_version"],
        purpose=data.get("purpose") or ConsentRecord.Purpose.MARKETING,
        method=data.get("method") or ConsentRecord.Method.CHECKBOX,
        evidence=data.get("evidence") or {},
        store=store_by_code(data.get("store"), scope),
        at=data.get("at"),
    )


@audit.service
def bind_guide(
    member: Member, guide: Guide, *, bound: bool, actor: Actor, external_userid: str = ""
) -> Member:
    """A WeCom contact added (bind) or deleted (unbind) between a member and a guide.

    Binding makes the guide the member's exclusive guide. Unbinding ends the binding only if that
    guide is still the exclusive one (a later binding to another guide is kept).
    """
    if external_userid:
        _link_identity(member, ExternalIdentity.Platform.WECOM_EXTERNAL, external_userid, actor=actor)
    if bound:
        return assign_guide(member, guide, actor=actor, reason=GuideAssignment.Reason.WECOM)
    if member.guide_id == guide.pk:
        return assign_guide(member, None, actor=actor, reason=GuideAssignment.Reason.WECOM)
    return member


# --------------------------------------------------------------------------------------------------
# Merge proposals (admin)


def _lock_proposal(proposal: MergeProposal, state: str) -> MergeProposal:
    proposal = (
        MergeProposal.objects.select_for_update().select_related("survivor", "duplicate").get(pk=proposal.pk)
    )
    if proposal.state != state:
        raise ValidationError(
            _("This proposal is %(state)s and cannot be changed that way.")
            % {"state": proposal.get_state_display()},
            code="state",
        )
    return proposal


@audit.service
def accept_merge_proposal(proposal: MergeProposal, *, actor: Actor) -> MergeProposal:
    """Merge the duplicate into the survivor (members.merge) and tell subscribed systems after commit."""
    proposal = _lock_proposal(proposal, MergeProposal.State.PENDING)
    moved = merge.merge_members(
        proposal.survivor, proposal.duplicate, actor=actor, ref=f"merge:{proposal.pk}"
    )
    changes = {"state": [proposal.state, MergeProposal.State.MERGED]}
    proposal.state, proposal.moved = MergeProposal.State.MERGED, moved
    proposal.decided_at, proposal.decided_by = timezone.now(), actor.user if actor.user else None
    proposal.save(update_fields=["state", "moved", "decided_at", "decided_by"])
    audit.record(actor, "merge.accepted", target=proposal, changes=changes)
    webhooks.enqueue_event(
        webhooks.Event.MEMBER_MERGED,
        {"survivor_id": proposal.survivor_id, "merged_id": proposal.duplicate_id, "proposal_id": proposal.pk},
    )
    return proposal


@audit.service
def reject_merge_proposal(proposal: MergeProposal, *, actor: Actor) -> MergeProposal:
    proposal = _lock_proposal(proposal, MergeProposal.State.PENDING)
    proposal.state = MergeProposal.State.REJECTED
    proposal.decided_at, proposal.decided_by = timezone.now(), actor.user if actor.user else None
    proposal.save(update_fields=["state", "decided_at", "decided_by"])
    audit.record(actor, "merge.rejected", target=proposal, changes={"state": ["pending", "rejected"]})
    return proposal


@audit.service
def undo_merge(proposal: MergeProposal, *, actor: Actor) -> MergeProposal:
    proposal = _lock_proposal(proposal, MergeProposal.State.MERGED)
    merge.unmerge_members(
        proposal.survivor, proposal.duplicate, proposal.moved, actor=actor, ref=f"unmerge:{proposal.pk}"
    )
    proposal.state = MergeProposal.State.UNDONE
    proposal.decided_at, proposal.decided_by = timezone.now(), actor.user if actor.user else None
    proposal.save(update_fields=["state", "decided_at", "decided_by"])
    audit.record(actor, "merge.undone", target=proposal, changes={"state": ["merged", "undone"]})
    return proposal
