"""One row of every loyalty model, made through the services, for tests that open every admin page."""

from __future__ import annotations

from decimal import Decimal

from loyalty import services
from loyalty.models import Benefit, CouponTemplate, LoyaltyProgram, TierRule
from members.models import Member, Order, Tier
from scrm.audit import Actor


def make_loyalty_rows(member: Member, actor: Actor) -> None:
    """Programme, tier rule, benefit, coupon template and coupon, order credit, tier change, run log.

    ``member`` needs at least one paid order (e.g. ``OrderLineFactory(order__member=member)``).
    """
    LoyaltyProgram.objects.get_or_create(pk=1)
    top_rank = max(Tier.objects.values_list("rank", flat=True), default=0)
    tier = Tier.objects.create(code="loyalty-top", name="黑金卡", rank=top_rank + 1, threshold=Decimal("0"))
    TierRule.objects.create(tier=tier, points_multiplier=Decimal("2"), points_threshold=0)
    Benefit.objects.create(tier=tier, name="专属客服", kind=Benefit.Kind.SERVICE)
    template = CouponTemplate.objects.create(
        code="WELCOME", name="入会礼", kind=CouponTemplate.Kind.AMOUNT, amount=Decimal("20"), valid_days=7
    )
    services.issue_coupon(member, template, actor, "admin")
    services.on_orders_recorded(Order.objects.filter(member=member).values_list("pk", flat=True), actor=actor)
    services.evaluate_tiers([member.pk], actor=actor)  # up to the new top tier: one TierChange
    services.expire_coupons(actor=actor)  # one LoyaltyRun
