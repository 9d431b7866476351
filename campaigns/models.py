"""Segments, campaigns, journeys, runs and the guide tasks they create.

The database is the source of truth for dispatch: a run and its per-store rows say what should exist,
unique keys make every step safe to repeat, and a reconciler compares the two (see campaigns.dispatch).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from members.models import ContactChannel, Member
from scrm.scoping import ScopePaths
from stores.models import Guide, Store


class TaskChannel(models.TextChoices):
    """How a guide reaches the member for a task."""

    WECOM = "wecom", _("WeCom")
    CALL = "call", _("Phone call")
    SMS = "sms", _("SMS by guide")
    IN_STORE = "in_store", _("In store")


# The consent channel each task channel needs. An in-store talk is not a remote contact but still a
# marketing approach: it needs consent on at least one channel (see campaigns.dispatch).
CONSENT_CHANNEL: dict[str, str | None] = {
    TaskChannel.WECOM: ContactChannel.WECOM,
    TaskChannel.CALL: ContactChannel.CALL,
    TaskChannel.SMS: ContactChannel.SMS,
    TaskChannel.IN_STORE: None,
}


class Segment(models.Model):
    """Who: a validated JSON tree of conditions, compiled to one SQL query (campaigns.segments)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=300, blank=True)
    definition = models.JSONField(_("definition"), default=dict)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Script(models.Model):
    """What the guide says (话术), with placeholders such as {name}, {store}, {guide}, {coupon}."""

    title = models.CharField(_("title"), max_length=100)
    body = models.TextField(_("body"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("script")
        verbose_name_plural = _("scripts")
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class ContactPolicy(models.Model):
    """Brand-wide limits on contact across all campaigns (one row, edited in the admin)."""

    max_tasks = models.PositiveSmallIntegerField(_("at most tasks per member"), default=2)
    per_days = models.PositiveSmallIntegerField(_("within days"), default=7)
    quiet_start = models.TimeField(_("quiet hours start"), default="21:00")
    quiet_end = models.TimeField(_("quiet hours end"), default="09:00")
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("contact policy")
        verbose_name_plural = _("contact policy")

    def __str__(self) -> str:
        return str(_("Contact policy"))


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        APPROVED = "approved", _("Approved")
        RUNNING = "running", _("Running")
        PAUSED = "paused", _("Paused")
        FINISHED = "finished", _("Finished")
        CANCELLED = "cancelled", _("Cancelled")

    class Schedule(models.TextChoices):
        ONCE = "once", _("Once")
        DAILY = "daily", _("Daily")
        EVENT = "event", _("On an event")

    class Assignment(models.TextChoices):
        EXCLUSIVE_FIRST = "exclusive_first", _("Exclusive guide, else the least busy guide of the store")
        LEAST_LOADED = "least_loaded", _("The least busy guide of the store")
        MANAGER = "manager", _("The store manager's queue")

    name = models.CharField(_("name"), max_length=100)
    segment = models.ForeignKey(
        Segment, verbose_name=_("segment"), on_delete=models.PROTECT, related_name="+"
    )
    channel = models.CharField(_("channel"), max_length=8, choices=TaskChannel.choices)
    script = models.ForeignKey(Script, verbose_name=_("script"), on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField(_("tasks open at"), null=True, blank=True)
    due_days = models.PositiveSmallIntegerField(
        _("days to complete"), default=3, validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    ends_on = models.DateField(_("last day"), null=True, blank=True)
    assignment = models.CharField(
        _("assignment"), max_length=16, choices=Assignment.choices, default=Assignment.EXCLUSIVE_FIRST
    )
    priority = models.PositiveSmallIntegerField(_("priority"), default=5, help_text=_("1 is the highest"))
    holdout_percent = models.DecimalField(
        _("holdout %"),
        max_digits=4,
        decimal_places=1,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(50)],
    )
    schedule = models.CharField(_("schedule"), max_length=8, choices=Schedule.choices, default=Schedule.ONCE)
    run_at = models.TimeField(_("daily at"), null=True, blank=True)
    event = models.CharField(_("event"), max_length=32, blank=True)
    attribution_days = models.PositiveSmallIntegerField(_("attribution window (days)"), default=7)
    coupon_template_code = models.CharField(_("coupon template"), max_length=32, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.DRAFT)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("approved by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at"]
        permissions = [("approve_campaign", _("Can approve and launch campaigns"))]

    def __str__(self) -> str:
        return self.name


class Journey(models.Model):
    """Lifecycle steps relative to an event (joined, first purchase, birthday, …)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    active = models.BooleanField(_("active"), default=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("journey")
        verbose_name_plural = _("journeys")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JourneyStep(models.Model):
    journey = models.ForeignKey(
        Journey, verbose_name=_("journey"), on_delete=models.CASCADE, related_name="steps"
    )
    name = models.CharField(_("name"), max_length=100)
    event = models.CharField(_("event"), max_length=32)
    offset_days = models.SmallIntegerField(_("days after the event"), default=0)
    channel = models.CharField(_("channel"), max_length=8, choices=TaskChannel.choices)
    script = models.ForeignKey(Script, verbose_name=_("script"), on_delete=models.PROTECT, related_name="+")
    due_days = models.PositiveSmallIntegerField(_("days to complete"), default=3)
    priority = models.PositiveSmallIntegerField(_("priority"), default=5)

    class Meta:
        verbose_name = _("journey step")
        verbose_name_plural = _("journey steps")
        ordering = ["journey", "event", "offset_days"]
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "event", "offset_days"], name="journeystep_unique_offset"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Festival(models.Model):
    """Editable calendar: 春节, 中秋, 618, 双11 … move every year."""

    name = models.CharField(_("name"), max_length=32)
    date = models.DateField(_("date"))

    class Meta:
        verbose_name = _("festival date")
        verbose_name_plural = _("festival calendar")
        ordering = ["date"]
        constraints = [models.UniqueConstraint(fields=["name", "date"], name="festival_unique_name_date")]

    def __str__(self) -> str:
        return f"{self.name} {self.date:%Y-%m-%d}"


class CampaignRun(models.Model):
    """One evaluation of a campaign or journey step; ``occurrence`` keys it (e.g. the date), so a
    schedule that fires twice creates one run."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting")
        EVALUATING = "evaluating", _("Evaluating")
        DISPATCHING = "dispatching", _("Creating tasks")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    campaign = models.ForeignKey(
        Campaign,
        verbose_name=_("campaign"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
    )
    journey_step = models.ForeignKey(
        JourneyStep,
        verbose_name=_("journey step"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
    )
    occurrence = models.CharField(_("occurrence"), max_length=64)
    snapshot = models.JSONField(_("frozen settings"), default=dict)
    state = models.CharField(_("state"), max_length=12, choices=State.choices, default=State.PENDING)
    counters = models.JSONField(_("counters"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    # Times the evaluation was sent; the reconciler re-sends a stuck run and gives up after a cap.
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0, db_default=0)
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    evaluated_at = models.DateTimeField(_("evaluated at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("campaign run")
        verbose_name_plural = _("campaign runs")
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "occurrence"],
                condition=Q(campaign__isnull=False),
                name="run_unique_campaign_occurrence",
            ),
            models.UniqueConstraint(
                fields=["journey_step", "occurrence"],
                condition=Q(journey_step__isnull=False),
                name="run_unique_step_occurrence",
            ),
            models.CheckConstraint(
                condition=Q(campaign__isnull=False) | Q(journey_step__isnull=False), name="run_has_source"
            ),
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="run_state_idx")]

    def __str__(self) -> str:
        source = self.campaign or self.journey_step
        return f"{source} · {self.occurrence}"


class RunStore(models.Model):
    """What a run expects of one store: the reconciler re-sends stores whose tasks never arrived."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    run = models.ForeignKey(
        CampaignRun, verbose_name=_("run"), on_delete=models.CASCADE, related_name="stores"
    )
    store = models.ForeignKey(Store, verbose_name=_("store"), on_delete=models.PROTECT, related_name="+")
    expected = models.PositiveIntegerField(_("expected tasks"), default=0)
    created = models.PositiveIntegerField(_("created tasks"), default=0)
    # Dropped at creation: consent withdrawn or the frequency cap reached since the evaluation.
    skipped = models.PositiveIntegerField(_("skipped"), default=0, db_default=0)
    # Created without a guide (the store had no active guide): the store manager's queue.
    unassigned = models.PositiveIntegerField(_("to the manager's queue"), default=0, db_default=0)
    state = models.CharField(_("state"), max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    scope_paths = ScopePaths(store="store")

    class Meta:
        verbose_name = _("run store")
        verbose_name_plural = _("run stores")
        constraints = [models.UniqueConstraint(fields=["run", "store"], name="runstore_unique")]
        indexes = [models.Index(fields=["state", "updated_at"], name="runstore_state_idx")]

    def __str__(self) -> str:
        return f"{self.run_id} · {self.store_id}"


class RunMember(models.Model):
    """The frozen audience of a run: who was eligible (treated) and who was drawn into the holdout.

    Written once at evaluation; the store fan-out and the reconciler read it, results compare the
    two groups.

    The references carry no database foreign keys (``db_constraint=False``): the only writer is one
    ``INSERT … SELECT`` that reads the very member, store and run rows it points to, and the 300,000
    deferred key checks of a 100,000-member audience took longer than the insert itself. Members,
    stores and runs are never deleted (erasure anonymises; tasks protect runs)."""

    run = models.ForeignKey(
        CampaignRun,
        verbose_name=_("run"),
        on_delete=models.CASCADE,
        related_name="audience",
        db_constraint=False,
        db_index=False,  # runmember_unique (run, member) leads with it
    )
    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    store = models.ForeignKey(
        Store,
        verbose_name=_("store"),
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,  # runmember_run_store_idx serves the store fan-out
    )
    holdout = models.BooleanField(_("holdout"), default=False)

    scope_paths = ScopePaths(store="store")

    class Meta:
        verbose_name = _("run member")
        verbose_name_plural = _("run members")
        constraints = [models.UniqueConstraint(fields=["run", "member"], name="runmember_unique")]
        indexes = [models.Index(fields=["run", "store"], name="runmember_run_store_idx")]

    def __str__(self) -> str:
        return f"{self.run_id} · {self.member_id}"


class Task(models.Model):
    class State(models.TextChoices):
        OPEN = "open", _("Open")
        DONE = "done", _("Done")
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")

    class Outcome(models.TextChoices):
        REACHED = "reached", _("Reached")
        NO_ANSWER = "no_answer", _("No answer")
        DECLINED = "declined", _("Declined")
        STOP = "stop", _("Asked to stop")
        WRONG_NUMBER = "wrong_number", _("Wrong number")
        VISIT_BOOKED = "visit_booked", _("Visit booked")
        PURCHASED = "purchased", _("Purchased")

    class CancelReason(models.TextChoices):
        CONSENT = "consent", _("Consent withdrawn")
        GUIDE_LEFT = "guide_left", _("Guide left")
        CAMPAIGN = "campaign", _("Campaign cancelled")
        MEMBER = "member", _("Member erased or merged")
        MANUAL = "manual", _("Cancelled by hand")

    # No single-column indexes where a composite one leads with the column (task_unique_run_member,
    # task_member_created_idx, task_store_state_idx): every index costs each of the bulk inserts.
    run = models.ForeignKey(
        CampaignRun, verbose_name=_("run"), on_delete=models.PROTECT, related_name="tasks", db_index=False
    )
    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.PROTECT, related_name="tasks", db_index=False
    )
    store = models.ForeignKey(
        Store, verbose_name=_("store"), on_delete=models.PROTECT, related_name="tasks", db_index=False
    )
    guide = models.ForeignKey(
        Guide, verbose_name=_("guide"), null=True, blank=True, on_delete=models.PROTECT, related_name="tasks"
    )
    channel = models.CharField(_("channel"), max_length=8, choices=TaskChannel.choices)
    title = models.CharField(_("title"), max_length=100)
    priority = models.PositiveSmallIntegerField(_("priority"), default=5)
    opens_at = models.DateTimeField(_("opens at"))
    due_at = models.DateTimeField(_("due at"))
    state = models.CharField(_("state"), max_length=10, choices=State.choices, default=State.OPEN)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices, blank=True)
    note = models.TextField(_("note"), blank=True)
    follow_up_on = models.DateField(_("follow up on"), null=True, blank=True)
    cancel_reason = models.CharField(
        _("cancel reason"), max_length=12, choices=CancelReason.choices, blank=True
    )
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("completed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    scope_paths = ScopePaths(store="store", guide="guide")

    class Meta:
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "member"], name="task_unique_run_member"),
            models.CheckConstraint(
                condition=Q(state="done", outcome__gt="", completed_at__isnull=False) | ~Q(state="done"),
                name="task_done_has_outcome",
            ),
        ]
        indexes = [
            models.Index(
                fields=["guide", "due_at"], condition=Q(state="open"), name="task_open_guide_due_idx"
            ),
            models.Index(fields=["store", "state"], name="task_store_state_idx"),
            models.Index(fields=["member", "created_at"], name="task_member_created_idx"),
            # The expiry sweep: open tasks past their due time.
            models.Index(fields=["due_at"], condition=Q(state="open"), name="task_open_due_idx"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def audit_store_id(self) -> int:
        return self.store_id
