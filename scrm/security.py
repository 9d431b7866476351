"""The security baseline: session lifetimes, ending sessions, audited denials, the audit trail's export.

Sign-in lockout itself is django-axes (settings ``AXES_*``); its lockouts reach the audit trail through
``scrm.signals``. What is here is the project's own part:

- sessions end a fixed time after sign-in: ``SCRM_STAFF_SESSION_HOURS`` for store staff (and also when
  the browser closes: shop phones are shared), ``SCRM_HQ_SESSION_HOURS`` for HQ;
- a store-staff login whose staff profile is no longer active is signed out on its next request, and
  ``end_sessions_of`` ends every session of a user at once (a guide leaving);
- every refusal an authenticated user meets (403, a 404 from a lookup, the admin fence) is one
  ``access.denied`` event;
- the auditor's export of the filtered trail, written row by row and fingerprinted (sha256).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import Resolver404, resolve
from django.utils import timezone

from . import audit
from .audit import Actor
from .models import AuditEvent
from .roles import Role, is_hq, role_of
from .scoping import scope_of

# --------------------------------------------------------------------------------------------------
# Session lifetime

SESSION_ENDS_AT = "scrm_session_ends_at"  # epoch seconds, set at sign-in
STORE_STAFF_ROLES = frozenset({Role.GUIDE, Role.STORE_MANAGER})


def session_hours_for(user: Any) -> int:
    """HQ works a desk day; anyone else (store staff, an account without a role) gets the short session."""
    return settings.SCRM_HQ_SESSION_HOURS if is_hq(user) else settings.SCRM_STAFF_SESSION_HOURS


def start_session(request: HttpRequest, user: Any) -> None:
    """Fix the session's end at sign-in; it does not slide with activity, a shift is a shift."""
    seconds = session_hours_for(user) * 60 * 60
    request.session[SESSION_ENDS_AT] = int(timezone.now().timestamp()) + seconds
    # 0: the cookie lives only as long as the browser; the absolute end above still applies.
    request.session.set_expiry(seconds if is_hq(user) else 0)


def session_end_reason(request: HttpRequest, user: Any) -> str | None:
    """Why the authenticated ``user``'s session must end now, or None.

    ``"expired"``: past the end fixed at sign-in. ``"staff_left"``: a guide or manager login whose staff
    profile is no longer active. Costs no query for HQ; for store staff, the role and profile reads are
    the ones the scoped pages make anyway (both are cached on the user object).
    """
    ends_at = request.session.get(SESSION_ENDS_AT)
    now = int(timezone.now().timestamp())
    if ends_at is None:
        # Signed in before lifetimes existed: the clock starts now rather than never.
        start_session(request, user)
    elif now >= ends_at:
        return "expired"
    if role_of(user) in STORE_STAFF_ROLES:
        profile = _staff_profile(user)
        if profile is not None and not profile.is_active_staff:
            return "staff_left"
    return None


def end_request_session(request: HttpRequest, reason: str) -> None:
    """Sign the request's user out for ``reason``, on the audit trail as ``auth.session_ended``.

    Not ``logout()``: that would also record an ``auth.logout`` the person never asked for.
    """
    user = request.user
    profile = _staff_profile(user)
    audit.record(
        Actor.from_request(request),
        "auth.session_ended",
        target=user,
        store_id=profile.store_id if profile is not None else None,
        changes={"reason": reason},
    )
    request.session.flush()
    request.user = AnonymousUser()


def end_sessions_of(user: Any) -> int:
    """Delete every live session of ``user``; returns how many there were.

    Sessions are stored signed, not indexed by user, so the live ones are read and decoded in batches:
    a rare operation (a guide leaving) that must not miss any session.
    """
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    if not hasattr(store_class, "get_model_class"):
        raise ImproperlyConfigured("Ending a user's sessions needs a database-backed SESSION_ENGINE.")
    decoder = store_class()
    user_id = str(user.pk)
    live = store_class.get_model_class().objects.filter(expire_date__gt=timezone.now())
    keys = [
        key
        for key, data in live.values_list("session_key", "session_data").iterator(chunk_size=2000)
        if str(decoder.decode(data).get(SESSION_KEY)) == user_id
    ]
    for key in keys:
        store_class(session_key=key).delete()  # through the store, so a cached_db cache forgets it too
    return len(keys)


def _staff_profile(user: Any) -> Any:
    try:
        return user.staff_profile
    except Exception:  # RelatedObjectDoesNotExist is per-model; any miss means "no profile"
        return None


# --------------------------------------------------------------------------------------------------
# Denials

# Workbench routes whose ``pk`` names a member: a refused look at one is findable by the member filter.
# Names only, so this infrastructure module imports nothing from the apps above it.
MEMBER_ROUTES = frozenset({"guides:member", "guides:reveal"})


def record_access_denied(request: HttpRequest, *, status: int, reason: str) -> AuditEvent:
    """One ``access.denied`` event: who, which path and method, the status they got, and why."""
    target_type, target_id = _denied_target(request)
    return audit.record(
        Actor.from_request(request),
        "access.denied",
        target_type=target_type,
        target_id=target_id,
        store_id=scope_of(request.user).store_id,
        # The path without its query string: a search box may hold a mobile number.
        changes={"path": request.path, "method": request.method, "status": status, "reason": reason},
    )


def _denied_target(request: HttpRequest) -> tuple[str, str]:
    match = getattr(request, "resolver_match", None)
    if match is None:  # refused by a middleware before the URL was resolved (the admin fence)
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "", ""
    if match.view_name in MEMBER_ROUTES and "pk" in match.kwargs:
        return "members.member", str(match.kwargs["pk"])
    # A ModelAdmin's own views carry it as ``model_admin``; object pages take ``object_id``.
    model_admin = getattr(match.func, "model_admin", None)
    if model_admin is not None and "object_id" in match.kwargs:
        return model_admin.model._meta.label_lower, str(match.kwargs["object_id"])[:64]
    return "", ""


# --------------------------------------------------------------------------------------------------
# The audit trail, exported for the auditor

AUDIT_EXPORT_ROLES = frozenset({Role.AUDITOR, Role.HQ_ADMIN})
AUDIT_EXPORT_FORMATS = ("xlsx", "csv")
AUDIT_EXPORT_FIELDS = (
    "id",
    "at",
    "action",
    "actor_kind",
    "actor_label",
    "target_type",
    "target_id",
    "target_label",
    "store_id",
    "changes",
    "request_id",
    "ip",
    "hash",
)
# One sheet holds 1,048,576 rows; the header takes one. Past this the file says it was cut short.
AUDIT_EXPORT_MAX_ROWS = 1_048_575
EXPORT_BATCH = 2000
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def may_export_audit_trail(user: Any) -> bool:
    return role_of(user) in AUDIT_EXPORT_ROLES


@dataclass(frozen=True)
class ExportedFile:
    rows: int
    sha256: str
    truncated: bool


def audit_export_headers() -> list[str]:
    """The fields' own (translated) names, so the file reads like the admin page."""
    return [str(AuditEvent._meta.get_field(name).verbose_name) for name in AUDIT_EXPORT_FIELDS]


def audit_export_rows(queryset: QuerySet[AuditEvent], *, limit: int) -> Iterator[list[Any]]:
    """The events in trail order (oldest first), as plain cells, read from the database in batches."""
    rows = queryset.order_by("id").values_list(*AUDIT_EXPORT_FIELDS)[:limit]
    at_index = AUDIT_EXPORT_FIELDS.index("at")
    changes_index = AUDIT_EXPORT_FIELDS.index("changes")
    for row in rows.iterator(chunk_size=EXPORT_BATCH):
        cells = list(row)
        cells[at_index] = timezone.localtime(cells[at_index]).strftime("%Y-%m-%d %H:%M:%S")
        cells[changes_index] = json.dumps(cells[changes_index], ensure_ascii=False, sort_keys=True)
        yield ["" if cell is None else cell for cell in cells]


def write_audit_export(
    queryset: QuerySet[AuditEvent], handle: IO[bytes], *, file_format: str
) -> ExportedFile:
    """Write the events of ``queryset`` to ``handle`` as xlsx or csv; memory stays flat however many.

    Returns the row count, the file's sha256 (recorded with the export, so a copy can be checked
    later) and whether the row cap cut it short.
    """
    limit = AUDIT_EXPORT_MAX_ROWS
    rows = audit_export_rows(queryset, limit=limit + 1)
    if file_format == "xlsx":
        count = _write_xlsx(handle, audit_export_headers(), rows, limit=limit)
    elif file_format == "csv":
        count = _write_csv(handle, audit_export_headers(), rows, limit=limit)
    else:
        raise ValueError(f"unknown export format {file_format!r}")
    handle.flush()
    handle.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    handle.seek(0)
    return ExportedFile(rows=min(count, limit), sha256=digest.hexdigest(), truncated=count > limit)


def _write_xlsx(handle: IO[bytes], headers: list[str], rows: Iterator[list[Any]], *, limit: int) -> int:
    import xlsxwriter

    # constant_memory flushes each row to disk; strings are never read as formulas, links or numbers.
    workbook = xlsxwriter.Workbook(
        handle,
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    sheet = workbook.add_worksheet("audit")
    sheet.freeze_panes(1, 0)
    sheet.write_row(0, 0, headers, workbook.add_format({"bold": True}))
    count = 0
    for count, row in enumerate(rows, start=1):
        if count > limit:
            break
        sheet.write_row(count, 0, row)
    workbook.close()
    return count


def _write_csv(handle: IO[bytes], headers: list[str], rows: Iterator[list[Any]], *, limit: int) -> int:
    # utf-8-sig: the byte-order mark makes Excel read the Chinese text as UTF-8.
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    writer = csv.writer(text)
    writer.writerow(headers)
    count = 0
    for count, row in enumerate(rows, start=1):
        if count > limit:
            break
        writer.writerow([_csv_cell(cell) for cell in row])
    text.flush()
    text.detach()  # leave ``handle`` open for the hash and the response
    return count


def _csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value
