"""The store manager's pages: the store board, reassigning tasks and members, off-boarding a guide."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from campaigns.work import reassign_tasks
from scrm.audit import Actor

from . import selectors
from .forms import OffboardForm, ReassignForm
from .services import offboard_guide, reassign_members
from .views import _staff_context, store_staff_only

View = Callable[..., HttpResponse]


def manager_only(view: View) -> View:
    @wraps(view)
    @store_staff_only
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not selectors.is_store_manager(request.user):
            raise Http404  # a guide meets no trace of the manager's pages
        return view(request, *args, **kwargs)

    return wrapped


@require_GET
@manager_only
def store_board(request: HttpRequest) -> HttpResponse:
    board = selectors.store_board(request.user)
    return render(
        request, "guides/store_board.html", {**_staff_context(request), "board": board, "nav": "store"}
    )


def _selected_guide(request: HttpRequest, guides: list) -> Any:
    """``?guide=<id>`` among the store's staff, or None for the manager's queue of unassigned tasks."""
    wanted = request.GET.get("guide") or request.POST.get("from_guide") or ""
    return next((g for g in guides if str(g.pk) == wanted), None)


@require_http_methods(["GET", "POST"])
@manager_only
def reassign_tasks_view(request: HttpRequest) -> HttpResponse:
    guides = selectors.store_colleagues(request.user)
    source = _selected_guide(request, guides)
    tasks = selectors.open_tasks_of(request.user, source.pk if source else None)
    form = ReassignForm(
        request.POST if request.method == "POST" else None, guides=guides, ids=[t.pk for t in tasks]
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            chosen = [t for t in tasks if t.pk in set(form.cleaned_data["ids"])]
            try:
                moved = reassign_tasks(
                    chosen, form.cleaned_data["to_guide"], actor=Actor.from_request(request)
                )
            except ValidationError as error:
                form.add_error(None, error)
            else:
                messages.success(
                    request,
                    ngettext("%(count)d task reassigned.", "%(count)d tasks reassigned.", moved)
                    % {"count": moved},
                )
                return redirect("guides:store")
        status = 400
    context = {
        **_staff_context(request),
        "nav": "store",
        "guides": guides,
        "source": source,
        "tasks": tasks,
        "form": form,
    }
    return render(request, "guides/reassign_tasks.html", context, status=status)


@require_POST
@manager_only
def reassign_members_view(request: HttpRequest) -> HttpResponse:
    """From the member list: the checked members (and their open tasks) to one guide."""
    guides = selectors.store_colleagues(request.user)
    raw_ids = [value for value in request.POST.getlist("ids") if value.isdigit()][:500]
    members = list(selectors.visible_members(request.user).filter(pk__in=[int(v) for v in raw_ids]))
    form = ReassignForm(request.POST, guides=guides, ids=[m.pk for m in members])
    if form.is_valid():
        chosen = [m for m in members if m.pk in set(form.cleaned_data["ids"])]
        try:
            moved = reassign_members(chosen, form.cleaned_data["to_guide"], actor=Actor.from_request(request))
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(
                request,
                ngettext("%(count)d member reassigned.", "%(count)d members reassigned.", moved)
                % {"count": moved},
            )
    else:
        messages.error(request, _("Select at least one member and the guide to give them to."))
    return redirect(request.POST.get("next") if _safe_next(request) else "guides:members")


def _safe_next(request: HttpRequest) -> bool:
    target = request.POST.get("next", "")
    return target.startswith("/m/") and "//" not in target


@require_http_methods(["GET", "POST"])
@manager_only
def offboard(request: HttpRequest) -> HttpResponse:
    guides = selectors.store_colleagues(request.user)
    manager = request.user.staff_profile  # type: ignore[union-attr]
    form = OffboardForm(request.POST if request.method == "POST" else None, guides=guides, manager=manager)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                result = offboard_guide(
                    form.cleaned_data["guide"],
                    actor=Actor.from_request(request),
                    left_on=form.cleaned_data["left_on"],
                    to_guide=form.receiver_guide(),
                )
            except ValidationError as error:
                form.add_error(None, error)
            else:
                messages.success(
                    request,
                    _("%(guide)s has left: %(members)d members and %(tasks)d open tasks were handed over.")
                    % {"guide": result.guide.name, "members": result.members, "tasks": result.tasks},
                )
                return redirect("guides:store")
        status = 400
    board = selectors.store_board(request.user)
    context = {**_staff_context(request), "nav": "store", "form": form, "board": board}
    return render(request, "guides/offboard.html", context, status=status)
