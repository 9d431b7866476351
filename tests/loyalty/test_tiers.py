"""Tiers follow spend (or earned points) in a rolling window: up at once, down only after the grace period."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from loyalty import services
from loyalty.models import LoyaltyProgram, LoyaltyRun, TierChange, TierStanding
from members.models import Member
from members.services import OrderInput, record_orders
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import MemberFactory

from .conftest import local

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


def buy(member: Member, number: str, amount: str, paid_at: datetime.datetime) -> None:
    record_orders(
        [
            OrderInput(
                channel="store",
                external_no=number,
                paid_at=paid_at,
                amount=Decimal(amount),
                member=member,
                store=member.home_store,
            )
        ],
        actor=ACTOR,
    )


def tier_of(member: Member) -> str | None:
    member.refresh_from_db(fields=["tier"])
    return member.tier.code if member.tier else None


def test_an_order_crossing_a_threshold_upgrades_at_once_with_history(tiers):
    member = MemberFactory(tier=tiers["basic"])
    # Orders dated now-ish, so the rolling window of the order path holds them.
    buy(member, "A1", "1200", datetime.datetime.now(tz=datetime.UTC) - datetime.timedelta(days=1))

    assert tier_of(member) == "silver"
    change = TierChange.objects.get(member=member)
    assert (change.from_tier, change.to_tier, change.direction) == (tiers["basic"], tiers["silver"], "up")
    assert change.value == Decimal("1200.00")
    assert change.basis == LoyaltyProgram.TierBasis.SPEND
    event = AuditEvent.objects.get(action="tier.changed")
    assert event.target_id == str(member.pk)
    assert event.changes["tier"] == [tiers["basic"].pk, tiers["silver"].pk]
    assert event.changes["tier_code"] == ["basic", "silver"]
    assert event.changes["direction"] == "up"


def test_a_member_without_a_tier_gets_the_entry_tier(tiers):
    member = MemberFactory(tier=None)

    services.evaluate_tiers([member.pk], actor=ACTOR)

    assert tier_of(member) == "basic"


def test_a_downgrade_waits_for_the_grace_period_then_moves_to_the_qualified_tier(tiers):
    member = MemberFactory(tier=tiers["basic"])
    buy(member, "A1", "6000", local(2026, 1, 10))
    services.evaluate_tiers([member.pk], actor=ACTOR, now=local(2026, 1, 11))
    assert tier_of(member) == "gold"

    # The January order leaves the 12-month window on 10 January 2027: below every threshold but basic.
    services.evaluate_tiers(None, actor=ACTOR, now=local(2027, 1, 11))
    assert tier_of(member) == "gold"
    assert TierStanding.objects.get(member=member).below_since == local(2027, 1, 11)

    services.evaluate_tiers(None, actor=ACTOR, now=local(2027, 2, 9))  # day 29 of 30
    assert tier_of(member) == "gold"

    services.evaluate_tiers(None, actor=ACTOR, now=local(2027, 2, 10))  # day 30
    assert tier_of(member) == "basic"
    down = TierChange.objects.get(member=member, direction="down")
    assert (down.from_tier, down.to_tier, down.below_since) == (
        tiers["gold"],
        tiers["basic"],
        local(2027, 1, 11),
    )
    assert TierStanding.objects.get(member=member).below_since is None
    assert list(
        TierChange.objects.filter(member=member).order_by("at").values_list("direction", flat=True)
    ) == [
        "up",
        "down",
    ]


def test_climbing_back_during_the_grace_period_cancels_it(tiers):
    member = MemberFactory(tier=tiers["basic"])
    buy(member, "A1", "1500", local(2026, 1, 10))
    services.evaluate_tiers([member.pk], actor=ACTOR, now=local(2026, 1, 11))
    services.evaluate_tiers(None, actor=ACTOR, now=local(2027, 1, 11))
    assert TierStanding.objects.get(member=member).below_since is not None

    buy(member, "A2", "1000", local(2027, 1, 20))
    services.evaluate_tiers(None, actor=ACTOR, now=local(2027, 1, 21))
    services.evaluate_tiers(None, actor=ACTOR, now=local(2027, 3, 1))

    assert tier_of(member) == "silver"
    assert TierStanding.objects.get(member=member).below_since is None
    assert TierChange.objects.filter(member=member, direction="down").count() == 0


def test_no_grace_period_downgrades_at_once(tiers, program):
    program.downgrade_grace_days = 0
    program.save()
    member = MemberFactory(tier=tiers["gold"])

    services.evaluate_tiers([member.pk], actor=ACTOR)

    assert tier_of(member) == "basic"


def test_refunds_count_against_spend_and_the_spendable_balance_never_counts(tiers):
    member = MemberFactory(tier=tiers["basic"])
    record_orders(
        [
            OrderInput(
                channel="store",
                external_no="A1",
                paid_at=local(2026, 5, 1),
                amount=Decimal("1500"),
                refunded_amount=Decimal("600"),
                status="partially_refunded",
                member=member,
                store=member.home_store,
            )
        ],
        actor=ACTOR,
    )
    services.evaluate_tiers([member.pk], actor=ACTOR, now=local(2026, 5, 2))
    member.refresh_from_db()
    assert member.points_balance == 900
    assert tier_of(member) == "basic"  # 900 yuan net is short of 1,000, whatever the balance holds


def test_tiers_on_points_earned_in_the_window(tiers, program):
    program.tier_basis = LoyaltyProgram.TierBasis.POINTS
    program.save()
    member = MemberFactory(tier=tiers["basic"])
    buy(member, "A1", "999", local(2026, 5, 1))  # 999 points at ×1: short of 1,000
    services.evaluate_tiers([member.pk], actor=ACTOR, now=local(2026, 5, 2))
    assert tier_of(member) == "basic"

    buy(member, "A2", "1", local(2026, 5, 3))
    services.evaluate_tiers([member.pk], actor=ACTOR, now=local(2026, 5, 4))

    assert tier_of(member) == "silver"
    assert TierChange.objects.get(member=member).basis == "points"


def test_the_nightly_evaluation_is_recorded_as_a_run(tiers):
    MemberFactory(tier=None)
    MemberFactory(tier=tiers["basic"])

    run = services.evaluate_all_tiers(actor=ACTOR)
    again = services.evaluate_all_tiers(actor=ACTOR)

    assert run.count == 1
    assert again.count == 0
    assert LoyaltyRun.objects.filter(kind=LoyaltyRun.Kind.TIER_EVALUATION).count() == 2
    assert AuditEvent.objects.filter(action="tier.evaluation_run").count() == 2
