"""Every loyalty write: points per order and their reversal, points expiry, tiers, coupons.

Each service is one transaction (``audit.service``) and leaves audit events; the heavy ones are
set-based SQL over many members at once. Points always move through the members ledger
(``members_pointsentry``): its trigger keeps ``Member.points_balance`` and refuses a negative balance.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from members.models import Member, PointsEntry, Tier
from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent
from stores.models import Store

from .models import Coupon, CouponTemplate, LoyaltyProgram, LoyaltyRun

# Ledger reasons written by this app (stored text, shown as is in the points ledger).
REASON_ORDER = "order"
REASON_REFUND = "refund reversal"
REASON_EXPIRY = "points expiry"

# Members per transaction in the nightly points expiry: each batch locks its members' rows.
EXPIRY_BATCH_SIZE = 5000
# Coupons marked expired per statement in the nightly coupon expiry.
COUPON_EXPIRY_BATCH_SIZE = 10000
# Coupons listed per audit event when issuing or expiring in bulk.
AUDIT_CHUNK = 1000
COUPON_CODE_BYTES = 8  # 16 hexadecimal characters: 64 random bits, unguessable


def _bulk_audit(
    actor: Actor, action: str, rows: Iterable[tuple[str, Any, int | None, dict[str, Any]]]
) -> int:
    """One audit event per (target type, target id, store id, changes), written in one INSERT per batch.

    ``audit.record_many`` gives every target the same ``changes``; each movement here has its own.
    """
    events = [
        audit._event(
            actor,
            action,
            target=None,
            target_type=target_type,
            target_id=target_id,
            changes=changes,
            store_id=store_id,
        )
        for target_type, target_id, store_id, changes in rows
    ]
    AuditEvent.objects.bulk_create(events, batch_size=2000)
    return len(events)


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _audit_coupon_chunks(
    actor: Actor, action: str, rows: list[dict[str, Any]], changes: dict[str, Any]
) -> None:
    """One event per chunk of coupons, listing its [coupon id, member id] pairs, plus ``changes``.

    A per-coupon event costs about as much as the coupon itself (the trail's hash chain).
    """
    _bulk_audit(
        actor,
        action,
        (
            (
                "loyalty.coupon",
                chunk[0]["id"],
                None,
                {"coupons": [[row["id"], row["member_id"]] for row in chunk], **changes},
            )
            for chunk in _chunks(rows, AUDIT_CHUNK)
        ),
    )


def _fetch(sql: str, params: dict[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.description is None:
            return []
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _lock_members(member_ids: Iterable[int]) -> None:
    """Lock members' rows in id order, so concurrent ledger writers queue instead of deadlocking."""
    ids = sorted(set(member_ids))
    if ids:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM members_member WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids])


# --------------------------------------------------------------------------------------------------
# Points for orders


EARN_SQL = """
WITH eligible AS (
    SELECT o.id AS order_id, o.member_id, o.paid_at, o.external_no, o.channel, m.home_store_id,
           (o.amount - o.refunded_amount) AS base_amount,
           COALESCE(r.points_multiplier, 1) AS multiplier
      FROM members_order o
      JOIN members_member m ON m.id = o.member_id
      LEFT JOIN loyalty_tierrule r ON r.tier_id = m.tier_id
     WHERE o.id = ANY(%(ids)s)
       AND o.status IN ('paid', 'partially_refunded')
       AND m.status = 'active'
), inserted AS (
    INSERT INTO loyalty_orderpoints (order_id, member_id, paid_at, base_amount, multiplier, points,
                                     reversed_points, unrecovered_points, expires_at, earned_at)
    SELECT order_id, member_id, paid_at, base_amount, multiplier,
           FLOOR(base_amount * %(per_yuan)s * multiplier)::integer, 0, 0,
           CASE WHEN %(months)s > 0 THEN
               ((date_trunc('month', paid_at AT TIME ZONE %(tz)s) + make_interval(months => %(months)s))
                 AT TIME ZONE %(tz)s) - interval '1 second'
           END,
           %(now)s
      FROM eligible
     ORDER BY order_id
        ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id, member_id, points, expires_at, base_amount, multiplier
)
-- Through the orders' primary key: a join of the two CTEs would be planned blind (no statistics).
SELECT i.order_id, i.member_id, i.points, i.expires_at, i.base_amount, i.multiplier, o.external_no, o.channel
  FROM inserted i JOIN members_order o ON o.id = i.order_id
 ORDER BY i.order_id
"""

REVERSAL_SQL = """
WITH due AS (
    SELECT op.order_id, op.member_id, o.external_no, o.channel, m.home_store_id, m.points_balance,
           (op.points - op.reversed_points) - CASE
               WHEN o.status IN ('refunded', 'cancelled') OR op.base_amount <= 0 THEN 0
               ELSE LEAST(op.points, FLOOR(op.points * GREATEST(o.amount - o.refunded_amount, 0)
                                           / op.base_amount))::integer
           END AS owed
      FROM loyalty_orderpoints op
      JOIN members_order o ON o.id = op.order_id
      JOIN members_member m ON m.id = op.member_id
     WHERE op.reversed_points < op.points
       AND (o.refunded_amount > 0 OR o.status IN ('refunded', 'cancelled'))
       {only_some}
)
SELECT due.*,
       -- What the balance still holds, taken in order-id order when one member has several refunds.
       GREATEST(0, LEAST(owed, points_balance
                               - (SUM(owed) OVER (PARTITION BY member_id ORDER BY order_id) - owed)))::integer
           AS taken
  FROM due
 WHERE owed > 0
 ORDER BY member_id, order_id
"""


@dataclass(frozen=True)
class OrderPointsResult:
    """What ``on_orders_recorded`` did: orders credited, points credited, reversals, tier changes."""

    credited_orders: int = 0
    credited_points: int = 0
    reversed_orders: int = 0
    reversed_points: int = 0
    tier_changes: int = 0


_INSERT_EARNED_SQL = """
INSERT INTO members_pointsentry (member_id, delta, kind, reason, ref, expires_at, created_at, actor_id)
SELECT d.member_id, d.delta, %s, %s, d.ref, d.expires_at, %s, %s
  FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::timestamptz[])
       AS d(member_id, delta, ref, expires_at)
"""


@audit.service
def on_orders_recorded(
    order_ids: Iterable[int], *, actor: Actor | None = None, now: datetime.datetime | None = None
) -> OrderPointsResult:
    """Credit points for new member orders, reverse the credit of refunded ones, re-evaluate tiers.

    Set-based and safe to repeat: an order earns once (``OrderPoints`` has one row per order, taken
    with ``ON CONFLICT DO NOTHING``), and a refund takes back its share of the credit only once. Points
    are ``floor((amount - refunded) × points per yuan × the member's tier multiplier)``; refunded and
    cancelled orders earn nothing. The credit expires at the end of the programme's expiry month.
    """
    actor = actor or Actor.system("loyalty")
    ids = sorted({int(pk) for pk in order_ids})
    if not ids:
        return OrderPointsResult()
    now = now or timezone.now()
    program = LoyaltyProgram.current()
    credited = _fetch(
        EARN_SQL,
        {
            "ids": ids,
            "per_yuan": program.points_per_yuan,
            "months": program.points_expiry_months,
            "tz": settings.TIME_ZONE,
            "now": now,
        },
    )
    earning = [row for row in credited if row["points"] > 0]
    if earning:
        # One statement from arrays: on the ingestion path a thousand ORM objects cost more than the
        # insert itself (the ledger's balance trigger then moves each member once per statement).
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT_EARNED_SQL,
                [
                    PointsEntry.Kind.EARN,
                    str(REASON_ORDER),
                    timezone.now(),  # as the ORM's auto_now_add would: the expiry run compares to it
                    actor.user.pk if actor.user else None,
                    [row["member_id"] for row in earning],
                    [row["points"] for row in earning],
                    [row["external_no"] for row in earning],
                    [row["expires_at"] for row in earning],
                ],
            )
    if earning:
        # One event per batch, on the ingestion path: the ledger rows (append-only, with order number,
        # actor and expiry) are the per-order record; the event says who credited what, in one row.
        audit.record(
            actor,
            "points.earned",
            target_type="loyalty.orderpoints",
            target_id=earning[0]["order_id"],
            changes={
                "orders": len(earning),
                "points": sum(row["points"] for row in earning),
                "points_per_yuan": program.points_per_yuan,
                # [order id, member id, points] per credited order.
                "credits": [[row["order_id"], row["member_id"], row["points"]] for row in earning],
            },
        )
    reversed_rows = _reverse_refunded_credit(ids, actor=actor)
    members = {row["member_id"] for row in credited} | {row["member_id"] for row in reversed_rows}
    changes = evaluate_tiers(members, actor=actor, now=now) if members else 0
    return OrderPointsResult(
        credited_orders=len(earning),
        credited_points=sum(row["points"] for row in earning),
        reversed_orders=len(reversed_rows),
        reversed_points=sum(row["owed"] for row in reversed_rows),
        tier_changes=changes,
    )


def order_hook(orders: Sequence[Any], member_ids: Sequence[int], actor: Actor) -> None:
    """``members.services.ORDER_HOOKS`` entry: the orders ``record_orders`` just created earn points."""
    if member_ids:
        on_orders_recorded([order.pk for order in orders if order.member_id is not None], actor=actor)


def _reverse_refunded_credit(order_ids: list[int] | None, *, actor: Actor) -> list[dict[str, Any]]:
    """Take back the refunded share of earlier credits; the caller holds the transaction.

    The share is proportional: an order that earned 199 points on 199 yuan and is refunded 100 yuan keeps
    ``floor(199 × 99 / 199)`` = 99. Points the member already spent cannot be taken (the balance never
    goes below zero): they are written off and counted in ``unrecovered_points``.
    """
    only_some = "AND op.order_id = ANY(%(ids)s)" if order_ids is not None else ""
    params = {"ids": order_ids} if order_ids is not None else {}
    candidates = _fetch(REVERSAL_SQL.format(only_some=only_some), params)
    if not candidates:
        return []
    _lock_members(row["member_id"] for row in candidates)
    # Read again under the lock: the balance may have moved between the first read and the lock.
    rows = _fetch(REVERSAL_SQL.format(only_some=only_some), params)
    if not rows:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE loyalty_orderpoints op
               SET reversed_points = op.reversed_points + d.owed,
                   unrecovered_points = op.unrecovered_points + (d.owed - d.taken)
              FROM unnest(%s::bigint[], %s::integer[], %s::integer[]) AS d(order_id, owed, taken)
             WHERE op.order_id = d.order_id
            """,
            [
                [row["order_id"] for row in rows],
                [row["owed"] for row in rows],
                [row["taken"] for row in rows],
            ],
        )
    PointsEntry.objects.bulk_create(
        [
            PointsEntry(
                member_id=row["member_id"],
                delta=-row["taken"],
                kind=PointsEntry.Kind.ADJUST,
                reason=REASON_REFUND,
                ref=row["external_no"],
                actor=actor.user if actor.user else None,
            )
            for row in rows
            if row["taken"] > 0
        ],
        batch_size=2000,
    )
    _bulk_audit(
        actor,
        "points.reversed",
        (
            (
                "members.member",
                row["member_id"],
                row["home_store_id"],
                {
                    "order_id": row["order_id"],
                    "order": f"{row['channel']}:{row['external_no']}",
                    "points": -row["taken"],
                    "reversed": row["owed"],
                    "unrecovered": row["owed"] - row["taken"],
                },
            )
            for row in rows
        ),
    )
    return rows


@audit.service
def reverse_refunded_points(*, actor: Actor, now: datetime.datetime | None = None) -> LoyaltyRun:
    """Nightly: reverse the credit of every order refunded since, whichever path recorded the refund."""
    started = timezone.now()
    rows = _reverse_refunded_credit(None, actor=actor)
    run = LoyaltyRun.objects.create(
        kind=LoyaltyRun.Kind.REFUND_REVERSAL,
        cutoff=now or started,
        started_at=started,
        finished_at=timezone.now(),
        members=len({row["member_id"] for row in rows}),
        points=sum(row["taken"] for row in rows),
        count=len(rows),
    )
    if rows:
        evaluate_tiers({row["member_id"] for row in rows}, actor=actor, now=now)
    audit.record(
        actor, "points.refunds_reversed", target=run, changes={"orders": len(rows), "points": run.points}
    )
    return run


# --------------------------------------------------------------------------------------------------
# Points expiry


EXPIRY_CANDIDATES_SQL = """
SELECT DISTINCT member_id
  FROM members_pointsentry
 WHERE delta > 0
   AND expires_at <= %(now)s
   AND (expires_at > %(matured_since)s OR created_at > %(written_since)s)
 ORDER BY member_id
"""

# First in, first out: every debit (redeemed, expired, negative adjustment) used the points that expire
# first, so what expires now is the matured credit not yet covered by debits.
EXPIRY_DUE_SQL = """
SELECT e.member_id, m.home_store_id,
       LEAST(m.points_balance,
             COALESCE(SUM(e.delta) FILTER (WHERE e.delta > 0 AND e.expires_at <= %(now)s), 0)
             + COALESCE(SUM(e.delta) FILTER (WHERE e.delta < 0), 0))::integer AS due
  FROM members_pointsentry e
  JOIN members_member m ON m.id = e.member_id
 WHERE e.member_id = ANY(%(ids)s)
 GROUP BY e.member_id, m.home_store_id, m.points_balance
HAVING LEAST(m.points_balance,
             COALESCE(SUM(e.delta) FILTER (WHERE e.delta > 0 AND e.expires_at <= %(now)s), 0)
             + COALESCE(SUM(e.delta) FILTER (WHERE e.delta < 0), 0)) > 0
"""


def expire_points(*, actor: Actor, now: datetime.datetime | None = None) -> LoyaltyRun:
    """Nightly: write an ``expire`` ledger row for every member whose points reached their expiry.

    Only members with a credit that matured (or was recorded) since the last run are looked at; each
    batch of them is one transaction. Running it twice expires nothing twice: the first run's expiry
    rows are debits that cover the matured credit.
    """
    now = now or timezone.now()
    started = timezone.now()
    last = (
        LoyaltyRun.objects.filter(kind=LoyaltyRun.Kind.POINTS_EXPIRY, cutoff__lte=now)
        .order_by("-cutoff")
        .first()
    )
    # Credit that matured since the last run's cutoff, or was written since it started (a late order
    # whose points were already past their expiry).
    beginning = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    params = {
        "now": now,
        "matured_since": last.cutoff if last else beginning,
        "written_since": last.started_at if last else beginning,
    }
    candidates = [row["member_id"] for row in _fetch(EXPIRY_CANDIDATES_SQL, params)]
    members = points = 0
    for start in range(0, len(candidates), EXPIRY_BATCH_SIZE):
        batch = candidates[start : start + EXPIRY_BATCH_SIZE]
        expired = _expire_batch(batch, actor=actor, now=now)
        members += len(expired)
        points += sum(expired)
    with audit.app_audited():
        run = LoyaltyRun.objects.create(
            kind=LoyaltyRun.Kind.POINTS_EXPIRY,
            cutoff=now,
            started_at=started,
            finished_at=timezone.now(),
            members=members,
            points=points,
            count=members,
        )
        audit.record(actor, "points.expiry_run", target=run, changes={"members": members, "points": points})
    return run


@audit.service
def _expire_batch(member_ids: list[int], *, actor: Actor, now: datetime.datetime) -> list[int]:
    _lock_members(member_ids)
    rows = _fetch(EXPIRY_DUE_SQL, {"ids": member_ids, "now": now})
    ref = f"expiry {timezone.localtime(now):%Y-%m-%d}"
    PointsEntry.objects.bulk_create(
        [
            PointsEntry(
                member_id=row["member_id"],
                delta=-row["due"],
                kind=PointsEntry.Kind.EXPIRE,
                reason=REASON_EXPIRY,
                ref=ref,
                actor=actor.user if actor.user else None,
            )
            for row in rows
        ],
        batch_size=2000,
    )
    _bulk_audit(
        actor,
        "points.expired",
        (("members.member", row["member_id"], row["home_store_id"], {"points": -row["due"]}) for row in rows),
    )
    return [row["due"] for row in rows]


# --------------------------------------------------------------------------------------------------
# Tiers


def _tier_eval_sql(basis: str, *, only_some: bool) -> str:
    member_filter = "AND m.id = ANY(%(ids)s)" if only_some else ""
    if basis == LoyaltyProgram.TierBasis.POINTS:
        value = f"""
        SELECT op.member_id, SUM(op.points - op.reversed_points) AS value
          FROM loyalty_orderpoints op
         WHERE op.paid_at > %(since)s AND op.paid_at <= %(now)s
           {"AND op.member_id = ANY(%(ids)s)" if only_some else ""}
         GROUP BY op.member_id"""
        qualified = """
        SELECT t.id, t.rank FROM members_tier t JOIN loyalty_tierrule r ON r.tier_id = t.id
         WHERE r.points_threshold <= v.value ORDER BY t.rank DESC LIMIT 1"""
    else:
        value = f"""
        SELECT o.member_id, SUM(o.amount - o.refunded_amount) AS value
          FROM members_order o
         WHERE o.status IN ('paid', 'partially_refunded') AND o.paid_at > %(since)s AND o.paid_at <= %(now)s
           {"AND o.member_id = ANY(%(ids)s)" if only_some else ""}
         GROUP BY o.member_id"""
        qualified = """
        SELECT t.id, t.rank FROM members_tier t
         WHERE t.threshold <= v.value ORDER BY t.rank DESC LIMIT 1"""
    return f"""
CREATE TEMP TABLE loyalty_tier_eval ON COMMIT DROP AS
WITH v AS (
    SELECT m.id AS member_id, m.home_store_id, m.tier_id, COALESCE(ct.rank, -1) AS current_rank,
           COALESCE(a.value, 0)::numeric(14, 2) AS value, ts.below_since
      FROM members_member m
      LEFT JOIN members_tier ct ON ct.id = m.tier_id
      LEFT JOIN ({value}) a ON a.member_id = m.id
      LEFT JOIN loyalty_tierstanding ts ON ts.member_id = m.id
     WHERE m.status = 'active' {member_filter}
)
SELECT v.*, q.id AS qualified_tier_id, COALESCE(q.rank, -1) AS qualified_rank,
       CASE
           WHEN COALESCE(q.rank, -1) > v.current_rank THEN 'up'
           WHEN COALESCE(q.rank, -1) < v.current_rank
                AND COALESCE(v.below_since, %(now)s) <= %(grace_ends_before)s THEN 'down'
           WHEN COALESCE(q.rank, -1) < v.current_rank AND v.below_since IS NULL THEN 'start'
           WHEN COALESCE(q.rank, -1) >= v.current_rank AND v.below_since IS NOT NULL THEN 'clear'
           ELSE 'wait'
       END AS action
  FROM v LEFT JOIN LATERAL ({qualified}) q ON true
 WHERE COALESCE(q.rank, -1) <> v.current_rank OR v.below_since IS NOT NULL
"""


def months_before(moment: datetime.datetime, months: int) -> datetime.datetime:
    """The same local wall-clock time ``months`` calendar months earlier (31 March − 1 month = 28/29 Feb)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ((%s::timestamptz AT TIME ZONE %s) - make_interval(months => %s)) AT TIME ZONE %s",
            [moment, settings.TIME_ZONE, months, settings.TIME_ZONE],
        )
        return cursor.fetchone()[0]


@audit.service
def evaluate_tiers(
    member_ids: Iterable[int] | None = None, *, actor: Actor, now: datetime.datetime | None = None
) -> int:
    """Move members to the tier their spend (or earned points) in the rolling window qualifies for.

    One set-based pass (``member_ids`` None: every active member). An upgrade takes effect at once; a
    member below their tier's threshold keeps it through the grace period, counted from the first
    evaluation that found them below, and then moves down to the tier they qualify for. Climbing back
    during the grace period cancels it. Every change leaves a ``TierChange`` row and an audit event.
    Returns the number of tier changes.
    """
    now = now or timezone.now()
    program = LoyaltyProgram.current()
    params: dict[str, Any] = {
        "now": now,
        "since": months_before(now, program.tier_window_months),
        "grace_ends_before": now - datetime.timedelta(days=program.downgrade_grace_days),
    }
    if member_ids is not None:
        params["ids"] = sorted({int(pk) for pk in member_ids})
        if not params["ids"]:
            return 0
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS loyalty_tier_eval")
        cursor.execute(_tier_eval_sql(program.tier_basis, only_some=member_ids is not None), params)
        cursor.execute(
            """
            INSERT INTO loyalty_tierchange (member_id, from_tier_id, to_tier_id, direction, basis, value,
                                            below_since, at)
            SELECT member_id, tier_id, qualified_tier_id, action, %(basis)s, value,
                   CASE WHEN action = 'down' THEN COALESCE(below_since, %(now)s) END, %(now)s
              FROM loyalty_tier_eval WHERE action IN ('up', 'down')
             ORDER BY member_id
            RETURNING member_id, from_tier_id, to_tier_id, direction, value
            """,
            {"basis": program.tier_basis, "now": now},
        )
        changes = cursor.fetchall()
        cursor.execute(
            """
            UPDATE members_member m SET tier_id = e.qualified_tier_id, updated_at = %(now)s
              FROM loyalty_tier_eval e
             WHERE m.id = e.member_id AND e.action IN ('up', 'down')
            """,
            {"now": now},
        )
        cursor.execute(
            """
            INSERT INTO loyalty_tierstanding (member_id, below_since, evaluated_at)
            SELECT member_id, CASE WHEN action = 'start' THEN %(now)s END, %(now)s
              FROM loyalty_tier_eval
             WHERE action = 'start' OR (below_since IS NOT NULL AND action IN ('up', 'down', 'clear'))
            ON CONFLICT (member_id) DO UPDATE
               SET below_since = EXCLUDED.below_since, evaluated_at = EXCLUDED.evaluated_at
            """,
            {"now": now},
        )
        cursor.execute(
            "SELECT member_id, home_store_id FROM loyalty_tier_eval WHERE action IN ('up', 'down')"
        )
        stores = dict(cursor.fetchall())
        cursor.execute("DROP TABLE loyalty_tier_eval")
    codes = dict(Tier.objects.values_list("pk", "code"))
    _bulk_audit(
        actor,
        "tier.changed",
        (
            (
                "members.member",
                member_id,
                stores.get(member_id),
                {
                    # Ids, like every other {"tier": [old, new]} in the trail (journeys compare them by rank).
                    "tier": [from_id, to_id],
                    "tier_code": [codes.get(from_id), codes.get(to_id)],
                    "direction": direction,
                    "basis": program.tier_basis,
                    "value": value,
                },
            )
            for member_id, from_id, to_id, direction, value in changes
        ),
    )
    return len(changes)


def evaluate_all_tiers(*, actor: Actor, now: datetime.datetime | None = None) -> LoyaltyRun:
    """Nightly: every member's tier, recorded as a run; the grace periods advance with time alone."""
    started = timezone.now()
    with audit.app_audited():
        changed = evaluate_tiers(None, actor=actor, now=now)
        run = LoyaltyRun.objects.create(
            kind=LoyaltyRun.Kind.TIER_EVALUATION,
            cutoff=now or started,
            started_at=started,
            finished_at=timezone.now(),
            members=changed,
            count=changed,
        )
        audit.record(actor, "tier.evaluation_run", target=run, changes={"changed": changed})
    return run


# --------------------------------------------------------------------------------------------------
# Coupons


def new_coupon_code() -> str:
    return secrets.token_hex(COUPON_CODE_BYTES).upper()


def normalize_coupon_code(code: str) -> str:
    return "".join(code.split()).upper()


def _template(template: CouponTemplate | str | int) -> CouponTemplate:
    """A template given as itself, its code (as scripts and campaigns name it) or its id."""
    if isinstance(template, CouponTemplate):
        return template
    found = CouponTemplate.objects.filter(code=template).first() if isinstance(template, str) else None
    if found is None and str(template).isdigit():
        found = CouponTemplate.objects.filter(pk=int(template)).first()
    if found is None:
        raise ValidationError(
            _("There is no coupon template %(template)s.") % {"template": template}, code="unknown"
        )
    return found


def _validity(
    template: CouponTemplate, now: datetime.datetime
) -> tuple[datetime.datetime, datetime.datetime]:
    """(valid from, expires at) of a coupon issued now; refused if the template cannot issue."""
    if not template.active:
        raise ValidationError(
            _("The coupon template %(template)s is not active.") % {"template": template.name},
            code="inactive",
        )
    valid_from = max(now, template.valid_from) if template.valid_from else now
    ends = [template.valid_until] if template.valid_until else []
    if template.valid_days:
        ends.append(valid_from + datetime.timedelta(days=template.valid_days))
    expires_at = min(ends)
    if expires_at <= valid_from:
        raise ValidationError(
            _("The coupon template %(template)s has ended.") % {"template": template.name}, code="ended"
        )
    return valid_from, expires_at


@audit.service
def issue_coupon(
    member: Member,
    template: CouponTemplate | str | int,
    actor: Actor,
    source: str = Coupon.Source.CAMPAIGN,
    *,
    source_ref: str = "",
    now: datetime.datetime | None = None,
) -> str:
    """Issue one coupon to ``member`` and return its code (a campaign script's ``{coupon}``).

    ``template`` is a template or its code. With a ``source_ref`` (e.g. ``task:123``) issuing again for
    the same template, member and reference returns the coupon already issued: a retried task never
    hands out two. Refused, with nothing written, for an inactive or ended template, a member who is not
    active, or a member who reached the template's limit.
    """
    now = now or timezone.now()
    template = _template(template)
    if source not in Coupon.Source.values:
        raise ValueError(f"unknown coupon source: {source!r}")
    member = Member.objects.select_for_update().get(pk=member.pk)
    if source_ref:
        existing = Coupon.objects.filter(template=template, member=member, source_ref=source_ref).first()
        if existing is not None:
            return existing.code
    if member.status != Member.Status.ACTIVE:
        raise ValidationError(_("Coupons can only be issued to active members."), code="inactive_member")
    valid_from, expires_at = _validity(template, now)
    if template.per_member_limit:
        held = Coupon.objects.filter(template=template, member=member).count()
        if held >= template.per_member_limit:
            raise ValidationError(
                _("This member already holds %(count)s coupon(s) of %(template)s, the limit.")
                % {"count": held, "template": template.name},
                code="limit",
            )
    for _attempt in range(5):
        coupon = Coupon(
            template=template,
            member=member,
            code=new_coupon_code(),
            source=source,
            source_ref=source_ref,
            issued_at=now,
            valid_from=valid_from,
            expires_at=expires_at,
            issued_by=actor.user if actor.user else None,
        )
        try:
            with transaction.atomic():
                coupon.save(force_insert=True)
            break
        except IntegrityError as error:
            if "(code)" not in str(error):  # only a clash of random codes is retried
                raise
    else:  # pragma: no cover - five 64-bit collisions in a row
        raise RuntimeError("could not draw a unique coupon code")
    audit.record(
        actor,
        "coupon.issued",
        target=coupon,
        store_id=member.home_store_id,
        changes={
            "member": member.pk,
            "template": template.code,
            "source": source,
            "source_ref": source_ref,
            "expires_at": expires_at,
        },
    )
    return coupon.code


@audit.service
def issue_coupons(
    members: QuerySet[Member],
    template: CouponTemplate | str | int,
    *,
    actor: Actor,
    source: str = Coupon.Source.BULK,
    source_ref: str = "",
    now: datetime.datetime | None = None,
) -> int:
    """Issue one coupon of ``template`` to every active member of ``members``, in one INSERT.

    Members at the template's limit are skipped. With a ``source_ref`` (e.g. ``bulk:2026-11-spring``),
    running the same issue again gives nobody a second coupon. Returns how many were issued now.
    """
    now = now or timezone.now()
    template = _template(template)
    if source not in Coupon.Source.values:
        raise ValueError(f"unknown coupon source: {source!r}")
    valid_from, expires_at = _validity(template, now)
    chosen_sql, chosen_params = members.order_by().values("pk").query.sql_with_params()
    limit_sql = (
        "AND (SELECT count(*) FROM loyalty_coupon c WHERE c.template_id = %s AND c.member_id = m.id) < %s"
        if template.per_member_limit
        else ""
    )
    limit_params = [template.pk, template.per_member_limit] if template.per_member_limit else []
    sql = f"""
        INSERT INTO loyalty_coupon (template_id, member_id, code, status, source, source_ref, issued_at,
                                    valid_from, expires_at, issued_by_id, redeemed_order_no)
        SELECT %s, m.id, upper(substr(md5(gen_random_uuid()::text), 1, 16)), 'issued',
               %s, %s, %s, %s, %s, %s, ''
          FROM members_member m
         WHERE m.id IN ({chosen_sql}) AND m.status = 'active' {limit_sql}
         ORDER BY m.id
        ON CONFLICT DO NOTHING
        RETURNING id, member_id, code
    """
    params = [
        template.pk,
        source,
        source_ref,
        now,
        valid_from,
        expires_at,
        actor.user.pk if actor.user else None,
        *chosen_params,
        *limit_params,
    ]
    rows = _fetch(sql, params)
    # The coupon rows keep who issued them, when, from which source.
    _audit_coupon_chunks(
        actor,
        "coupon.issued",
        rows,
        {"template": template.code, "source": source, "source_ref": source_ref, "expires_at": expires_at},
    )
    audit.record(
        actor,
        "coupon.bulk_issued",
        target=template,
        changes={"issued": len(rows), "source": source, "source_ref": source_ref},
    )
    return len(rows)


@audit.service
def redeem_coupon(
    code: str,
    *,
    actor: Actor,
    store: Store | None = None,
    order_no: str = "",
    order_amount: Decimal | None = None,
    member: Member | None = None,
    now: datetime.datetime | None = None,
) -> Coupon:
    """Redeem the coupon with ``code``, once. Safe under concurrency: a compare-and-set UPDATE.

    Two tills redeeming the same code at the same moment: one UPDATE wins, the other finds the coupon
    no longer ``issued`` and is refused with a translated error; nothing is written for it. ``member``
    (when the till knows who is paying) and ``order_amount`` (against the template's minimum spend) are
    checked too.
    """
    now = now or timezone.now()
    normalized = normalize_coupon_code(code)
    coupon = Coupon.objects.select_related("template", "member").filter(code=normalized).first()
    if coupon is None:
        raise ValidationError(_("No coupon has the code %(code)s.") % {"code": normalized}, code="unknown")
    if member is not None and coupon.member_id != member.pk:
        raise ValidationError(_("This coupon belongs to another member."), code="other_member")
    minimum = coupon.template.min_spend
    if order_amount is not None and minimum and order_amount < minimum:
        raise ValidationError(
            _("This coupon needs a spend of at least %(amount)s yuan.") % {"amount": minimum},
            code="threshold",
        )
    won = Coupon.objects.filter(
        pk=coupon.pk, status=Coupon.Status.ISSUED, valid_from__lte=now, expires_at__gt=now
    ).update(
        status=Coupon.Status.REDEEMED,
        redeemed_at=now,
        redeemed_by=actor.user if actor.user else None,
        redeemed_store=store,
        redeemed_order_no=order_no[:64],
    )
    coupon.refresh_from_db()
    if not won:
        raise _not_redeemable(coupon, now)
    audit.record(
        actor,
        "coupon.redeemed",
        target=coupon,
        store_id=store.pk if store else coupon.member.home_store_id,
        changes={
            "status": [Coupon.Status.ISSUED, Coupon.Status.REDEEMED],
            "member": coupon.member_id,
            "template": coupon.template.code,
            "order": order_no,
            "store": store.code if store else None,
        },
    )
    return coupon


def _not_redeemable(coupon: Coupon, now: datetime.datetime) -> ValidationError:
    if coupon.status == Coupon.Status.REDEEMED and coupon.redeemed_at:
        when = date_format(timezone.localtime(coupon.redeemed_at), "DATETIME_FORMAT")
        return ValidationError(
            _("This coupon was already redeemed on %(when)s.") % {"when": when}, code="already_redeemed"
        )
    if coupon.status == Coupon.Status.EXPIRED or coupon.expires_at <= now:
        return ValidationError(_("This coupon has expired."), code="expired")
    return ValidationError(_("This coupon is not valid yet."), code="not_yet_valid")


def expire_coupons(*, actor: Actor, now: datetime.datetime | None = None) -> LoyaltyRun:
    """Nightly: mark every coupon past its expiry as expired (already unredeemable from that moment)."""
    now = now or timezone.now()
    started = timezone.now()
    total = 0
    while True:
        with audit.app_audited():
            rows = _fetch(
                """
                UPDATE loyalty_coupon SET status = 'expired'
                 WHERE id IN (SELECT id FROM loyalty_coupon
                               WHERE status = 'issued' AND expires_at <= %(now)s
                               ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                RETURNING id, member_id
                """,
                {"now": now, "limit": COUPON_EXPIRY_BATCH_SIZE},
            )
            _audit_coupon_chunks(
                actor,
                "coupon.expired",
                sorted(rows, key=lambda row: row["id"]),
                {"status": ["issued", "expired"]},
            )
        total += len(rows)
        if len(rows) < COUPON_EXPIRY_BATCH_SIZE:
            break
    with audit.app_audited():
        run = LoyaltyRun.objects.create(
            kind=LoyaltyRun.Kind.COUPON_EXPIRY,
            cutoff=now,
            started_at=started,
            finished_at=timezone.now(),
            count=total,
        )
        audit.record(actor, "coupon.expiry_run", target=run, changes={"expired": total})
    return run
