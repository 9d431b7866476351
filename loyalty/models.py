"""Loyalty rules and what they produce: the programme settings, per-tier rules and benefits, the
points credited per order, the tier history, coupons, and a log of the nightly runs.

The points themselves stay in the members ledger (``members.PointsEntry``); this app only decides
when to write to it. Invariants live in the database: one credit per order, a reversal never exceeds
its credit, one programme row, a coupon's state and its redemption fields agree.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from members.models import Member, Order, Tier
from scrm.scoping import ScopePaths
from stores.models import Store


class LoyaltyProgram(models.Model):
    """The programme's rules, one row (id 1) that HQ edits in the admin."""

    class TierBasis(models.TextChoices):
        SPEND = "spend", _("Spend in the window")
        POINTS = "points", _("Points earned in the window")

    points_per_yuan = models.DecimalField(
        _("points per yuan"),
        max_digits=6,
        decimal_places=2,
        default=1,
        help_text=_("Points credited for each yuan paid, before the tier multiplier; refunds excluded."),
    )
    points_expiry_months = models.PositiveSmallIntegerField(
        _("points valid for (months)"),
        default=12,
        help_text=_(
            "Points expire at the end of this month counting the month they were earned as the first; "
            "12 means points earned in January expire on 31 December. 0 means they never expire."
        ),
    )
    tier_basis = models.CharField(
        _("tiers are based on"), max_length=8, choices=TierBasis.choices, default=TierBasis.SPEND
    )
    tier_window_months = models.PositiveSmallIntegerField(
        _("tier window (months)"),
        default=12,
        help_text=_("The rolling window over which spend or earned points are counted."),
    )
    downgrade_grace_days = models.PositiveSmallIntegerField(
        _("downgrade grace period (days)"),
        default=30,
        help_text=_("A member below the tier's threshold keeps the tier this many days before moving down."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("loyalty programme")
        verbose_name_plural = _("loyalty programme")
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="loyalty_program_single_row"),
            models.CheckConstraint(condition=Q(points_per_yuan__gte=0), name="loyalty_points_per_yuan_gte_0"),
            models.CheckConstraint(condition=Q(tier_window_months__gte=1), name="loyalty_window_at_least_1"),
        ]

    def __str__(self) -> str:
        return str(_("Loyalty programme"))

    @classmethod
    def current(cls) -> LoyaltyProgram:
        """The programme row; until HQ saves one, the defaults (nothing is written to read them)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)


class TierRule(models.Model):
    """What a tier means for loyalty: its points multiplier and its threshold in earned points.

    The spend threshold is the tier's own ``threshold`` (members.Tier), used when the programme's tiers
    are based on spend.
    """

    tier = models.OneToOneField(
        Tier, verbose_name=_("tier"), on_delete=models.CASCADE, related_name="loyalty_rule"
    )
    points_multiplier = models.DecimalField(
        _("points multiplier"),
        max_digits=4,
        decimal_places=2,
        default=1,
        help_text=_("Points per yuan are multiplied by this for members of the tier, e.g. 1.5."),
    )
    points_threshold = models.PositiveIntegerField(
        _("points threshold"),
        default=0,
        help_text=_("Points earned in the window needed to reach this tier, when tiers are based on points."),
    )

    class Meta:
        verbose_name = _("tier rule")
        verbose_name_plural = _("tier rules")
        ordering = ["tier__rank"]
        constraints = [
            models.CheckConstraint(
                condition=Q(points_multiplier__gt=0), name="tier_rule_multiplier_positive"
            ),
        ]

    def __str__(self) -> str:
        return str(self.tier)


class Benefit(models.Model):
    """A benefit (权益) members of a tier enjoy."""

    class Kind(models.TextChoices):
        DISCOUNT = "discount", _("Discount")
        GIFT = "gift", _("Gift")
        SERVICE = "service", _("Service")
        POINTS = "points", _("Points bonus")
        EVENT = "event", _("Event invitation")
        OTHER = "other", _("Other")

    tier = models.ForeignKey(
        Tier, verbose_name=_("tier"), on_delete=models.CASCADE, related_name="loyalty_benefits"
    )
    name = models.CharField(_("name"), max_length=64)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.OTHER)
    description = models.TextField(_("description"), blank=True)
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("benefit")
        verbose_name_plural = _("benefits")
        ordering = ["tier__rank", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["tier", "name"], name="benefit_unique_per_tier")]

    def __str__(self) -> str:
        return self.name


class OrderPoints(models.Model):
    """The points an order earned, and how many of them a refund took back. One row per order, ever."""

    order = models.OneToOneField(
        Order,
        verbose_name=_("order"),
        on_delete=models.PROTECT,
        related_name="loyalty_points",
    )
    member = models.ForeignKey(
        Member,
        verbose_name=_("member"),
        on_delete=models.PROTECT,
        related_name="order_points",
        db_index=False,  # the composite (member, …) index below serves member lookups
    )
    paid_at = models.DateTimeField(_("paid at"))
    base_amount = models.DecimalField(
        _("amount earning points"), max_digits=12, decimal_places=2, help_text=_("Paid minus refunded.")
    )
    multiplier = models.DecimalField(_("points multiplier"), max_digits=4, decimal_places=2)
    points = models.PositiveIntegerField(_("points earned"))
    reversed_points = models.PositiveIntegerField(_("points reversed"), default=0)
    unrecovered_points = models.PositiveIntegerField(
        _("points not recovered"),
        default=0,
        help_text=_(
            "Reversed points the member had already spent; written off, the balance never goes negative."
        ),
    )
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    earned_at = models.DateTimeField(_("earned at"))

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("points for an order")
        verbose_name_plural = _("points for orders")
        ordering = ["-paid_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(reversed_points__lte=F("points")), name="order_points_reversal_within_credit"
            ),
            models.CheckConstraint(
                condition=Q(unrecovered_points__lte=F("reversed_points")),
                name="order_points_unrecovered_within_reversal",
            ),
        ]
        indexes = [models.Index(fields=["member", "paid_at"], name="order_points_member_paid_idx")]

    def __str__(self) -> str:
        return f"{self.order_id}: +{self.points}"


class TierStanding(models.Model):
    """Where a member stands against their tier: since when they are below its threshold (grace)."""

    member = models.OneToOneField(
        Member,
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        related_name="tier_standing",
    )
    below_since = models.DateTimeField(_("below the threshold since"), null=True, blank=True)
    evaluated_at = models.DateTimeField(_("evaluated at"))

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("tier standing")
        verbose_name_plural = _("tier standings")

    def __str__(self) -> str:
        return f"{self.member_id}: {self.below_since or '-'}"


class TierChange(models.Model):
    """One change of a member's tier, with the figure that decided it. Append-only history."""

    class Direction(models.TextChoices):
        UP = "up", _("Upgrade")
        DOWN = "down", _("Downgrade")

    member = models.ForeignKey(
        Member,
        verbose_name=_("member"),
        on_delete=models.PROTECT,
        related_name="tier_changes",
        db_index=False,  # the composite (member, …) index below serves member lookups
    )
    from_tier = models.ForeignKey(
        Tier, verbose_name=_("from tier"), null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_tier = models.ForeignKey(
        Tier, verbose_name=_("to tier"), null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    direction = models.CharField(_("direction"), max_length=4, choices=Direction.choices)
    basis = models.CharField(_("based on"), max_length=8, choices=LoyaltyProgram.TierBasis.choices)
    value = models.DecimalField(_("value in the window"), max_digits=14, decimal_places=2)
    below_since = models.DateTimeField(_("below the threshold since"), null=True, blank=True)
    at = models.DateTimeField(_("at"), db_index=True)

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("tier change")
        verbose_name_plural = _("tier changes")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["member", "at"], name="tier_change_member_at_idx")]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.from_tier_id or '-'} → {self.to_tier_id or '-'}"


class CouponTemplate(models.Model):
    """A kind of coupon HQ designs: amount off or a discount, a spend threshold and a validity."""

    class Kind(models.TextChoices):
        AMOUNT = "amount", _("Amount off")
        DISCOUNT = "discount", _("Discount")

    code = models.SlugField(
        _("code"), max_length=32, unique=True, help_text=_("Short name used by scripts, e.g. BDAY50.")
    )
    name = models.CharField(_("name"), max_length=64)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.AMOUNT)
    amount = models.DecimalField(
        _("amount off (yuan)"), max_digits=10, decimal_places=2, null=True, blank=True
    )
    discount_percent = models.PositiveSmallIntegerField(
        _("price paid (%)"),
        null=True,
        blank=True,
        help_text=_(
            "Share of the price the member pays, in percent: 85 means 8.5折 (15 off every 100 yuan)."
        ),
    )
    min_spend = models.DecimalField(
        _("minimum spend (yuan)"),
        max_digits=10,
        decimal_places=2,
        default=0,
        help_text=_("0 means no threshold."),
    )
    valid_days = models.PositiveSmallIntegerField(_("valid for (days after issue)"), null=True, blank=True)
    valid_from = models.DateTimeField(_("valid from"), null=True, blank=True)
    valid_until = models.DateTimeField(_("valid until"), null=True, blank=True)
    per_member_limit = models.PositiveSmallIntegerField(
        _("limit per member"), default=0, help_text=_("How many a member may hold in all; 0 means no limit.")
    )
    active = models.BooleanField(_("active"), default=True)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("coupon template")
        verbose_name_plural = _("coupon templates")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="amount", amount__gt=0, discount_percent__isnull=True)
                | Q(kind="discount", amount__isnull=True, discount_percent__gte=1, discount_percent__lte=99),
                name="coupon_template_value_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(valid_days__gte=1) | Q(valid_until__isnull=False),
                name="coupon_template_has_validity",
            ),
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True)
                | Q(valid_until__isnull=True)
                | Q(valid_until__gt=F("valid_from")),
                name="coupon_template_valid_range",
            ),
            models.CheckConstraint(condition=Q(min_spend__gte=0), name="coupon_template_min_spend_gte_0"),
        ]

    def __str__(self) -> str:
        return self.name


class Coupon(models.Model):
    """One coupon issued to one member, redeemable once until it expires."""

    class Status(models.TextChoices):
        ISSUED = "issued", _("Issued")
        REDEEMED = "redeemed", _("Redeemed")
        EXPIRED = "expired", _("Expired")

    class Source(models.TextChoices):
        CAMPAIGN = "campaign", _("Campaign task")
        BULK = "bulk", _("Bulk issue")
        ADMIN = "admin", _("HQ admin")
        API = "api", _("API client")

    template = models.ForeignKey(
        CouponTemplate, verbose_name=_("coupon template"), on_delete=models.PROTECT, related_name="coupons"
    )
    member = models.ForeignKey(
        Member,
        verbose_name=_("member"),
        on_delete=models.PROTECT,
        related_name="coupons",
        db_index=False,  # the composite (member, …) index below serves member lookups
    )
    code = models.CharField(_("coupon code"), max_length=16, unique=True)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.ISSUED)
    source = models.CharField(_("source"), max_length=8, choices=Source.choices)
    source_ref = models.CharField(
        _("source reference"),
        max_length=64,
        blank=True,
        help_text=_("e.g. the campaign task; issuing again returns the same coupon."),
    )
    issued_at = models.DateTimeField(_("issued at"))
    valid_from = models.DateTimeField(_("valid from"))
    expires_at = models.DateTimeField(_("expires at"))
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("issued by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    redeemed_at = models.DateTimeField(_("redeemed at"), null=True, blank=True)
    redeemed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("redeemed by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    redeemed_store = models.ForeignKey(
        Store,
        verbose_name=_("redeemed in store"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    redeemed_order_no = models.CharField(_("redeemed on order"), max_length=64, blank=True)

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("coupon")
        verbose_name_plural = _("coupons")
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "member", "source_ref"],
                condition=~Q(source_ref=""),
                name="coupon_unique_per_source_ref",
            ),
            models.CheckConstraint(
                condition=Q(status="redeemed", redeemed_at__isnull=False)
                | Q(~Q(status="redeemed"), redeemed_at__isnull=True),
                name="coupon_redeemed_iff_redeemed_at",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=F("valid_from")), name="coupon_expires_after_start"
            ),
        ]
        indexes = [
            models.Index(fields=["member", "status"], name="coupon_member_status_idx"),
            models.Index(fields=["template", "member"], name="coupon_template_member_idx"),
            # The nightly expiry reads only coupons still open.
            models.Index(fields=["expires_at"], condition=Q(status="issued"), name="coupon_open_expiry_idx"),
        ]

    def __str__(self) -> str:
        return self.code


class LoyaltyRun(models.Model):
    """One run of a nightly loyalty job, with what it did; the points expiry resumes from the last one."""

    class Kind(models.TextChoices):
        POINTS_EXPIRY = "points_expiry", _("Points expiry")
        TIER_EVALUATION = "tier_evaluation", _("Tier evaluation")
        COUPON_EXPIRY = "coupon_expiry", _("Coupon expiry")
        REFUND_REVERSAL = "refund_reversal", _("Refund reversal")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    cutoff = models.DateTimeField(_("as of"))
    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"))
    members = models.PositiveIntegerField(_("members affected"), default=0)
    points = models.BigIntegerField(_("points"), default=0)
    count = models.PositiveIntegerField(_("rows changed"), default=0)

    class Meta:
        verbose_name = _("loyalty run")
        verbose_name_plural = _("loyalty runs")
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["kind", "cutoff"], name="loyalty_run_kind_cutoff_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.cutoff:%Y-%m-%d %H:%M}"
