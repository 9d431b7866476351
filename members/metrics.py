"""Member metrics derived from orders, computed in one set-based SQL statement.

The same statement serves the per-batch refresh after orders come in (a few hundred member ids) and
the nightly recompute (every member), so both give exactly the same values for the same moment and
the same RFM edges. It also writes one ``LifecycleTransition`` row per member whose stage changes
(members.lifecycle explains the stages and how a transition is dated). Values that change with time
alone (the 12-month window, dormant and lost) are why the nightly run exists; RFM edges are cut
nightly over the whole population (members.rfm) and stored, so the refresh only looks them up.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from django.db import connection
from django.utils import timezone

from .models import LifecycleSettings, RfmSettings

# Up to 9 bins → up to 8 edges per dimension; missing edges compare as NULL and add nothing.
MAX_EDGES = 8


@dataclass(frozen=True)
class MetricsRefresh:
    """What one refresh wrote: member rows changed and lifecycle transitions recorded."""

    members_changed: int
    transitions: int


def bound_cursor() -> psycopg.Cursor:
    """A cursor on Django's connection (same transaction) that binds parameters on the server.

    Django quotes parameters into the SQL text on the client; for the batch statements of order
    ingestion (arrays of a thousand values) that costs more than running them. Statements are not
    prepared (``prepare=False`` at each call), so a transaction-pooling proxy stays safe.
    """
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def partition_sql(partition: str, store_column: str) -> str:
    """SQL for the id of the RFM population a member belongs to (see ``RfmSettings.Partition``)."""
    if partition == RfmSettings.Partition.STORE:
        return store_column
    if partition == RfmSettings.Partition.REGION:
        return f"(SELECT region_id FROM stores_store WHERE id = {store_column})"
    return "0"


def _score_sql(value: str, edges: str) -> str:
    """1 + the number of edges strictly below ``value``: ties at an edge stay in the lower bin."""
    terms = " + ".join(
        f"(CASE WHEN {value} > ({edges})[{i}] THEN 1 ELSE 0 END)" for i in range(1, MAX_EDGES + 1)
    )
    return f"(1 + {terms})"


def rfm_join_sql(alias: str, store_column: str, partition: str) -> str:
    """LEFT JOINs bringing the stored edges of the member's population, falling back to the brand's."""
    partition = RfmSettings.Partition(partition).value  # a known choice, never free text in the SQL
    return f"""
      LEFT JOIN members_rfmbinedges {alias}_p
        ON {alias}_p.scope = '{partition}' AND {alias}_p.scope_id = {partition_sql(partition, store_column)}
      LEFT JOIN members_rfmbinedges {alias}_b ON {alias}_b.scope = 'brand' AND {alias}_b.scope_id = 0"""


def rfm_cell_sql(
    alias: str, *, last_purchase_at: str, orders_12m: str, spend_12m: str, order_count: str
) -> str:
    """The RFM cell, e.g. '531': recency (later last purchase scores higher), frequency and
    monetary over the last 12 months, each scored against the population's stored edges."""
    recency = f"COALESCE({alias}_p.recency, {alias}_b.recency)"
    frequency = f"COALESCE({alias}_p.frequency, {alias}_b.frequency)"
    monetary = f"COALESCE({alias}_p.monetary, {alias}_b.monetary)"
    r = _score_sql(f"EXTRACT(EPOCH FROM {last_purchase_at})::float8", recency)
    f = _score_sql(f"{orders_12m}::float8", frequency)
    m = _score_sql(f"{spend_12m}::float8", monetary)
    return f"""(CASE WHEN {order_count} = 0 OR {recency} IS NULL THEN ''
                ELSE {r}::text || {f}::text || {m}::text END)"""


def stage_sql(*, order_count: str, days: str, orders_12m: str, spend_12m: str, tagged: str) -> str:
    """The lifecycle stage (members.lifecycle): dormant and lost win over the purchase ladder."""
    return f"""(CASE WHEN {order_count} = 0 THEN 'no_purchase'
                WHEN {days} > %(lost_days)s THEN 'lost'
                WHEN {days} > %(dormant_days)s THEN 'dormant'
                WHEN {tagged} OR (
                     {order_count} >= 2 AND %(advocate_orders)s::integer IS NOT NULL
                     AND {orders_12m} >= %(advocate_orders)s::integer
                     AND {spend_12m} >= COALESCE(%(advocate_spend)s::numeric, 0)) THEN 'advocate'
                WHEN {order_count} = 1 THEN 'first_purchase'
                ELSE 'repeat' END)"""


_COLUMNS = """
           COUNT(*) AS order_count,
           COALESCE(SUM(o.amount - o.refunded_amount), 0) AS total_spend,
           COUNT(*) FILTER (WHERE o.paid_at >= %(since)s) AS orders_12m,
           COALESCE(SUM(o.amount - o.refunded_amount) FILTER (WHERE o.paid_at >= %(since)s), 0) AS spend_12m,
           MIN(o.paid_at) AS first_purchase_at,
           MAX(o.paid_at) AS last_purchase_at"""

_MEMBER_COLUMNS = """
           m.id AS member_id,
           m.home_store_id,
           m.lifecycle_stage AS old_stage,
           m.last_purchase_at AS old_last_purchase_at,
           (%(advocate_tag)s::bigint IS NOT NULL AND EXISTS (
               SELECT 1 FROM members_membertag t
                WHERE t.member_id = m.id AND t.tag_id = %(advocate_tag)s::bigint)) AS tagged"""

_BUYING = "o.status IN ('paid', 'partially_refunded') AND o.paid_at <= %(now)s"

# A few members (an order batch): one index probe of (member, paid_at) per member.
_SOME_SQL = f"""
    SELECT {_MEMBER_COLUMNS}, o.*
      FROM members_member m
     CROSS JOIN LATERAL (SELECT {_COLUMNS}
                           FROM members_order o
                          WHERE o.member_id = m.id AND {_BUYING}) o
     WHERE m.id = ANY(%(ids)s)"""

# Every member (the nightly run): one pass over the orders, grouped.
_ALL_SQL = f"""
    SELECT {_MEMBER_COLUMNS},
           COALESCE(o.order_count, 0) AS order_count,
           COALESCE(o.total_spend, 0) AS total_spend,
           COALESCE(o.orders_12m, 0) AS orders_12m,
           COALESCE(o.spend_12m, 0) AS spend_12m,
           o.first_purchase_at,
           o.last_purchase_at
      FROM members_member m
      LEFT JOIN (SELECT o.member_id, {_COLUMNS}
                   FROM members_order o
                  WHERE o.member_id IS NOT NULL AND {_BUYING}
                  GROUP BY o.member_id) o ON o.member_id = m.id"""


def _metrics_sql(*, only_some: bool, partition: str) -> str:
    days = "(EXTRACT(EPOCH FROM (%(now)s - agg.last_purchase_at)) / 86400.0)"
    aggregate = _SOME_SQL if only_some else _ALL_SQL
    only = "AND m.id = ANY(%(ids)s)" if only_some else ""
    stage = stage_sql(
        order_count="agg.order_count",
        days=days,
        orders_12m="agg.orders_12m",
        spend_12m="agg.spend_12m",
        tagged="agg.tagged",
    )
    cell = rfm_cell_sql(
        "e",
        last_purchase_at="d.last_purchase_at",
        orders_12m="d.orders_12m",
        spend_12m="d.spend_12m",
        order_count="d.order_count",
    )
    return f"""
WITH agg AS ({aggregate}), derived AS (
    SELECT agg.*,
           CASE WHEN agg.order_count = 0 THEN 0
                ELSE ROUND(agg.total_spend / agg.order_count, 2) END AS avg_order_value,
           {stage} AS lifecycle_stage
      FROM agg
), scored AS (
    SELECT d.*, {cell} AS rfm_cell
      FROM derived d {rfm_join_sql("e", "d.home_store_id", partition)}
), updated AS (
    UPDATE members_member m
       SET first_purchase_at = d.first_purchase_at,
           last_purchase_at = d.last_purchase_at,
           order_count = d.order_count,
           total_spend = d.total_spend,
           orders_12m = d.orders_12m,
           spend_12m = d.spend_12m,
           avg_order_value = d.avg_order_value,
           lifecycle_stage = d.lifecycle_stage,
           rfm_cell = d.rfm_cell,
           metrics_updated_at = %(now)s
      FROM scored d
     WHERE m.id = d.member_id {only}
       AND (m.first_purchase_at, m.last_purchase_at, m.order_count, m.total_spend, m.orders_12m,
            m.spend_12m, m.avg_order_value, m.lifecycle_stage, m.rfm_cell)
           IS DISTINCT FROM
           (d.first_purchase_at, d.last_purchase_at, d.order_count::integer, d.total_spend,
            d.orders_12m::integer, d.spend_12m, d.avg_order_value, d.lifecycle_stage, d.rfm_cell)
    RETURNING m.id, d.old_stage, d.lifecycle_stage AS new_stage, d.last_purchase_at, d.old_last_purchase_at
), transitions AS (
    INSERT INTO members_lifecycletransition (member_id, from_stage, to_stage, at, recorded_at)
    SELECT u.id, u.old_stage, u.new_stage,
           CASE WHEN u.new_stage = 'dormant'
                     THEN u.last_purchase_at + make_interval(days => %(dormant_days)s)
                WHEN u.new_stage = 'lost'
                     THEN u.last_purchase_at + make_interval(days => %(lost_days)s)
                WHEN u.last_purchase_at IS NOT NULL
                     AND u.last_purchase_at IS DISTINCT FROM u.old_last_purchase_at
                     THEN u.last_purchase_at
                ELSE %(now)s END,
           %(recorded_at)s
      FROM updated u
     WHERE u.new_stage <> u.old_stage
    RETURNING 1
)
SELECT (SELECT COUNT(*) FROM updated), (SELECT COUNT(*) FROM transitions)
"""


def lifecycle_params() -> dict[str, object]:
    """The SQL parameters of HQ's lifecycle settings (members.lifecycle)."""
    config = LifecycleSettings.current()
    return {
        "dormant_days": config.dormant_after_days,
        "lost_days": config.lost_after_days,
        "advocate_orders": config.advocate_min_orders_12m,
        "advocate_spend": config.advocate_min_spend_12m,
        "advocate_tag": config.advocate_tag_id,
    }


def refresh_member_metrics_detailed(
    member_ids: Iterable[int] | None = None, *, now: datetime.datetime | None = None
) -> MetricsRefresh:
    """Recompute metrics, stage and RFM cell for ``member_ids`` (all members when None).

    Only rows whose values change are written, and only they can produce a transition, so a
    nightly run over unchanged members writes nothing.
    """
    now = now or timezone.now()
    params: dict[str, object] = {
        "now": now,
        "recorded_at": timezone.now(),
        "since": now - datetime.timedelta(days=365),
        **lifecycle_params(),
    }
    if member_ids is not None:
        ids = sorted({int(i) for i in member_ids})
        if not ids:
            return MetricsRefresh(0, 0)
        params["ids"] = ids
    partition = RfmSettings.current().partition
    with bound_cursor() as cursor:
        cursor.execute(
            _metrics_sql(only_some=member_ids is not None, partition=partition), params, prepare=False
        )
        members_changed, transitions = cursor.fetchone()
    return MetricsRefresh(members_changed, transitions)


def refresh_member_metrics(
    member_ids: Iterable[int] | None = None, *, now: datetime.datetime | None = None
) -> int:
    """Recompute metrics for ``member_ids``; returns how many member rows changed.

    With None (every member) the RFM edges are also re-cut over the fresh metrics and the cells
    re-scored (members.rfm), and the count includes the members whose cell moved.
    """
    refresh = refresh_member_metrics_detailed(member_ids, now=now)
    if member_ids is not None:
        return refresh.members_changed
    from .rfm import rebin_rfm  # rfm imports this module's SQL helpers

    return refresh.members_changed + rebin_rfm(now=now).cells_changed
