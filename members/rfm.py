"""RFM cells: recency, frequency and monetary value, each scored 1 (lowest) to N (best) in quantiles.

- Recency is the time of the last purchase (later is better), frequency the number of orders in
  the last 12 months, monetary the spend in the last 12 months net of refunds.
- HQ chooses the number of bins (5 = quintiles by default) and the population they are cut over:
  the whole brand, each region, or each home store (``RfmSettings`` in the admin).
- Every night the edges are cut with ``percentile_cont`` over the buyers of each population and
  stored (``RfmBinEdges``); then every cell is re-scored in one UPDATE. A value exactly on an edge
  stays in the lower bin, so a crowd of one-order buyers shares the lowest frequency score.
- Between nightly runs, members whose orders come in are scored against the stored edges by the
  metrics refresh (members.metrics), so their cell is current and equals what the nightly run
  gives with the same edges. Recency edges are timestamps, not day counts, so time passing alone
  never changes a stored cell; the nightly re-cut moves the edges with the population.
- A population with no stored edges yet (a new store) is scored against the brand's edges.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from .metrics import partition_sql, rfm_cell_sql, rfm_join_sql
from .models import RfmSettings


@dataclass(frozen=True)
class RfmRebin:
    populations: int
    cells_changed: int


_EDGES_SQL = """
INSERT INTO members_rfmbinedges (scope, scope_id, recency, frequency, monetary, buyers, computed_at)
SELECT %(scope)s, {population},
       percentile_cont(%(fractions)s::float8[])
           WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM m.last_purchase_at)::float8),
       percentile_cont(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY m.orders_12m::float8),
       percentile_cont(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY m.spend_12m::float8),
       COUNT(*), %(now)s
  FROM members_member m
 WHERE m.order_count > 0 AND m.status <> 'merged'
 GROUP BY 2
"""


def _rescore_sql(partition: str) -> str:
    cell = rfm_cell_sql(
        "e",
        last_purchase_at="mm.last_purchase_at",
        orders_12m="mm.orders_12m",
        spend_12m="mm.spend_12m",
        order_count="mm.order_count",
    )
    return f"""
UPDATE members_member m
   SET rfm_cell = x.cell
  FROM (SELECT mm.id, {cell} AS cell
          FROM members_member mm {rfm_join_sql("e", "mm.home_store_id", partition)}) x
 WHERE m.id = x.id AND m.rfm_cell IS DISTINCT FROM x.cell
"""


def bin_fractions(bins: int) -> list[float]:
    """The quantile cut points for ``bins`` bins, e.g. 5 → [0.2, 0.4, 0.6, 0.8]."""
    return [i / bins for i in range(1, bins)]


@transaction.atomic
def rebin_rfm(*, now: datetime.datetime | None = None) -> RfmRebin:
    """Re-cut the edges over current member metrics and re-score every cell; set-based, no loops.

    Called by the full metrics recompute (members.metrics.refresh_member_metrics with None); the
    caller audits it.
    """
    config = RfmSettings.current()
    params = {"fractions": bin_fractions(config.bins), "now": now or timezone.now()}
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM members_rfmbinedges")
        populations = 0
        scopes = [RfmSettings.Partition.BRAND]
        if config.partition != RfmSettings.Partition.BRAND:
            scopes.append(config.partition)
        for scope in scopes:
            cursor.execute(
                _EDGES_SQL.format(population=partition_sql(scope, "m.home_store_id")),
                {**params, "scope": str(scope)},
            )
            populations += cursor.rowcount
        cursor.execute(_rescore_sql(config.partition))
        return RfmRebin(populations=populations, cells_changed=cursor.rowcount)
