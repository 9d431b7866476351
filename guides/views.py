"""Store-staff pages: my members, a member's card, the store's export. Reads live in ``selectors``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import IO, Any

import xlsxwriter
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from scrm import audit
from scrm.audit import Actor
from scrm.roles import is_hq

from . import selectors

PAGE_SIZE = 20
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

View = Callable[..., HttpResponse]


def store_staff_only(view: View) -> View:
    """Active guides and store managers only: HQ works in the admin, anyone else is refused."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if is_hq(request.user):
            return redirect("admin:index")
        if not selectors.is_store_staff(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def _staff_context(request: HttpRequest) -> dict[str, Any]:
    profile = request.user.staff_profile  # type: ignore[union-attr]
    return {"profile": profile, "is_manager": selectors.is_store_manager(request.user)}


@require_GET
@store_staff_only
def member_list(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    page = Paginator(selectors.members_for(request.user, q=q), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        **_staff_context(request),
        "q": q,
        "page_obj": page,
        "rows": selectors.member_rows(page.object_list),
    }
    return render(request, "guides/member_list.html", context)


@require_GET
@store_staff_only
def member_detail(request: HttpRequest, pk: int) -> HttpResponse:
    card = selectors.member_card(request.user, pk)
    if card is None:
        # Outside the scope looks exactly like "no such member": existence is not leaked.
        raise Http404
    return render(request, "guides/member_detail.html", {**_staff_context(request), "card": card})


@require_POST
@store_staff_only
def member_export(request: HttpRequest) -> FileResponse:
    """The manager's store as xlsx, mobiles masked; the export itself is an audit event."""
    if not selectors.is_store_manager(request.user):
        raise PermissionDenied
    store = request.user.staff_profile.store  # type: ignore[union-attr]
    handle = tempfile.TemporaryFile()  # noqa: SIM115 -- FileResponse closes (and so deletes) it
    count = _write_xlsx(handle, selectors.EXPORT_HEADERS, selectors.export_rows(request.user))
    audit.record(
        Actor.from_request(request),
        "member.exported",
        target_type="member",
        target_id="",
        changes={"count": count, "scope": "store", "store": store.code},
        store_id=store.pk,
    )
    handle.seek(0)
    filename = f"members-{store.code}-{timezone.localdate().isoformat()}.xlsx"
    return FileResponse(handle, as_attachment=True, filename=filename, content_type=XLSX)


def _write_xlsx(handle: IO[bytes], headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write one sheet row by row; returns the number of data rows.

    constant_memory flushes each row to disk, so memory stays flat however large the store is.
    Strings are never read as formulas or links: a name like ``=HYPERLINK(...)`` stays text.
    """
    workbook = xlsxwriter.Workbook(
        handle,
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "default_date_format": "yyyy-mm-dd",
        },
    )
    sheet = workbook.add_worksheet("会员")
    bold = workbook.add_format({"bold": True})
    sheet.set_column(0, len(headers) - 1, 14)
    sheet.freeze_panes(1, 0)
    sheet.write_row(0, 0, headers, bold)
    count = 0
    for count, row in enumerate(rows, start=1):
        sheet.write_row(count, 0, row)
    workbook.close()
    return count
