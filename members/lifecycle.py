"""Lifecycle stages: where each member stands, and every change of stage as a dated transition.

One stage per member, in ``Member.lifecycle_stage`` (segments filter on it):

- ``no_purchase`` — member who never bought (未购会员). A prospect (a buyer or contact who has not
  joined) is not a member and has no row here; non-member orders count in member share.
- ``first_purchase`` — exactly one purchase (首购), the last one recent enough to be active.
- ``repeat`` — two purchases or more (复购), active.
- ``advocate`` — an active buyer HQ counts as an advocate/KOC: carrying HQ's advocate tag, or with
  at least HQ's number of orders and spend in the last 12 months (``LifecycleSettings``).
- ``dormant`` — a buyer whose last purchase is older than HQ's dormant threshold (沉睡).
- ``lost`` — a buyer whose last purchase is older than HQ's lost threshold (流失).

``first_purchase``, ``repeat`` and ``advocate`` are the active stages; dormant and lost win over
them. Purchases are orders paid or partially refunded, as in every member metric.

Every refresh of a member's metrics (orders coming in, the nightly recompute) records each change
of stage as one ``LifecycleTransition`` in the same SQL statement, dated when it took effect:

- into dormant or lost: the last purchase plus the threshold, the moment the member crossed it,
  even when the nightly run sees it later;
- caused by a new purchase (first purchase, repeat, reactivation from dormant or lost): the time of
  that purchase;
- otherwise (thresholds or tags changed, a refund): the time of the refresh.

Churn counts transitions into ``lost``; reactivation counts transitions from dormant or lost back
to an active stage. HQ's thresholds apply from the next refresh; saving the settings in the admin
queues a full recompute.
"""

from __future__ import annotations

import datetime

from django.db.models import Count, Q, QuerySet

from .models import LifecycleTransition, Member

Stage = Member.Lifecycle

BUYING_STAGES = (Stage.FIRST_PURCHASE, Stage.REPEAT, Stage.ADVOCATE)
INACTIVE_STAGES = (Stage.DORMANT, Stage.LOST)


def transitions_between(
    start: datetime.datetime, end: datetime.datetime, *, members: QuerySet[Member] | None = None
) -> QuerySet[LifecycleTransition]:
    """Transitions dated from ``start`` (included) to ``end`` (excluded), optionally of ``members``."""
    transitions = LifecycleTransition.objects.filter(at__gte=start, at__lt=end)
    if members is not None:
        transitions = transitions.filter(member__in=members.values("pk"))
    return transitions


def transition_counts(
    start: datetime.datetime, end: datetime.datetime, *, members: QuerySet[Member] | None = None
) -> dict[str, int]:
    """How many members went dormant, were lost, were reactivated or first bought, in one query."""
    reactivated = Q(from_stage__in=INACTIVE_STAGES, to_stage__in=BUYING_STAGES)
    return transitions_between(start, end, members=members).aggregate(
        dormant=Count("pk", filter=Q(to_stage=Stage.DORMANT)),
        lost=Count("pk", filter=Q(to_stage=Stage.LOST)),
        reactivated=Count("pk", filter=reactivated),
        first_purchases=Count("pk", filter=Q(from_stage=Stage.NO_PURCHASE, to_stage__in=BUYING_STAGES)),
    )
