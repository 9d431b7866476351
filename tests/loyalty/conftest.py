"""Shared set-up for the loyalty tests: role permissions, a tier ladder, a programme."""

from __future__ import annotations

import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from loyalty.models import LoyaltyProgram, TierRule
from members.models import Tier
from scrm.roles import sync_role_groups
from tests.factories import TierFactory

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(*args: int) -> datetime.datetime:
    """A moment in Shanghai time."""
    return datetime.datetime(*args, tzinfo=SHANGHAI)


@pytest.fixture(scope="session", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """The role groups with every app's permissions, loyalty's included."""
    with django_db_blocker.unblock():
        sync_role_groups()


@pytest.fixture
def program(db) -> LoyaltyProgram:
    program = LoyaltyProgram.current()
    program.points_per_yuan = Decimal("1")
    program.points_expiry_months = 12
    program.tier_basis = LoyaltyProgram.TierBasis.SPEND
    program.tier_window_months = 12
    program.downgrade_grace_days = 30
    program.save()
    return program


@pytest.fixture
def tiers(db, program) -> dict[str, Tier]:
    """普卡 (from 0) → 银卡 (1,000 yuan or 1,000 points, ×1.2) → 金卡 (5,000 yuan or 6,000 points, ×1.5)."""
    ladder = {
        "basic": TierFactory(code="basic", name="普卡", rank=1, threshold=Decimal("0")),
        "silver": TierFactory(code="silver", name="银卡", rank=2, threshold=Decimal("1000")),
        "gold": TierFactory(code="gold", name="金卡", rank=3, threshold=Decimal("5000")),
    }
    TierRule.objects.create(tier=ladder["basic"], points_multiplier=Decimal("1"), points_threshold=0)
    TierRule.objects.create(tier=ladder["silver"], points_multiplier=Decimal("1.2"), points_threshold=1000)
    TierRule.objects.create(tier=ladder["gold"], points_multiplier=Decimal("1.5"), points_threshold=6000)
    return ladder
