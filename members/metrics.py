"""Member metrics derived from orders, computed in one set-based SQL statement.

The same statement serves the per-order refresh (a few member ids) and the nightly recompute (every
member), so both give exactly the same values for the same moment. Recency-dependent values
(lifecycle stage, the R of RFM) change with time alone, which is why the nightly run exists.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.conf import settings
from django.db import connection
from django.utils import timezone

# Bin edges, ascending; a value scores 1 + the number of edges it reaches. Recency is scored the
# other way round (fewer days since the last purchase is better). Issue-level RFM tuning
# (quintiles per brand or store) replaces these defaults through the same setting.
DEFAULT_RFM_BINS: dict[str, list[float]] = {
    "recency_days": [30, 60, 90, 180],  # ≤30 days → 5 … >180 days → 1
    "frequency": [2, 3, 5, 10],  # orders ever: 1 → 1, 2 → 2, 3–4 → 3, 5–9 → 4, 10+ → 5
    "monetary": [500, 1000, 3000, 8000],  # spend in 12 months, yuan
}


def _rfm_bins() -> dict[str, list[float]]:
    return getattr(settings, "SCRM_RFM_BINS", DEFAULT_RFM_BINS)


def _score_sql(expr: str, edges: list[float], *, reverse: bool = False) -> str:
    """SQL for the 1–5 score of ``expr`` against ascending ``edges``."""
    if reverse:
        # Recency: at or below the first edge scores 5, above the last edge scores 1.
        cases = " ".join(f"WHEN {expr} <= {float(edge)} THEN {5 - i}" for i, edge in enumerate(edges))
        return f"(CASE {cases} ELSE 1 END)"
    cases = " ".join(
        f"WHEN {expr} >= {float(edge)} THEN {len(edges) + 1 - i}" for i, edge in enumerate(reversed(edges))
    )
    return f"(CASE {cases} ELSE 1 END)"


def _metrics_sql(*, only_some: bool) -> str:
    bins = _rfm_bins()
    days = "(EXTRACT(EPOCH FROM (%(now)s - agg.last_purchase_at)) / 86400.0)"
    r = _score_sql(days, bins["recency_days"], reverse=True)
    f = _score_sql("agg.order_count", bins["frequency"])
    m = _score_sql("agg.spend_12m", bins["monetary"])
    where = "WHERE m.id = ANY(%(ids)s)" if only_some else ""
    return f"""
WITH agg AS (
    SELECT m.id AS member_id,
           MIN(o.paid_at) AS first_purchase_at,
           MAX(o.paid_at) AS last_purchase_at,
           COUNT(o.id) AS order_count,
           COALESCE(SUM(o.amount - o.refunded_amount), 0) AS total_spend,
           COUNT(o.id) FILTER (WHERE o.paid_at >= %(since)s) AS orders_12m,
           COALESCE(SUM(o.amount - o.refunded_amount) FILTER (WHERE o.paid_at >= %(since)s), 0) AS spend_12m
      FROM members_member m
      LEFT JOIN members_order o
        ON o.member_id = m.id AND o.status IN ('paid', 'partially_refunded') AND o.paid_at <= %(now)s
      {where}
     GROUP BY m.id
), derived AS (
    SELECT agg.*,
           CASE WHEN agg.order_count = 0 THEN 0
                ELSE ROUND(agg.total_spend / agg.order_count, 2) END AS avg_order_value,
           CASE WHEN agg.order_count = 0 THEN 'no_purchase'
                WHEN {days} > %(lost_days)s THEN 'lost'
                WHEN {days} > %(dormant_days)s THEN 'dormant'
                WHEN agg.order_count = 1 THEN 'first_purchase'
                ELSE 'repeat' END AS lifecycle_stage,
           CASE WHEN agg.order_count = 0 THEN ''
                ELSE {r}::text || {f}::text || {m}::text END AS rfm_cell
      FROM agg
)
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
  FROM derived d
 WHERE m.id = d.member_id
   AND (m.first_purchase_at, m.last_purchase_at, m.order_count, m.total_spend, m.orders_12m,
        m.spend_12m, m.avg_order_value, m.lifecycle_stage, m.rfm_cell)
       IS DISTINCT FROM
       (d.first_purchase_at, d.last_purchase_at, d.order_count::integer, d.total_spend, d.orders_12m::integer,
        d.spend_12m, d.avg_order_value, d.lifecycle_stage, d.rfm_cell)
"""


def refresh_member_metrics(
    member_ids: Iterable[int] | None = None, *, now: datetime.datetime | None = None
) -> int:
    """Recompute metrics for ``member_ids`` (all members when None); returns how many rows changed.

    Only rows whose values change are written, so a nightly run over unchanged members is cheap.
    """
    now = now or timezone.now()
    params = {
        "now": now,
        "since": now - datetime.timedelta(days=365),
        "dormant_days": settings.SCRM_DORMANT_AFTER_DAYS,
        "lost_days": settings.SCRM_LOST_AFTER_DAYS,
    }
    if member_ids is not None:
        ids = sorted({int(i) for i in member_ids})
        if not ids:
            return 0
        params["ids"] = ids
    with connection.cursor() as cursor:
        cursor.execute(_metrics_sql(only_some=member_ids is not None), params)
        return cursor.rowcount
