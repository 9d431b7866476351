"""Personal data under PIPL: revealing a mobile, data-subject requests, and retention.

- Revealing a member's full mobile is a permission, a reason and an audit event (``reveal_mobile``);
  the caller (the guide page) rate-limits it and records refusals (``record_reveal_refused``).
- A data-subject request is opened with a due date (``open_data_request``) and closed by exactly one
  of: an access package (``complete_access_request``), a correction (``correct_member``), an erasure
  (``erase_member``) or a refusal with a reason (``reject_data_request``).
- Erasure anonymises the person and keeps the business record: orders, points, metrics, consent and
  assignment history stay, tied to a member row that no longer says who it was. The nightly retention
  job (``anonymise_inactive_members``) runs the very same code without a request.

Erased mobile numbers: the unique, E.164-shaped column gets ``+999`` followed by the member id
zero-padded to 11 digits (``+99900000000042``). +999 is a country code the ITU keeps unassigned, so
``normalize_mobile`` refuses it and no real number can ever collide with a placeholder.
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import xlsxwriter
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone, translation
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent

from .models import (
    ConsentRecord,
    DataSubjectRequest,
    ExternalIdentity,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    OrderLine,
    PointsEntry,
    PrivacyNotice,
)
from .services import CONSENT_FLAG, GRANTING_ACTIONS, assign_guide, record_consent, update_member

REVEAL_PERMISSION = "members.reveal_mobile"
# Erasure cannot be undone: it needs the right to delete members, which only HQ administrators hold.
ERASE_PERMISSION = "members.delete_member"
REQUEST_DUE_DAYS = 15
PLACEHOLDER_PREFIX = "+999"
PLACEHOLDER_DIGITS = 11
# Members anonymised per transaction by the retention job: a batch holds row locks until it commits,
# so it stays small enough not to block the tills' writes to the same members for long.
RETENTION_BATCH_SIZE = 200
# What a correction may change: the personal fields (membership data is HQ's own business).
CORRECTABLE_FIELDS = frozenset({"mobile", "name", "gender", "birthday"})
ERASED_FIELDS = ("name", "mobile", "birthday", "gender")
# The notice version a withdrawal names when no notice was ever published and the grant named none.
UNKNOWN_NOTICE_VERSION = "unknown"


class RevealReason(models.TextChoices):
    ABOUT_TO_CALL = "about_to_call", gettext_lazy("I am about to call the member")
    CALL_BACK = "call_back", gettext_lazy("The member asked to be called back")
    CORRECTING_DATA = "correcting_data", gettext_lazy("Correcting the member's data")
    OTHER = "other", gettext_lazy("Other (say why)")


# --------------------------------------------------------------------------------------------------
# Revealing a mobile number


def clean_reveal_reason(reason: str, note: str = "") -> tuple[str, str]:
    """The reason and note as they will be recorded; a reason is required, "other" needs words."""
    note = (note or "").strip()
    if reason not in RevealReason.values:
        raise ValidationError(_("Choose why you need the full number."), code="reason")
    if reason == RevealReason.OTHER and not note:
        raise ValidationError(_("Say why you need the full number."), code="note")
    return reason, note[:200]


@audit.service
def reveal_mobile(member: Member, *, actor: Actor, reason: str, note: str = "") -> str:
    """The member's full mobile (E.164), once; the look itself is recorded with its reason.

    The caller checks the member is in the actor's scope (a guide page answers 404 otherwise).
    """
    reason, note = clean_reveal_reason(reason, note)
    if actor.user is not None and not actor.user.has_perm(REVEAL_PERMISSION):
        raise PermissionDenied
    if member.status == Member.Status.ERASED:
        raise ValidationError(_("This member's personal data has been erased."), code="erased")
    changes: dict[str, Any] = {"reason": reason}
    if note:
        changes["note"] = note
    audit.record(actor, "member.mobile_revealed", target=member, changes=changes)
    return member.mobile


@audit.service
def record_reveal_refused(
    member: Member, *, actor: Actor, reason: str = "", note: str = "", why: str = "rate_limited"
) -> None:
    """A refused reveal is evidence too: someone wanted more numbers than a person needs to call."""
    audit.record(
        actor,
        "member.mobile_reveal_refused",
        target=member,
        changes={"why": why, "reason": reason, "note": (note or "").strip()[:200]},
    )


# --------------------------------------------------------------------------------------------------
# Data-subject requests: opening, closing


def _erased_error() -> ValidationError:
    return ValidationError(_("This member's personal data has already been erased."), code="erased")


def _is_erased(member: Member) -> bool:
    return member.status == Member.Status.ERASED or member.erased_at is not None


@audit.service
def open_data_request(
    member: Member,
    *,
    kind: str,
    channel: str,
    details: str,
    actor: Actor,
    received_at: datetime.datetime | None = None,
) -> DataSubjectRequest:
    """Log a request as received; it is due ``REQUEST_DUE_DAYS`` days later."""
    member = Member.objects.get(pk=member.pk)
    if _is_erased(member):
        raise _erased_error()
    received = received_at or timezone.now()
    request = DataSubjectRequest(
        member=member,
        kind=kind,
        channel=channel,
        details=(details or "").strip(),
        received_at=received,
        due_at=received + datetime.timedelta(days=REQUEST_DUE_DAYS),
        received_by=actor.user if actor.user is not None else None,
    )
    request.full_clean()
    request.save(force_insert=True)
    audit.record(
        actor,
        "data_request.opened",
        target=request,
        changes={"member": member.pk, "kind": kind, "channel": channel, "due_at": request.due_at},
    )
    return request


def _lock_request(request: DataSubjectRequest, kind: str, *, allow_done: bool = False) -> DataSubjectRequest:
    locked = DataSubjectRequest.objects.select_for_update().select_related("member").get(pk=request.pk)
    if locked.kind != kind:
        raise ValidationError(
            _("%(request)s cannot be handled this way: it is a request of another kind.")
            % {"request": locked},
            code="kind",
        )
    open_states = {DataSubjectRequest.Status.RECEIVED}
    if allow_done:
        open_states.add(DataSubjectRequest.Status.DONE)
    if locked.status not in open_states:
        raise ValidationError(_("%(request)s is already closed.") % {"request": locked}, code="closed")
    return locked


def _close(request: DataSubjectRequest, *, actor: Actor, status: str, outcome: str) -> None:
    previous = request.status
    request.status = status
    request.completed_at = timezone.now()
    request.handled_by = actor.user if actor.user is not None else None
    request.outcome = outcome
    request.save(update_fields=["status", "completed_at", "handled_by", "outcome"])
    verb = "rejected" if status == DataSubjectRequest.Status.REJECTED else "completed"
    audit.record(
        actor,
        f"data_request.{verb}",
        target=request,
        changes={"status": [previous, status], "outcome": outcome},
    )


@audit.service
def reject_data_request(request: DataSubjectRequest, *, actor: Actor, outcome: str) -> DataSubjectRequest:
    """Close a request without acting on it (e.g. the requester could not be identified)."""
    outcome = (outcome or "").strip()
    if not outcome:
        raise ValidationError(_("Say why the request is rejected."), code="outcome")
    locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
    if locked.status != DataSubjectRequest.Status.RECEIVED:
        raise ValidationError(_("%(request)s is already closed.") % {"request": locked}, code="closed")
    _close(locked, actor=actor, status=DataSubjectRequest.Status.REJECTED, outcome=outcome)
    return locked


@audit.service
def complete_access_request(request: DataSubjectRequest, *, actor: Actor) -> dict[str, Any]:
    """Close an access request and return the member's access package.

    A request already done may be exported again (say as JSON after xlsx); every export is audited.
    """
    locked = _lock_request(request, DataSubjectRequest.Kind.ACCESS, allow_done=True)
    if locked.status == DataSubjectRequest.Status.RECEIVED:
        _close(
            locked,
            actor=actor,
            status=DataSubjectRequest.Status.DONE,
            outcome=_("Access package exported."),
        )
    package = build_access_package(locked.member)
    audit.record(
        actor,
        "member.access_package_exported",
        target=locked.member,
        changes={
            "data_request": locked.pk,
            "rows": {key: len(value) for key, value in package.items() if isinstance(value, list)},
        },
    )
    return package


@audit.service
def correct_member(request: DataSubjectRequest, *, actor: Actor, **changes: Any) -> Member:
    """Apply the member's corrections through ``update_member`` and close the request."""
    unknown = set(changes) - CORRECTABLE_FIELDS
    if unknown:
        raise ValueError(f"not correctable through a data request: {sorted(unknown)}")
    locked = _lock_request(request, DataSubjectRequest.Kind.CORRECT)
    if _is_erased(locked.member):
        raise _erased_error()
    before = {name: getattr(locked.member, name) for name in changes}
    member = update_member(locked.member, actor=actor, **changes)
    changed = [name for name in sorted(changes) if getattr(member, name) != before[name]]
    if changed:
        labels = ", ".join(str(Member._meta.get_field(name).verbose_name) for name in changed)
        outcome = _("Corrected: %(fields)s.") % {"fields": labels}
    else:
        outcome = _("Nothing needed correcting.")
    _close(locked, actor=actor, status=DataSubjectRequest.Status.DONE, outcome=outcome)
    return member


@audit.service
def erase_member(request: DataSubjectRequest, *, actor: Actor) -> Member:
    """Anonymise the member of an erasure request and close it; orders, points and metrics stay."""
    if actor.user is not None and not actor.user.has_perm(ERASE_PERMISSION):
        raise PermissionDenied
    locked = _lock_request(request, DataSubjectRequest.Kind.ERASE)
    member = anonymise_member(
        locked.member, actor=actor, action="member.erased", context={"data_request": locked.pk}
    )
    _close(
        locked,
        actor=actor,
        status=DataSubjectRequest.Status.DONE,
        outcome=_("Personal data erased; orders, points and metrics kept."),
    )
    return member


# --------------------------------------------------------------------------------------------------
# Anonymisation (erasure and retention)


def placeholder_mobile(member_id: int) -> str:
    """``+999`` + the id on 11 digits: unique, passes the E.164 check, never a real number."""
    return f"{PLACEHOLDER_PREFIX}{member_id:0{PLACEHOLDER_DIGITS}d}"


def latest_notice_version() -> str:
    return (
        PrivacyNotice.objects.order_by("-published_at", "-id").values_list("version", flat=True).first() or ""
    )


def _granted_consents(member: Member) -> dict[tuple[str, str], str]:
    """(channel, purpose) → the notice version of the grant, for every consent currently granted."""
    latest = (
        ConsentRecord.objects.filter(member=member)
        .order_by("channel", "purpose", "-at", "-id")
        .distinct("channel", "purpose")
        .values_list("channel", "purpose", "action", "policy_version")
    )
    granted = {
        (ch, purpose): version for ch, purpose, action, version in latest if action in GRANTING_ACTIONS
    }
    # A flag set without a ledger row (old data) is withdrawn too: the flags must all end false.
    for channel, flag in CONSENT_FLAG.items():
        if getattr(member, flag):
            granted.setdefault((str(channel), ConsentRecord.Purpose.MARKETING), "")
    return granted


@audit.service
def anonymise_member(
    member: Member,
    *,
    actor: Actor,
    action: str,
    context: Mapping[str, Any],
    notice_version: str | None = None,
) -> Member:
    """Strip the person from a member row, keeping orders, points, metrics and every ledger.

    The personal fields are blanked first, so that the events the steps below write (guide unbound,
    consent withdrawn) label the member by the placeholder and never copy the old name into the
    append-only trail. The status turns "erased" last. ``notice_version`` (the latest notice, looked
    up when not given) is what the withdrawals name; a batch looks it up once.
    """
    member = Member.objects.select_for_update().get(pk=member.pk)
    if _is_erased(member):
        raise _erased_error()
    now = timezone.now()
    blank = {
        "name": "",
        "mobile": placeholder_mobile(member.pk),
        "birthday": None,
        "gender": Member.Gender.UNKNOWN,
        "updated_at": now,
    }
    Member.objects.filter(pk=member.pk).update(**blank)
    for name, value in blank.items():
        setattr(member, name, value)
    if member.guide_id is not None:
        member = assign_guide(member, None, actor=actor, reason=GuideAssignment.Reason.HQ)
    version = latest_notice_version() if notice_version is None else notice_version
    withdrawn = []
    for (channel, purpose), granted_version in sorted(_granted_consents(member).items()):
        record_consent(
            member,
            channel=channel,
            purpose=purpose,
            action=ConsentRecord.Action.WITHDRAW,
            source=ConsentRecord.Source.HQ_ADMIN,
            actor=actor,
            policy_version=version or granted_version or UNKNOWN_NOTICE_VERSION,
            evidence={"reason": action, **context},
        )
        withdrawn.append([channel, purpose])
    identities, _detail = ExternalIdentity.objects.filter(member=member).delete()
    tags, _detail = MemberTag.objects.filter(member=member).delete()
    Member.objects.filter(pk=member.pk).update(status=Member.Status.ERASED, erased_at=now, updated_at=now)
    member.refresh_from_db()
    audit.record(
        actor,
        action,
        target=member,
        # What was removed, never the removed values: the trail must not keep what was erased.
        changes={
            **context,
            "fields": list(ERASED_FIELDS),
            "identities_deleted": identities,
            "tags_deleted": tags,
            "consent_withdrawn": withdrawn,
        },
    )
    return member


# --------------------------------------------------------------------------------------------------
# Retention


def inactive_members(*, cutoff: datetime.datetime) -> QuerySet[Member]:
    """Active members whose last activity (latest of joining and last purchase) is before ``cutoff``."""
    return Member.objects.filter(
        Q(last_purchase_at__isnull=True) | Q(last_purchase_at__lt=cutoff),
        status=Member.Status.ACTIVE,
        erased_at__isnull=True,
        joined_at__lt=cutoff,
    )


def retention_cutoff(*, now: datetime.datetime | None = None, days: int | None = None) -> datetime.datetime:
    days = settings.SCRM_RETENTION_INACTIVE_DAYS if days is None else days
    return (now or timezone.now()) - datetime.timedelta(days=days)


def anonymise_inactive_members(
    *,
    actor: Actor,
    now: datetime.datetime | None = None,
    days: int | None = None,
    batch_size: int = RETENTION_BATCH_SIZE,
    dry_run: bool = False,
) -> int:
    """Anonymise every member inactive past the retention period; returns how many (or would be).

    Safe to repeat: erased members no longer match. Each batch is one transaction that re-checks the
    condition under row locks, so a member who bought since the selection is left alone; rows another
    transaction holds are skipped until the next run.
    """
    cutoff = retention_cutoff(now=now, days=days)
    candidates = inactive_members(cutoff=cutoff)
    if dry_run:
        return candidates.count()
    version = latest_notice_version()
    total = 0
    while True:
        ids = list(candidates.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        with audit.app_audited():
            batch = list(candidates.filter(pk__in=ids).select_for_update(skip_locked=True).order_by("pk"))
            for member in batch:
                anonymise_member(
                    member,
                    actor=actor,
                    action="member.anonymised_for_retention",
                    context={"inactive_before": cutoff.isoformat()},
                    notice_version=version,
                )
        total += len(batch)
        if not batch:
            break
    with audit.app_audited():
        audit.record(
            actor,
            "member.retention_run",
            target_type=Member._meta.label_lower,
            target_id="*",
            changes={"anonymised": total, "cutoff": cutoff.isoformat()},
        )
    return total


# --------------------------------------------------------------------------------------------------
# The access package


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _value(obj: models.Model, name: str) -> Any:
    field = obj._meta.get_field(name)
    if field.is_relation:
        related = getattr(obj, name)
        if related is None:
            return None
        return related.get_username() if hasattr(related, "get_username") else str(related)
    return _plain(getattr(obj, name))


def _rows(objects: Iterable[models.Model], fields: Sequence[str]) -> list[dict[str, Any]]:
    return [{name: _value(obj, name) for name in fields} for obj in objects]


# Every column of the member row, present and future: "every personal field" by construction.
MEMBER_FIELDS = tuple(f.name for f in Member._meta.concrete_fields)
IDENTITY_FIELDS = ("platform", "external_id", "linked_at")
TAG_FIELDS = ("tag", "source", "added_at")
POINTS_FIELDS = ("created_at", "kind", "delta", "reason", "ref", "expires_at")
ORDER_FIELDS = (
    "channel",
    "external_no",
    "store",
    "guide",
    "paid_at",
    "amount",
    "refunded_amount",
    "item_count",
    "status",
)
LINE_FIELDS = ("line_no", "sku", "name", "category", "quantity", "amount")
CONSENT_FIELDS = (
    "at",
    "channel",
    "purpose",
    "action",
    "source",
    "method",
    "policy_version",
    "store",
    "evidence",
)
ASSIGNMENT_FIELDS = ("guide", "started_at", "ended_at", "reason")
REQUEST_FIELDS = (
    "id",
    "kind",
    "status",
    "received_at",
    "due_at",
    "channel",
    "details",
    "completed_at",
    "outcome",
)
VIEW_FIELDS = ("at", "action", "actor_label", "actor_kind", "changes")

# Section → (model, fields) in the order the package lists them; a sheet each in the xlsx.
SECTIONS: tuple[tuple[str, type[models.Model], tuple[str, ...]], ...] = (
    ("member", Member, MEMBER_FIELDS),
    ("identities", ExternalIdentity, IDENTITY_FIELDS),
    ("tags", MemberTag, TAG_FIELDS),
    ("points", PointsEntry, POINTS_FIELDS),
    ("orders", Order, ORDER_FIELDS),
    ("order_lines", OrderLine, ("order", *LINE_FIELDS)),
    ("consents", ConsentRecord, CONSENT_FIELDS),
    ("guide_assignments", GuideAssignment, ASSIGNMENT_FIELDS),
    ("data_requests", DataSubjectRequest, REQUEST_FIELDS),
    ("views", AuditEvent, VIEW_FIELDS),
)


def member_events(member: Member) -> QuerySet[AuditEvent]:
    """Every audit event about the member: who looked (reveals, access packages) and who changed what."""
    return AuditEvent.objects.filter(target_type=Member._meta.label_lower, target_id=str(member.pk)).order_by(
        "at", "id"
    )


def build_access_package(member: Member) -> dict[str, Any]:
    """Everything the system holds about ``member``, as plain JSON-ready data.

    Keys are field names; values are strings, numbers, booleans or None (times in local ISO form,
    money as exact decimal strings). Orders carry their lines under ``lines``.
    """
    member = Member.objects.select_related("home_store", "guide", "tier").get(pk=member.pk)
    lines_by_order: dict[int, list[dict[str, Any]]] = {}
    for line in OrderLine.objects.filter(order__member=member).order_by("order_id", "line_no"):
        lines_by_order.setdefault(line.order_id, []).append(_rows([line], LINE_FIELDS)[0])
    orders = []
    for order in (
        Order.objects.filter(member=member).select_related("store", "guide").order_by("paid_at", "id")
    ):
        orders.append({**_rows([order], ORDER_FIELDS)[0], "lines": lines_by_order.get(order.pk, [])})
    return {
        "generated_at": _plain(timezone.now()),
        "member": _rows([member], MEMBER_FIELDS)[0],
        "identities": _rows(
            ExternalIdentity.objects.filter(member=member).order_by("linked_at", "id"), IDENTITY_FIELDS
        ),
        "tags": _rows(
            MemberTag.objects.filter(member=member).select_related("tag").order_by("added_at", "id"),
            TAG_FIELDS,
        ),
        "points": _rows(
            PointsEntry.objects.filter(member=member).order_by("created_at", "id"), POINTS_FIELDS
        ),
        "orders": orders,
        "consents": _rows(
            ConsentRecord.objects.filter(member=member).select_related("store").order_by("at", "id"),
            CONSENT_FIELDS,
        ),
        "guide_assignments": _rows(
            GuideAssignment.objects.filter(member=member)
            .select_related("guide")
            .order_by("started_at", "id"),
            ASSIGNMENT_FIELDS,
        ),
        "data_requests": _rows(
            DataSubjectRequest.objects.filter(member=member).order_by("received_at", "id"), REQUEST_FIELDS
        ),
        "views": _rows(member_events(member), VIEW_FIELDS),
    }


def access_package_json(package: Mapping[str, Any]) -> bytes:
    return json.dumps(package, ensure_ascii=False, indent=2).encode("utf-8")


def _header(model: type[models.Model], name: str) -> str:
    return str(capfirst(model._meta.get_field(name).verbose_name))


def _cell(model: type[models.Model], name: str, value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    field = model._meta.get_field(name)
    if field.choices and value is not None:
        return str(dict(field.flatchoices).get(value, value))
    return value


def _sheet_rows(package: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    if key == "member":
        return [package["member"]]
    if key == "order_lines":
        return [
            {"order": order["external_no"], **line} for order in package["orders"] for line in order["lines"]
        ]
    return list(package[key])


def access_package_xlsx(package: Mapping[str, Any], *, language: str | None = None) -> bytes:
    """The package as a workbook, a sheet per section, headers in ``language`` (Chinese by default).

    The member sheet is one field per row; the others are one record per row. Text is never read
    as a formula or a link, whatever a member typed into their name.
    """
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(
        buffer,
        {
            "in_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    bold = workbook.add_format({"bold": True})
    with translation.override(language or settings.LANGUAGE_CODE):
        for key, model, fields in SECTIONS:
            sheet = workbook.add_worksheet(str(capfirst(model._meta.verbose_name_plural))[:31])
            rows = _sheet_rows(package, key)
            if key == "member":
                sheet.set_column(0, 0, 20)
                sheet.set_column(1, 1, 36)
                for number, name in enumerate(fields):
                    sheet.write_string(number, 0, _header(model, name), bold)
                    sheet.write(number, 1, _cell(model, name, rows[0][name]))
                continue
            sheet.set_column(0, len(fields) - 1, 18)
            sheet.freeze_panes(1, 0)
            sheet.write_row(0, 0, [_header(model, name) for name in fields], bold)
            for number, row in enumerate(rows, start=1):
                sheet.write_row(number, 0, [_cell(model, name, row.get(name)) for name in fields])
    workbook.close()
    return buffer.getvalue()
