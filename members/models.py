"""Members and everything hung on them: identities, tiers, tags, points, orders, consent, guide bindings.

Invariants that matter live in the database (constraints, and triggers in the migrations):
the points balance on a member is always the sum of its ledger, ledgers and consent records are
append-only, one open guide assignment per member, one order per channel and order number.
"""

from typing import Self

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from scrm.masking import mask_mobile
from scrm.scoping import ScopePaths
from stores.models import Guide, Store


class Channel(models.TextChoices):
    """Where a member joined or an order was placed."""

    STORE = "store", _("Store POS")
    TMALL = "tmall", _("Tmall")
    JD = "jd", _("JD")
    MINIPROGRAM = "miniprogram", _("Mini-program mall")
    DOUYIN = "douyin", _("Douyin")
    WECOM = "wecom", _("WeCom")


class ContactChannel(models.TextChoices):
    """How a member may be contacted; consent is per contact channel."""

    SMS = "sms", _("SMS")
    CALL = "call", _("Phone call")
    WECOM = "wecom", _("WeCom")
    EMAIL = "email", _("Email")


class Tier(models.Model):
    code = models.CharField(_("code"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=64)
    rank = models.PositiveSmallIntegerField(
        _("rank"), unique=True, help_text=_("Higher rank is a better tier.")
    )
    threshold = models.DecimalField(
        _("threshold"),
        max_digits=12,
        decimal_places=2,
        default=0,
        help_text=_("Spend in the last 12 months needed to reach this tier (yuan)."),
    )
    benefits = models.TextField(_("benefits"), blank=True)

    class Meta:
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")
        ordering = ["rank"]
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gte=0), name="tier_threshold_non_negative")
        ]

    def __str__(self) -> str:
        return self.name


class Member(models.Model):
    class Gender(models.TextChoices):
        FEMALE = "F", _("Female")
        MALE = "M", _("Male")
        UNKNOWN = "U", _("Unknown")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        MERGED = "merged", _("Merged into another member")
        ERASED = "erased", _("Erased")

    class Lifecycle(models.TextChoices):
        """One stage per member (see members.lifecycle): the purchase ladder while the member is
        active, dormant or lost once the last purchase is older than HQ's thresholds."""

        NO_PURCHASE = "no_purchase", _("Member, no purchase yet")
        FIRST_PURCHASE = "first_purchase", _("First purchase")
        REPEAT = "repeat", _("Repeat buyer")
        ADVOCATE = "advocate", _("Advocate")
        DORMANT = "dormant", _("Dormant")
        LOST = "lost", _("Lost")

    mobile = models.CharField(
        _("mobile"), max_length=16, unique=True, help_text=_("E.164, e.g. +8613812345678")
    )
    name = models.CharField(_("full name"), max_length=64, blank=True)
    gender = models.CharField(_("gender"), max_length=1, choices=Gender.choices, default=Gender.UNKNOWN)
    birthday = models.DateField(_("birthday"), null=True, blank=True)
    birthday_lunar = models.BooleanField(
        _("lunar birthday"),
        db_default=False,
        help_text=_("The member celebrates the birthday by the lunar calendar."),
    )
    # No index of its own: member_store_stage_idx (home_store, lifecycle_stage) serves store lookups, and
    # every extra index slows imports and the points trigger's row updates.
    home_store = models.ForeignKey(
        Store, verbose_name=_("home store"), on_delete=models.PROTECT, related_name="members", db_index=False
    )
    guide = models.ForeignKey(
        Guide,
        verbose_name=_("exclusive guide"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="members",
    )
    tier = models.ForeignKey(
        Tier, verbose_name=_("tier"), null=True, blank=True, on_delete=models.PROTECT, related_name="members"
    )
    points_balance = models.IntegerField(_("points balance"), default=0, editable=False)
    joined_at = models.DateTimeField(_("joined at"), db_index=True)
    join_channel = models.CharField(
        _("join channel"), max_length=16, choices=Channel.choices, default=Channel.STORE
    )
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.ACTIVE)

    # Consent for marketing, projected from the consent ledger (ConsentRecord) for fast queries.
    consent_sms = models.BooleanField(_("SMS consent"), default=False, editable=False)
    consent_call = models.BooleanField(_("phone call consent"), default=False, editable=False)
    consent_wecom = models.BooleanField(_("WeCom consent"), default=False, editable=False)
    consent_email = models.BooleanField(_("email consent"), default=False, editable=False)

    # Metrics, kept current by members.metrics.refresh_member_metrics from the orders.
    first_purchase_at = models.DateTimeField(_("first purchase"), null=True, blank=True, editable=False)
    last_purchase_at = models.DateTimeField(_("last purchase"), null=True, blank=True, editable=False)
    order_count = models.PositiveIntegerField(_("order count"), default=0, editable=False)
    total_spend = models.DecimalField(
        _("total spend"), max_digits=14, decimal_places=2, default=0, editable=False
    )
    orders_12m = models.PositiveIntegerField(_("orders in 12 months"), default=0, editable=False)
    spend_12m = models.DecimalField(
        _("spend in 12 months"), max_digits=14, decimal_places=2, default=0, editable=False
    )
    avg_order_value = models.DecimalField(
        _("average order value"), max_digits=12, decimal_places=2, default=0, editable=False
    )
    lifecycle_stage = models.CharField(
        _("lifecycle stage"),
        max_length=16,
        choices=Lifecycle.choices,
        default=Lifecycle.NO_PURCHASE,
        editable=False,
    )
    rfm_cell = models.CharField(_("RFM cell"), max_length=3, blank=True, editable=False)
    metrics_updated_at = models.DateTimeField(_("metrics updated at"), null=True, blank=True, editable=False)
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True, editable=False)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    scope_paths = ScopePaths(store="home_store", guide="guide")

    class Meta:
        verbose_name = _("member")
        verbose_name_plural = _("members")
        ordering = ["-joined_at", "-id"]
        permissions = [
            ("view_full_mobile", _("Can see members' full mobile numbers")),
            ("export", _("Can export members")),
            ("reveal_mobile", _("Can reveal a member's full mobile number, with a reason")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(mobile__regex=r"^\+[1-9][0-9]{6,14}$"), name="member_mobile_e164"
            ),
            models.CheckConstraint(condition=Q(points_balance__gte=0), name="member_points_non_negative"),
            models.CheckConstraint(
                condition=Q(order_count__gte=F("orders_12m")), name="member_orders_12m_within_total"
            ),
        ]
        indexes = [
            models.Index(fields=["home_store", "lifecycle_stage"], name="member_store_stage_idx"),
            models.Index(fields=["last_purchase_at"], name="member_last_purchase_idx"),
            # Name search is a prefix match (surname or full name); pattern ops let LIKE 'x%' use it
            # under any collation. (pg_trgm is not in every PostgreSQL build, the embedded one included.)
            models.Index(fields=["name"], opclasses=["varchar_pattern_ops"], name="member_name_prefix_idx"),
        ]

    def __str__(self) -> str:
        # Shown in logs, audit labels and related-field widgets: never the full number.
        return self.name or mask_mobile(self.mobile)

    @property
    def audit_store_id(self) -> int:
        return self.home_store_id


class ExternalIdentity(models.Model):
    class Platform(models.TextChoices):
        WECHAT_UNIONID = "wechat_unionid", _("WeChat unionid")
        WECHAT_OPENID = "wechat_openid", _("WeChat openid")
        WECOM_EXTERNAL = "wecom_external", _("WeCom external contact id")
        TMALL_OUID = "tmall_ouid", _("Tmall ouid")
        JD_PIN = "jd_pin", _("JD pin")
        DOUYIN_OPENID = "douyin_openid", _("Douyin openid")

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.CASCADE, related_name="identities"
    )
    platform = models.CharField(_("platform"), max_length=16, choices=Platform.choices)
    external_id = models.CharField(_("external id"), max_length=128)
    linked_at = models.DateTimeField(_("linked at"), auto_now_add=True)

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("external identity")
        verbose_name_plural = _("external identities")
        constraints = [
            models.UniqueConstraint(fields=["platform", "external_id"], name="identity_unique_per_platform"),
        ]

    def __str__(self) -> str:
        return f"{self.get_platform_display()}: {self.external_id}"


class Tag(models.Model):
    name = models.CharField(_("name"), max_length=64, unique=True)
    group = models.CharField(
        _("group"), max_length=32, blank=True, help_text=_("e.g. preference, lifecycle, interest")
    )
    description = models.CharField(_("description"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["group", "name"]

    def __str__(self) -> str:
        return self.name


class MemberTag(models.Model):
    class Source(models.TextChoices):
        IMPORT = "import", _("Import")
        RULE = "rule", _("Rule")
        GUIDE = "guide", _("Guide")
        MODEL = "model", _("Model")
        API = "api", _("API")
        HQ = "hq", _("HQ")

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.CASCADE, related_name="member_tags"
    )
    tag = models.ForeignKey(Tag, verbose_name=_("tag"), on_delete=models.PROTECT, related_name="member_tags")
    source = models.CharField(_("source"), max_length=8, choices=Source.choices)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("added by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    added_at = models.DateTimeField(_("added at"), auto_now_add=True)

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("member tag")
        verbose_name_plural = _("member tags")
        constraints = [models.UniqueConstraint(fields=["member", "tag"], name="member_tag_unique")]
        indexes = [models.Index(fields=["tag", "member"], name="member_tag_by_tag_idx")]

    def __str__(self) -> str:
        return f"{self.member_id}:{self.tag_id}"


class PointsEntry(models.Model):
    """One movement of points. Append-only; a trigger adds ``delta`` to the member's balance."""

    class Kind(models.TextChoices):
        EARN = "earn", _("Earned")
        REDEEM = "redeem", _("Redeemed")
        EXPIRE = "expire", _("Expired")
        ADJUST = "adjust", _("Adjusted")

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.PROTECT, related_name="points_entries"
    )
    delta = models.IntegerField(_("points"))
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    ref = models.CharField(_("reference"), max_length=64, blank=True, help_text=_("e.g. an order number"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("actor"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("points entry")
        verbose_name_plural = _("points entries")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(delta=0), name="points_delta_non_zero"),
            models.CheckConstraint(
                condition=Q(kind="earn", delta__gt=0)
                | Q(kind__in=["redeem", "expire"], delta__lt=0)
                | Q(kind="adjust"),
                name="points_sign_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.delta:+d} {self.get_kind_display()}"


class Order(models.Model):
    """An order from any channel. Non-member orders are kept (member is null): member share needs them."""

    class Status(models.TextChoices):
        PAID = "paid", _("Paid")
        PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
        REFUNDED = "refunded", _("Refunded")
        CANCELLED = "cancelled", _("Cancelled")

    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    external_no = models.CharField(_("order number"), max_length=64)
    # No single-column indexes on member and store: order_member_paid_idx and order_store_paid_idx
    # lead with them, and every extra index slows order ingestion.
    member = models.ForeignKey(
        Member,
        verbose_name=_("member"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="orders",
        db_index=False,
    )
    store = models.ForeignKey(
        Store,
        verbose_name=_("store"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="orders",
        db_index=False,
    )
    guide = models.ForeignKey(
        Guide, verbose_name=_("guide"), null=True, blank=True, on_delete=models.PROTECT, related_name="orders"
    )
    paid_at = models.DateTimeField(_("paid at"), db_index=True)
    amount = models.DecimalField(_("amount"), max_digits=12, decimal_places=2)
    refunded_amount = models.DecimalField(_("refunded amount"), max_digits=12, decimal_places=2, default=0)
    item_count = models.PositiveIntegerField(_("items"), default=0)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PAID)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    # A store sees the orders placed in it (non-members too: member share needs them) and every order of
    # its own members, online ones included; a guide sees the orders of their members.
    scope_paths = ScopePaths(store=("store", "member__home_store"), guide="member__guide")

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        ordering = ["-paid_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "external_no"], name="order_unique_per_channel"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="order_amount_non_negative"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0, refunded_amount__lte=F("amount")),
                name="order_refund_within_amount",
            ),
        ]
        indexes = [
            # Covering: a member's metrics (and segment conditions over their orders) read the index
            # only, without visiting the table; the order-ingest refresh depends on it.
            models.Index(
                fields=["member", "paid_at"],
                include=["status", "amount", "refunded_amount"],
                name="order_member_paid_idx",
            ),
            models.Index(fields=["store", "paid_at"], name="order_store_paid_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.external_no}"

    @property
    def audit_store_id(self) -> int | None:
        return self.store_id


class OrderLine(models.Model):
    # Indexed by order_line_unique (order, line_no); no index of its own.
    order = models.ForeignKey(
        Order, verbose_name=_("order"), on_delete=models.CASCADE, related_name="lines", db_index=False
    )
    line_no = models.PositiveSmallIntegerField(_("line"))
    sku = models.CharField(_("SKU"), max_length=64)
    name = models.CharField(_("product"), max_length=128, blank=True)
    category = models.CharField(_("category"), max_length=64, db_index=True)
    quantity = models.PositiveIntegerField(_("quantity"))
    amount = models.DecimalField(_("amount"), max_digits=12, decimal_places=2)

    scope_paths = ScopePaths(
        store=("order__store", "order__member__home_store"), guide="order__member__guide"
    )

    class Meta:
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")
        ordering = ["order", "line_no"]
        constraints = [
            models.UniqueConstraint(fields=["order", "line_no"], name="order_line_unique"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_line_quantity_positive"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="order_line_amount_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} × {self.quantity}"


class ConsentRecord(models.Model):
    """One consent event for a member × channel × purpose. Append-only; the member's flags project it."""

    class Purpose(models.TextChoices):
        MARKETING = "marketing", _("Marketing")
        PERSONALISATION = "personalisation", _("Personalised targeting")
        SERVICE = "service", _("Service notices")

    class Action(models.TextChoices):
        GRANT = "grant", _("Granted")
        WITHDRAW = "withdraw", _("Withdrawn")
        REFUSE = "refuse", _("Refused")
        GUARDIAN_GRANT = "guardian_grant", _("Granted by guardian")

    class Source(models.TextChoices):
        STORE_POS = "store_pos", _("Store POS")
        MINIPROGRAM = "miniprogram", _("Mini-program")
        GUIDE = "guide", _("Guide page")
        HQ_ADMIN = "hq_admin", _("HQ admin")
        IMPORT = "import", _("Import")
        API = "api", _("API client")

    class Method(models.TextChoices):
        CHECKBOX = "checkbox", _("Checkbox")
        SMS_REPLY = "sms_reply", _("SMS reply")
        VERBAL = "verbal", _("Verbal")
        PAPER = "paper", _("Paper form")

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.PROTECT, related_name="consent_records"
    )
    channel = models.CharField(_("channel"), max_length=8, choices=ContactChannel.choices)
    purpose = models.CharField(
        _("purpose"), max_length=16, choices=Purpose.choices, default=Purpose.MARKETING
    )
    action = models.CharField(_("action"), max_length=16, choices=Action.choices)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    method = models.CharField(_("method"), max_length=16, choices=Method.choices, default=Method.CHECKBOX)
    policy_version = models.CharField(_("privacy notice version"), max_length=32)
    evidence = models.JSONField(_("evidence"), default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("actor"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    store = models.ForeignKey(
        Store, verbose_name=_("store"), null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    at = models.DateTimeField(_("at"), db_index=True)

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("consent record")
        verbose_name_plural = _("consent records")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["member", "channel", "purpose", "at"], name="consent_latest_idx")]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.get_action_display()}"


class GuideAssignment(models.Model):
    """History of a member's exclusive guide: one row per binding, the open one has no end."""

    class Reason(models.TextChoices):
        JOINED = "joined", _("Joined with this guide")
        HQ = "hq", _("Assigned by HQ")
        MANAGER = "manager", _("Reassigned by the store manager")
        GUIDE_LEFT = "guide_left", _("Previous guide left")
        WECOM = "wecom", _("WeCom binding")
        IMPORT = "import", _("Import")

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.CASCADE, related_name="assignments"
    )
    guide = models.ForeignKey(
        Guide, verbose_name=_("guide"), on_delete=models.PROTECT, related_name="assignments"
    )
    started_at = models.DateTimeField(_("from"))
    ended_at = models.DateTimeField(_("to"), null=True, blank=True)
    reason = models.CharField(_("reason"), max_length=16, choices=Reason.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("actor"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("guide assignment")
        verbose_name_plural = _("guide assignments")
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["member"], condition=Q(ended_at__isnull=True), name="one_open_assignment_per_member"
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=F("started_at")),
                name="assignment_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member_id} → {self.guide_id}"


class PrivacyNotice(models.Model):
    """A published version of the privacy notice and the purposes it asks consent for.

    A grant counts for a purpose only if the notice version shown at the time covered that purpose:
    publishing a version that adds a purpose therefore needs new consent for it.
    """

    version = models.CharField(_("version"), max_length=32, unique=True)
    purposes = ArrayField(
        models.CharField(max_length=16, choices=ConsentRecord.Purpose.choices), verbose_name=_("purposes")
    )
    published_at = models.DateTimeField(_("published at"))
    summary = models.TextField(_("summary"), blank=True)

    class Meta:
        verbose_name = _("privacy notice")
        verbose_name_plural = _("privacy notices")
        ordering = ["-published_at"]

    def __str__(self) -> str:
        return self.version


class DataSubjectRequest(models.Model):
    """A request under PIPL to access, correct or erase a member's personal data, tracked to a due date."""

    class Kind(models.TextChoices):
        ACCESS = "access", _("Access (copy of my data)")
        CORRECT = "correct", _("Correction")
        ERASE = "erase", _("Erasure")

    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        DONE = "done", _("Done")
        REJECTED = "rejected", _("Rejected")

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.PROTECT, related_name="data_requests"
    )
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.RECEIVED)
    received_at = models.DateTimeField(_("received at"))
    due_at = models.DateTimeField(_("due at"))
    channel = models.CharField(_("received through"), max_length=16, choices=ConsentRecord.Source.choices)
    details = models.TextField(
        _("details"), blank=True, help_text=_("What the member asked for, in their words.")
    )
    received_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("received by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("handled by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    outcome = models.TextField(_("outcome"), blank=True)

    scope_paths = ScopePaths(store="member__home_store", guide=None)

    class Meta:
        verbose_name = _("data-subject request")
        verbose_name_plural = _("data-subject requests")
        ordering = ["status", "due_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="received", completed_at__isnull=True)
                | Q(~Q(status="received"), completed_at__isnull=False),
                name="dsr_completed_iff_closed",
            ),
            models.CheckConstraint(condition=Q(due_at__gte=F("received_at")), name="dsr_due_after_received"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def audit_store_id(self) -> int:
        return self.member.home_store_id


# --------------------------------------------------------------------------------------------------
# Member intelligence: lifecycle and RFM settings (HQ edits them in the admin), stage history.


class SingletonSettings(models.Model):
    """A settings row HQ edits in the admin; there is at most one (id 1)."""

    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        abstract = True

    def save(self, *args: object, **kwargs: object) -> None:
        self.pk = 1
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def current(cls) -> Self:
        """The saved row, or an unsaved row with the defaults (reads never write)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)


def _default_dormant_days() -> int:
    return settings.SCRM_DORMANT_AFTER_DAYS


def _default_lost_days() -> int:
    return settings.SCRM_LOST_AFTER_DAYS


class LifecycleSettings(SingletonSettings):
    """HQ's lifecycle thresholds. Applied by every metrics refresh (orders in, nightly recompute)."""

    dormant_after_days = models.PositiveIntegerField(
        _("dormant after (days)"),
        default=_default_dormant_days,
        help_text=_("A buyer whose last purchase is older than this many days is dormant."),
    )
    lost_after_days = models.PositiveIntegerField(
        _("lost after (days)"),
        default=_default_lost_days,
        help_text=_("A buyer whose last purchase is older than this many days is lost."),
    )
    advocate_min_orders_12m = models.PositiveIntegerField(
        _("advocate: orders in 12 months"),
        null=True,
        blank=True,
        default=6,
        help_text=_(
            "An active buyer with at least this many orders in 12 months is an advocate. Empty: off."
        ),
    )
    advocate_min_spend_12m = models.DecimalField(
        _("advocate: spend in 12 months"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        default=5000,
        help_text=_("…and at least this spend in 12 months (yuan). Empty: no spend condition."),
    )
    advocate_tag = models.ForeignKey(
        Tag,
        verbose_name=_("advocate tag"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=_("Active buyers with this tag (e.g. KOC, brings friends) are advocates too."),
    )

    class Meta:
        verbose_name = _("lifecycle settings")
        verbose_name_plural = _("lifecycle settings")
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="lifecycle_settings_singleton"),
            models.CheckConstraint(condition=Q(dormant_after_days__gte=1), name="lifecycle_dormant_positive"),
            models.CheckConstraint(
                condition=Q(lost_after_days__gt=F("dormant_after_days")), name="lifecycle_lost_after_dormant"
            ),
            models.CheckConstraint(
                condition=Q(advocate_min_orders_12m__isnull=True) | Q(advocate_min_orders_12m__gte=2),
                name="lifecycle_advocate_orders_min_2",
            ),
        ]

    def __str__(self) -> str:
        return str(_("Lifecycle settings"))

    def clean(self) -> None:
        days = (self.dormant_after_days, self.lost_after_days)
        if None not in days and days[1] <= days[0]:
            raise ValidationError(
                {"lost_after_days": _("A member must be dormant before being lost: use more days.")}
            )
        if self.advocate_min_orders_12m is not None and self.advocate_min_orders_12m < 2:
            raise ValidationError({"advocate_min_orders_12m": _("An advocate buys at least twice.")})


class RfmSettings(SingletonSettings):
    """How RFM cells are binned: the number of quantile bins and the population they are cut over."""

    class Partition(models.TextChoices):
        BRAND = "brand", _("Whole brand")
        REGION = "region", _("Per region")
        STORE = "store", _("Per home store")

    bins = models.PositiveSmallIntegerField(
        _("bins per dimension"),
        default=5,
        help_text=_("5 = quintiles: each of R, F and M scores 1 (lowest) to 5 (best)."),
    )
    partition = models.CharField(
        _("bins cut over"),
        max_length=8,
        choices=Partition.choices,
        default=Partition.BRAND,
        help_text=_(
            "Members are ranked against all buyers of the brand, of their region or of their home store."
        ),
    )

    class Meta:
        verbose_name = _("RFM settings")
        verbose_name_plural = _("RFM settings")
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="rfm_settings_singleton"),
            models.CheckConstraint(condition=Q(bins__gte=2, bins__lte=9), name="rfm_bins_2_to_9"),
        ]

    def __str__(self) -> str:
        return str(_("RFM settings"))

    def clean(self) -> None:
        if self.bins is not None and not 2 <= self.bins <= 9:
            raise ValidationError({"bins": _("Use between 2 and 9 bins.")})


class RfmBinEdges(models.Model):
    """Bin edges cut nightly over the buyers of one population (the brand, a region or a store).

    Incremental refreshes score members against these stored edges, so a buyer's cell is current
    between nightly runs and equals what the nightly run gives for the same edges.
    """

    scope = models.CharField(_("population"), max_length=8, choices=RfmSettings.Partition.choices)
    scope_id = models.BigIntegerField(_("population id"), help_text=_("Region or store id; 0 for the brand."))
    recency = ArrayField(models.FloatField(), verbose_name=_("recency edges (epoch seconds)"))
    frequency = ArrayField(models.FloatField(), verbose_name=_("frequency edges (orders in 12 months)"))
    monetary = ArrayField(models.FloatField(), verbose_name=_("monetary edges (spend in 12 months)"))
    buyers = models.PositiveIntegerField(_("buyers"))
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("RFM bin edges")
        verbose_name_plural = _("RFM bin edges")
        ordering = ["scope", "scope_id"]
        constraints = [models.UniqueConstraint(fields=["scope", "scope_id"], name="rfm_edges_unique_scope")]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} {self.scope_id}"


class LifecycleTransition(models.Model):
    """One change of a member's lifecycle stage, dated when it took effect (see members.lifecycle)."""

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.CASCADE, related_name="lifecycle_transitions"
    )
    from_stage = models.CharField(_("from"), max_length=16, choices=Member.Lifecycle.choices)
    to_stage = models.CharField(_("to"), max_length=16, choices=Member.Lifecycle.choices)
    at = models.DateTimeField(_("effective at"))
    recorded_at = models.DateTimeField(_("recorded at"))

    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("lifecycle transition")
        verbose_name_plural = _("lifecycle transitions")
        ordering = ["-at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(from_stage=F("to_stage")), name="transition_changes_stage")
        ]
        indexes = [
            models.Index(fields=["member", "at"], name="transition_member_at_idx"),
            models.Index(fields=["to_stage", "at"], name="transition_to_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.from_stage} → {self.to_stage}"
