"""The brand's organisation: regions, stores and the staff (guides and managers) who work in them."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from scrm.scoping import ScopePaths


class Region(models.Model):
    code = models.CharField(_("code"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=64)

    class Meta:
        verbose_name = _("region")
        verbose_name_plural = _("regions")
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class Store(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        CLOSED = "closed", _("Closed")

    code = models.CharField(_("store code"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=100)
    region = models.ForeignKey(
        Region, verbose_name=_("region"), on_delete=models.PROTECT, related_name="stores"
    )
    province = models.CharField(_("province"), max_length=32, blank=True)
    city = models.CharField(_("city"), max_length=32, db_index=True)
    address = models.CharField(_("address"), max_length=200, blank=True)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.OPEN)
    opened_on = models.DateField(_("opened on"), null=True, blank=True)

    scope_paths = ScopePaths(store="pk")

    class Meta:
        verbose_name = _("store")
        verbose_name_plural = _("stores")
        ordering = ["code"]
        constraints = [
            # Codes are matched case-insensitively on import; keep them stored upper-case and trimmed.
            models.CheckConstraint(
                condition=Q(code=models.functions.Upper(models.functions.Trim("code"))),
                name="store_code_normalised",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}（{self.code}）"

    @property
    def audit_store_id(self) -> int:
        return self.pk


class Guide(models.Model):
    """A member of store staff bound to a login. Managers are staff too: they also serve members."""

    class Position(models.TextChoices):
        GUIDE = "guide", _("Shopping guide")
        MANAGER = "manager", _("Store manager")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        LEFT = "left", _("Left")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("login"),
        on_delete=models.PROTECT,
        related_name="staff_profile",
    )
    store = models.ForeignKey(Store, verbose_name=_("store"), on_delete=models.PROTECT, related_name="guides")
    employee_no = models.CharField(_("employee number"), max_length=32, unique=True)
    name = models.CharField(_("full name"), max_length=64)
    mobile = models.CharField(_("mobile"), max_length=20, blank=True)
    position = models.CharField(_("position"), max_length=8, choices=Position.choices, default=Position.GUIDE)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.ACTIVE)
    joined_on = models.DateField(_("joined on"), null=True, blank=True)
    left_on = models.DateField(_("left on"), null=True, blank=True)

    scope_paths = ScopePaths(store="store", guide="pk")

    class Meta:
        verbose_name = _("guide")
        verbose_name_plural = _("guides")
        ordering = ["store__code", "employee_no"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="active", left_on__isnull=True) | Q(status="left", left_on__isnull=False),
                name="guide_left_on_matches_status",
            ),
        ]
        indexes = [models.Index(fields=["store", "status"], name="guide_store_status_idx")]

    def __str__(self) -> str:
        return f"{self.name}（{self.employee_no}）"

    @property
    def is_active_staff(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def audit_store_id(self) -> int:
        return self.store_id
