"""Which orders the guides' work brought in. Read-only, one set-based SQL statement.

The rule:

- an order is credited to the most recent task for its member that was completed as *reached* — the
  outcomes "reached", "visit booked" and "purchased" (``campaigns.work.REACHED_OUTCOMES``): the guide
  spoke with the member — at most N days before the order was paid, N being the campaign's attribution
  window (``Campaign.attribution_days``; 7 for journey steps, which have none). The window is closed:
  a task completed exactly N days (to the second) before payment counts, one completed after the payment
  does not;
- the credit goes to that task's guide and store: the guide who did the work, even after handing the
  member over (a leaving guide keeps the credit of what they did before the hand-over date);
- an order in a store (channel ``store``) counts for whoever reached the member; an online order (any
  other channel) counts only for the member's own guide: the most recent reaching task must have been
  done by the guide who was the member's exclusive guide when the order was paid (from the guide
  assignment history), so a colleague's call does not claim a Tmall order;
- paid and partly refunded orders count, net of refunds; refunded and cancelled ones do not; orders of
  non-members have no task to be credited to.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from members.models import Channel, Order

from .work import REACHED_OUTCOMES

DEFAULT_ATTRIBUTION_DAYS = 7
COUNTED_ORDER_STATES = (Order.Status.PAID, Order.Status.PARTIALLY_REFUNDED)

# The LATERAL subquery picks, per order, the one task it is credited to (or none); filters on the
# credited task's guide, store or campaign apply to that choice, never before it, so narrowing to one
# guide cannot credit an order to them that the whole picture gives to a colleague.
_ATTRIBUTED_SQL = """
SELECT o.id, o.member_id, o.paid_at, o.channel, (o.amount - o.refunded_amount) AS net,
       t.task_id, t.guide_id, t.store_id, t.run_id, t.campaign_id, t.completed_at
FROM members_order o
CROSS JOIN LATERAL (
    SELECT t.id AS task_id, t.guide_id, t.store_id, t.run_id, r.campaign_id, t.completed_at
    FROM campaigns_task t
    JOIN campaigns_campaignrun r ON r.id = t.run_id
    LEFT JOIN campaigns_campaign c ON c.id = r.campaign_id
    WHERE t.member_id = o.member_id
      AND t.state = 'done'
      AND t.outcome = ANY(%(reached)s)
      AND t.completed_at <= o.paid_at
      AND t.completed_at >= o.paid_at - make_interval(days => COALESCE(c.attribution_days, %(default_days)s))
      AND (
        o.channel = %(store_channel)s
        OR EXISTS (
            SELECT 1 FROM members_guideassignment ga
            WHERE ga.member_id = o.member_id AND ga.guide_id = t.guide_id
              AND ga.started_at <= o.paid_at AND (ga.ended_at IS NULL OR ga.ended_at > o.paid_at)
        )
      )
    ORDER BY t.completed_at DESC, t.id DESC
    LIMIT 1
) t
WHERE o.member_id IS NOT NULL
  AND o.status = ANY(%(states)s)
  AND o.paid_at >= %(start)s AND o.paid_at < %(end)s
"""


@dataclass(frozen=True)
class AttributedOrder:
    order_id: int
    member_id: int
    paid_at: datetime.datetime
    channel: str
    net: Decimal
    task_id: int
    guide_id: int | None
    store_id: int
    run_id: int
    campaign_id: int | None
    completed_at: datetime.datetime


@dataclass(frozen=True)
class AttributionTotals:
    orders: int = 0
    members: int = 0  # conversions: distinct members who bought after being reached
    sales: Decimal = Decimal("0")


def _filtered(
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    guide_ids: Sequence[int] | None,
    store_id: int | None,
    campaign_id: int | None,
) -> tuple[str, dict]:
    sql = _ATTRIBUTED_SQL
    params: dict = {
        "reached": [str(o) for o in REACHED_OUTCOMES],
        "default_days": DEFAULT_ATTRIBUTION_DAYS,
        "store_channel": str(Channel.STORE),
        "states": [str(s) for s in COUNTED_ORDER_STATES],
        "start": start,
        "end": end,
    }
    outer = []
    if guide_ids is not None:
        outer.append("t.guide_id = ANY(%(guide_ids)s)")
        params["guide_ids"] = list(guide_ids)
    if store_id is not None:
        outer.append("t.store_id = %(store_id)s")
        params["store_id"] = store_id
    if campaign_id is not None:
        outer.append("t.campaign_id = %(campaign_id)s")
        params["campaign_id"] = campaign_id
    if outer:
        sql += " AND " + " AND ".join(outer)
    return sql, params


def attributed_orders(
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    guide_ids: Sequence[int] | None = None,
    store_id: int | None = None,
    campaign_id: int | None = None,
) -> list[AttributedOrder]:
    """Every order paid in ``[start, end)`` that is credited to a task, with the task it went to."""
    sql, params = _filtered(
        start=start, end=end, guide_ids=guide_ids, store_id=store_id, campaign_id=campaign_id
    )
    with connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY o.paid_at, o.id", params)
        return [AttributedOrder(*row) for row in cursor.fetchall()]


def attribution_by_guide(
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    guide_ids: Sequence[int] | None = None,
    store_id: int | None = None,
    campaign_id: int | None = None,
) -> dict[int | None, AttributionTotals]:
    """Credited orders, converted members and net sales per guide, aggregated in the database."""
    sql, params = _filtered(
        start=start, end=end, guide_ids=guide_ids, store_id=store_id, campaign_id=campaign_id
    )
    query = (
        "SELECT a.guide_id, COUNT(*), COUNT(DISTINCT a.member_id), COALESCE(SUM(a.net), 0) "
        f"FROM ({sql}) a GROUP BY a.guide_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return {
            guide_id: AttributionTotals(orders=orders, members=members, sales=sales)
            for guide_id, orders, members, sales in cursor.fetchall()
        }
