"""Store-staff pages: my members, a member's card, revealing a mobile, the store's export.

Reads live in ``selectors``; revealing a number is ``members.privacy.reveal_mobile``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import IO, Any

import xlsxwriter
from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit.decorators import ratelimit

from members import privacy
from members.models import Member, Tier
from scrm import audit
from scrm.audit import Actor
from scrm.roles import ROLE_PERMISSIONS, is_hq
from scrm.scoping import scope_of

from . import selectors, services
from .forms import NoteForm, TagForm

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
    tier = request.GET.get("tier", "").strip()[:32]
    stage = request.GET.get("stage", "").strip()[:16]
    flags = [f for f in request.GET.getlist("f") if f in selectors.MEMBER_FILTERS]
    members = selectors.filtered_members(request.user, q=q, tier=tier, stage=stage, flags=flags)
    page = Paginator(members, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    is_manager = selectors.is_store_manager(request.user)
    context = {
        **_staff_context(request),
        "nav": "members",
        "q": q,
        "tier": tier,
        "stage": stage,
        "flags": flags,
        "filtered": bool(q or tier or stage or flags),
        "querystring": query.urlencode(),
        "tiers": Tier.objects.order_by("rank").values_list("code", "name"),
        "stages": Member.Lifecycle.choices,
        "filter_choices": [
            ("birthday", _("Birthday this week")),
            ("dormant", _("Dormant")),
            ("not_contacted", _("Not contacted for 30 days")),
            *([("unassigned", _("No exclusive guide"))] if is_manager else []),
        ],
        "page_obj": page,
        "rows": selectors.member_rows(page.object_list),
        "colleagues": selectors.store_colleagues(request.user) if is_manager else [],
    }
    return render(request, "guides/member_list.html", context)


@require_GET
@store_staff_only
def member_detail(request: HttpRequest, pk: int) -> HttpResponse:
    card = selectors.member_card(request.user, pk)
    if card is None:
        # Outside the scope looks exactly like "no such member": existence is not leaked.
        raise Http404
    return _member_page(request, card)


@require_POST
@store_staff_only
def member_note(request: HttpRequest, pk: int) -> HttpResponse:
    card = selectors.member_card_for_work(request.user, pk, task=request.POST.get("task", ""))
    if card is None:
        raise Http404
    form = NoteForm(request.POST)
    if form.is_valid():
        try:
            services.add_note(
                card.member,
                body=form.cleaned_data["body"],
                author=request.user.staff_profile,  # type: ignore[union-attr]
                actor=Actor.from_request(request),
            )
        except ValidationError as error:
            form.add_error("body", error)
        else:
            messages.success(request, _("Note added."))
            return redirect(_back_to(request, pk))
    return _member_page(request, card, note_form=form, status=400)


@require_POST
@store_staff_only
def member_tag(request: HttpRequest, pk: int) -> HttpResponse:
    card = selectors.member_card_for_work(request.user, pk, task=request.POST.get("task", ""))
    if card is None:
        raise Http404
    form = TagForm(request.POST)
    if form.is_valid():
        try:
            services.add_tag(card.member, name=form.cleaned_data["name"], actor=Actor.from_request(request))
        except ValidationError as error:
            form.add_error("name", error)
        else:
            messages.success(request, _("Tag added."))
            return redirect(_back_to(request, pk))
    return _member_page(request, card, tag_form=form, status=400)


def _back_to(request: HttpRequest, pk: int) -> str:
    """Back to the task page the form was on, else the member page (only our own task pages)."""
    task = request.POST.get("task", "")
    if task.isdigit():
        return reverse("guides:task", args=[int(task)])
    return reverse("guides:member", args=[pk])


def _member_page(
    request: HttpRequest,
    card: selectors.MemberCard,
    *,
    reveal_form: RevealForm | None = None,
    revealed_mobile: str = "",
    refused: str = "",
    note_form: NoteForm | None = None,
    tag_form: TagForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        **_staff_context(request),
        "nav": "members",
        "card": card,
        "notes": selectors.notes_for(card.member),
        "note_form": note_form or NoteForm(),
        "tag_form": tag_form or TagForm(),
        "can_reveal": _may_reveal(request.user),
        "reveal_form": reveal_form or RevealForm(),
        "revealed_mobile": revealed_mobile,
        "revealed_national": revealed_mobile.removeprefix("+86") if revealed_mobile else "",
        "reveal_refused": refused,
    }
    return render(request, "guides/member_detail.html", context, status=status)


# Revealing a mobile ------------------------------------------------------------------------------

# Enough for a guide's day of calls; anything past it looks like harvesting numbers.
REVEAL_RATE = "20/h"


class RevealForm(forms.Form):
    reason = forms.ChoiceField(
        label=gettext_lazy("Why do you need the full number?"),
        choices=privacy.RevealReason.choices,
        widget=forms.RadioSelect,
    )
    note = forms.CharField(label=gettext_lazy("Other reason"), max_length=200, required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "reason" in cleaned:
            try:
                privacy.clean_reveal_reason(cleaned["reason"], cleaned.get("note", ""))
            except ValidationError as error:
                self.add_error("note" if error.code == "note" else "reason", error)
        return cleaned


def _may_reveal(user: Any) -> bool:
    """Whether to offer the reveal form: read from the role table, so drawing the page costs no query.

    The reveal itself checks the user's real permission.
    """
    role = scope_of(user).role
    return role is not None and ("members", "reveal_mobile") in ROLE_PERMISSIONS.get(role, set())


def _reveal_rate_key(group: str, request: HttpRequest) -> str:
    return str(request.user.pk)


@require_POST
@store_staff_only
@ratelimit(group="guides.reveal_mobile", key=_reveal_rate_key, rate=REVEAL_RATE, method="POST", block=False)
def member_reveal(request: HttpRequest, pk: int) -> HttpResponse:
    """The member page once more, with the full number: only in this response, never cached or kept.

    Every attempt counts towards the rate limit, refused ones included, so probing many members by
    id is limited too.
    """
    if not request.user.has_perm(privacy.REVEAL_PERMISSION):
        raise PermissionDenied
    card = selectors.member_card(request.user, pk)
    if card is None:
        raise Http404
    form = RevealForm(request.POST)
    actor = Actor.from_request(request)
    if getattr(request, "limited", False):
        privacy.record_reveal_refused(
            card.member,
            actor=actor,
            reason=str(request.POST.get("reason", ""))[:32],
            note=str(request.POST.get("note", "")),
        )
        refused = _("You have revealed too many numbers in the last hour. Try again later.")
        response = _member_page(request, card, reveal_form=form, refused=refused, status=429)
    elif not form.is_valid():
        response = _member_page(request, card, reveal_form=form, status=400)
    else:
        mobile = privacy.reveal_mobile(
            card.member, actor=actor, reason=form.cleaned_data["reason"], note=form.cleaned_data["note"]
        )
        response = _member_page(request, card, reveal_form=form, revealed_mobile=mobile)
    add_never_cache_headers(response)
    return response


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
