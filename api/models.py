"""Integration clients, member merge proposals and outbound webhooks.

API keys are ``<prefix>.<secret>``: the prefix finds the client, only a SHA-256 of the secret is
kept (the secret is 256 random bits, so a slow password hash would add nothing but latency), and the
full key is shown once, when it is created or rotated.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Greatest, Least
from django.utils.translation import gettext_lazy as _

from members.models import Member
from stores.models import Store


class Scope(models.TextChoices):
    ORDERS_WRITE = "orders:write", _("Write orders")
    MEMBERS_WRITE = "members:write", _("Write members")
    CONSENT_WRITE = "consent:write", _("Write consent")
    READ = "read", _("Read")


class ApiClient(models.Model):
    """A system (till, shop, WeCom bridge) allowed to call the API with its own key."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    key_prefix = models.CharField(_("key prefix"), max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(_("secret hash"), max_length=64, editable=False)
    scopes = ArrayField(
        models.CharField(max_length=16, choices=Scope.choices), verbose_name=_("scopes"), default=list
    )
    stores = models.ManyToManyField(
        Store,
        verbose_name=_("limited to stores"),
        blank=True,
        related_name="+",
        help_text=_("Empty: every store. Otherwise members and orders of other stores look missing."),
    )
    rate_limit = models.PositiveIntegerField(
        _("requests per minute"), default=600, help_text=_("Calls above this rate are refused with 429.")
    )
    is_active = models.BooleanField(_("active"), default=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    rotated_at = models.DateTimeField(_("key rotated at"), null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
    )

    class Meta:
        verbose_name = _("API client")
        verbose_name_plural = _("API clients")
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(is_active=True, revoked_at__isnull=True)
                | Q(is_active=False, revoked_at__isnull=False),
                name="api_client_revoked_iff_inactive",
            ),
            models.CheckConstraint(condition=Q(rate_limit__gt=0), name="api_client_rate_limit_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix})"


class MergeProposal(models.Model):
    """Two members that look like one person (two identities, two member records), for HQ to review."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting for review")
        MERGED = "merged", _("Merged")
        REJECTED = "rejected", _("Rejected")
        UNDONE = "undone", _("Merge undone")

    survivor = models.ForeignKey(
        Member, verbose_name=_("member kept"), on_delete=models.PROTECT, related_name="+"
    )
    duplicate = models.ForeignKey(
        Member, verbose_name=_("member merged into it"), on_delete=models.PROTECT, related_name="+"
    )
    state = models.CharField(_("state"), max_length=8, choices=State.choices, default=State.PENDING)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    evidence = models.JSONField(_("evidence"), default=dict, blank=True)
    client = models.ForeignKey(
        ApiClient,
        verbose_name=_("proposed by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # What the merge moved (order, identity, tag and assignment ids; points moved), so it can be undone.
    moved = models.JSONField(_("moved"), default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(_("proposed at"), auto_now_add=True)
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("decided by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        verbose_name = _("merge proposal")
        verbose_name_plural = _("merge proposals")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(survivor=models.F("duplicate")), name="merge_two_members"),
            # One open proposal per pair, whichever way round it was proposed.
            models.UniqueConstraint(
                Least("survivor", "duplicate"),
                Greatest("survivor", "duplicate"),
                condition=Q(state="pending"),
                name="merge_one_pending_per_pair",
            ),
            # A member is merged away at most once at a time.
            models.UniqueConstraint(
                fields=["duplicate"], condition=Q(state="merged"), name="merge_duplicate_merged_once"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.duplicate_id} → {self.survivor_id}"


class WebhookEndpoint(models.Model):
    """A URL of another system that receives signed events."""

    class Event(models.TextChoices):
        TASK_COMPLETED = "task.completed", _("Task completed")
        CONSENT_WITHDRAWN = "consent.withdrawn", _("Consent withdrawn")
        MEMBER_MERGED = "member.merged", _("Member merged")

    name = models.CharField(_("name"), max_length=100)
    url = models.URLField(_("URL"), max_length=500)
    # Kept readable: it signs every delivery (HMAC-SHA256); shown to HQ once, when created.
    secret = models.CharField(_("signing secret"), max_length=64, editable=False)
    events = ArrayField(
        models.CharField(max_length=32, choices=Event.choices), verbose_name=_("events"), default=list
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One event for one endpoint, and how sending it went: the delivery log."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    endpoint = models.ForeignKey(
        WebhookEndpoint, verbose_name=_("endpoint"), on_delete=models.PROTECT, related_name="deliveries"
    )
    event = models.CharField(_("event"), max_length=32, choices=WebhookEndpoint.Event.choices)
    event_id = models.UUIDField(_("event id"), default=uuid.uuid4, editable=False)
    payload = models.JSONField(_("payload"), default=dict)
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_status = models.PositiveSmallIntegerField(_("last HTTP status"), null=True, blank=True)
    last_error = models.CharField(_("last error"), max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(state="pending"), name="webhook_pending_idx")
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.state})"


class GuideToken(models.Model):
    """A bearer token for the guide app: a guide signs in with their own login and gets one, shown once.

    Same shape as API keys (prefix + SHA-256 of the secret); it expires like a staff session.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="+"
    )
    key_prefix = models.CharField(_("key prefix"), max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(_("secret hash"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"))
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("guide app token")
        verbose_name_plural = _("guide app tokens")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.key_prefix
