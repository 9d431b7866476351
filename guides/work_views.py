"""The guide's day: Today, a task (member card, script, contact, outcome), my numbers, the app manifest.

Reads live in ``selectors``, writes in ``campaigns.work`` and ``guides.services``. Every form posts and
redirects (post/redirect/get), so a reload never sends an outcome twice, and works without JavaScript.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_cache_control
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit.decorators import ratelimit

from campaigns.models import Task
from campaigns.work import complete_task
from members import privacy
from scrm.audit import Actor

from . import selectors
from .forms import CompleteTaskForm, NoteForm, TagForm
from .views import REVEAL_RATE, RevealForm, _may_reveal, _reveal_rate_key, _staff_context, store_staff_only


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, int(request.GET.get("page", "1")))
    except ValueError:
        return 1


@require_GET
@store_staff_only
def today(request: HttpRequest) -> HttpResponse:
    page = selectors.today_page(request.user, page=_page_number(request))
    response = render(
        request, "guides/today.html", {**_staff_context(request), "today": page, "nav": "today"}
    )
    add_never_cache_headers(response)  # "refresh" must show what is open now, not a cached list
    return response


def _task_page(
    request: HttpRequest,
    card: selectors.TaskCard,
    *,
    form: CompleteTaskForm | None = None,
    error: str = "",
    reveal_form: RevealForm | None = None,
    revealed_mobile: str = "",
    refused: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        **_staff_context(request),
        "nav": "today",
        "tc": card,
        "task": card.task,
        "card": card.card,
        "member": card.task.member,
        "form": form or CompleteTaskForm(),
        "error": error,
        "can_reveal": _may_reveal(request.user) and card.contact_allowed,
        "reveal_form": reveal_form or RevealForm(),
        "revealed_mobile": revealed_mobile,
        "revealed_national": revealed_mobile.removeprefix("+86") if revealed_mobile else "",
        "reveal_refused": refused,
        "reveal_action": reverse("guides:task_reveal", args=[card.task.pk]),
        "notes": card.notes,
        "note_form": NoteForm(),
        "tag_form": TagForm(),
    }
    response = render(request, "guides/task.html", context, status=status)
    add_never_cache_headers(response)
    return response


@require_GET
@store_staff_only
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    card = selectors.task_card(request.user, pk)
    if card is None:
        raise Http404  # outside the scope looks exactly like "no such task"
    return _task_page(request, card)


@require_POST
@store_staff_only
def task_complete(request: HttpRequest, pk: int) -> HttpResponse:
    task = selectors.task_to_complete(request.user, pk)
    if task is None:
        raise Http404
    form = CompleteTaskForm(request.POST)
    if form.is_valid():
        try:
            result = complete_task(
                task,
                outcome=form.cleaned_data["outcome"],
                note=form.cleaned_data["note"],
                follow_up_on=form.cleaned_data["follow_up_on"],
                token=form.cleaned_data["token"],
                actor=Actor.from_request(request),
            )
        except ValidationError as error:
            card = selectors.task_card(request.user, pk)
            assert card is not None
            return _task_page(request, card, form=form, error=" ".join(error.messages), status=400)
        if result.recorded or result.repeated:
            label = Task.Outcome(result.task.outcome).label
            messages.success(
                request,
                _("Recorded: %(member)s — %(outcome)s.") % {"member": result.task.member, "outcome": label},
            )
            return redirect("guides:today")
        # Closed meanwhile (another tab, a colleague, consent withdrawn): show the task as it is now.
        messages.info(request, _("This task was already closed; nothing was changed."))
        return redirect("guides:task", pk=pk)
    card = selectors.task_card(request.user, pk)
    assert card is not None
    return _task_page(request, card, form=form, status=400)


@require_POST
@store_staff_only
@ratelimit(group="guides.reveal_mobile", key=_reveal_rate_key, rate=REVEAL_RATE, method="POST", block=False)
def task_reveal(request: HttpRequest, pk: int) -> HttpResponse:
    """The task page with the member's full number, to call them: same rules as on the member page."""
    if not request.user.has_perm(privacy.REVEAL_PERMISSION):
        raise PermissionDenied
    card = selectors.task_card(request.user, pk)
    if card is None:
        raise Http404
    if not card.contact_allowed or card.task.state != Task.State.OPEN:
        raise PermissionDenied
    form = RevealForm(request.POST)
    actor = Actor.from_request(request)
    member = card.task.member
    if getattr(request, "limited", False):
        privacy.record_reveal_refused(
            member,
            actor=actor,
            reason=str(request.POST.get("reason", ""))[:32],
            note=str(request.POST.get("note", "")),
        )
        refused = _("You have revealed too many numbers in the last hour. Try again later.")
        return _task_page(request, card, reveal_form=form, refused=refused, status=429)
    if not form.is_valid():
        return _task_page(request, card, reveal_form=form, status=400)
    mobile = privacy.reveal_mobile(
        member, actor=actor, reason=form.cleaned_data["reason"], note=form.cleaned_data["note"]
    )
    return _task_page(request, card, reveal_form=form, revealed_mobile=mobile)


@require_GET
@store_staff_only
def my_numbers(request: HttpRequest) -> HttpResponse:
    profile = request.user.staff_profile  # type: ignore[union-attr]
    ranking = selectors.store_guide_stats(profile.store_id)
    mine = next((s for s in ranking if s.guide.pk == profile.pk), None)
    start, _end = selectors.month_bounds()
    context = {
        **_staff_context(request),
        "nav": "numbers",
        "mine": mine,
        "ranking": ranking,
        "month_start": start,
        "staff_count": len(ranking),
    }
    return render(request, "guides/numbers.html", context)


@require_GET
def manifest(request: HttpRequest) -> JsonResponse:
    """The web app manifest: added to the home screen, the workbench opens on Today, full screen."""
    response = JsonResponse(
        {
            "name": _("SCRM guide workbench"),
            "short_name": _("Workbench"),
            "start_url": reverse("guides:today"),
            "scope": reverse("guides:members"),
            "display": "standalone",
            "background_color": "#f3f5f9",
            "theme_color": "#1d4ed8",
            "lang": request.LANGUAGE_CODE,
            "icons": [
                {"src": static("guides/icon-192.png"), "sizes": "192x192", "type": "image/png"},
                {"src": static("guides/icon-512.png"), "sizes": "512x512", "type": "image/png"},
                {"src": static("guides/icon.svg"), "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
            ],
        },
        content_type="application/manifest+json",
        json_dumps_params={"ensure_ascii": False},
    )
    patch_cache_control(response, max_age=3600)
    return response
