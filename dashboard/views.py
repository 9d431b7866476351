"""The HQ dashboard (the admin's home page for HQ roles) and the campaign results pages. Thin: the
figures come from dashboard.selectors and dashboard.results."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from campaigns.models import Campaign, CampaignRun, Task
from members.kpis import Period
from scrm.audit import Actor
from scrm.roles import Role, is_hq, role_of
from scrm.scoping import scoped

from . import selectors, services
from .models import CampaignResult, ScopeKind
from .refresh import last_refreshed
from .results import results_for

REFRESHERS = frozenset({Role.HQ_ADMIN, Role.HQ_OPERATOR})


def hq_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Signed-in HQ staff only (the admin's own login for anyone else); store staff get a 403."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_hq(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return admin.site.admin_view(wrapper)


def _admin_context(request: HttpRequest, title: str) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, "subtitle": None}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _month(request: HttpRequest, choices: list[Period]) -> tuple[Period, str | None]:
    raw = request.GET.get("month")
    default = choices[1]
    if not raw:
        return default, None
    for period in choices:
        if period.start.strftime("%Y-%m") == raw:
            return period, None
    return default, _("There are no figures for the month “%(month)s”; showing %(default)s.") % {
        "month": raw[:20],
        "default": default.start.strftime("%Y-%m"),
    }


def _dashboard(request: HttpRequest) -> HttpResponse:
    today = timezone.localdate()
    choices = selectors.month_choices(today)
    period, error = _month(request, choices)
    if error:
        messages.error(request, error)
    params = {k: _int(request.GET.get(k)) for k in ("region", "store", "guide")}
    scope = selectors.resolve_scope(**params)
    if scope is None or any(request.GET.get(k) and params[k] is None for k in params):
        messages.error(request, _("That region, store or guide does not exist; showing the whole brand."))
        scope = selectors.resolve_scope(None, None, None)
    tiers = selectors.tier_distribution() if scope.kind == ScopeKind.BRAND else None
    context = {
        **_admin_context(request, _("HQ dashboard")),
        "app_list": admin.site.get_app_list(request),
        "period": period,
        "month_value": period.start.strftime("%Y-%m"),
        "period_last_day": period.end - datetime.timedelta(days=1),
        "previous_period": period.previous(),
        "last_year_period": period.same_period_last_year(),
        "months": [(p.start.strftime("%Y-%m"), p) for p in choices],
        "scope": scope,
        "scope_query": _scope_query(scope),
        "headline": selectors.headline(period, scope),
        "breakdown": selectors.breakdown(period, scope),
        "leaderboards": selectors.leaderboards(period, scope),
        "trend": selectors.weekly_trend(scope, today),
        "tiers": tiers,
        "tier_chart": [
            {
                "name": r["name"],
                "members": float(r["member_share"] or 0),
                "spend": float(r["spend_share"] or 0),
            }
            for r in (tiers or {}).get("rows", [])
        ],
        "chart_labels": {
            "sales": _("Sales"),
            "transactions": _("Transactions"),
            "share": _("Member share of sales"),
            "aov": _("Average order value"),
            "basket": _("Basket size"),
            "new": _("New members"),
            "members": _("Share of members"),
            "spend": _("Share of spend"),
        },
        "campaigns": _recent_campaigns(request),
        "refreshed_at": last_refreshed(),
        "can_refresh": role_of(request.user) in REFRESHERS,
    }
    return TemplateResponse(request, "dashboard/home.html", context)


def _scope_query(scope: selectors.ScopeChoice) -> str:
    return "" if scope.kind == ScopeKind.BRAND else f"&{scope.kind}={scope.id}"


def _recent_campaigns(request: HttpRequest, limit: int = 8) -> list[dict[str, Any]]:
    campaigns = list(
        scoped(Campaign.objects.all(), request.user)
        .filter(runs__isnull=False)
        .distinct()
        .order_by("-created_at")[:limit]
    )
    return [{"campaign": c, "results": s} for c, s in zip(campaigns, _summaries(campaigns), strict=True)]


def _summaries(campaigns: list[Campaign]) -> list[dict[str, Any] | None]:
    """The stored figures a campaign list shows (not the per-guide tables: they can be long)."""
    rows = CampaignResult.objects.filter(campaign_id__in=[c.pk for c in campaigns], run_id=None).values_list(
        "campaign_id", "data__tasks", "data__attributed", "data__uplift__conversion"
    )
    stored = {
        cid: {"tasks": tasks, "attributed": attributed, "uplift": {"conversion": conversion}}
        for cid, tasks, attributed, conversion in rows
    }
    return [stored.get(c.pk) for c in campaigns]


def home(request: HttpRequest) -> HttpResponse:
    """``/admin/``: the dashboard for HQ, with the admin's index (every model) below it."""

    def index(request: HttpRequest) -> HttpResponse:
        if not is_hq(request.user):
            return admin.site.index(request)
        return _dashboard(request)

    return admin.site.admin_view(index)(request)


@hq_only
def dashboard(request: HttpRequest) -> HttpResponse:
    return _dashboard(request)


@require_POST
@hq_only
def refresh(request: HttpRequest) -> HttpResponse:
    if role_of(request.user) not in REFRESHERS:
        raise PermissionDenied
    counts = services.refresh_now(actor=Actor.from_request(request))
    messages.success(
        request, _("The figures were recomputed (%(months)s months).") % {"months": counts["months"]}
    )
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        target = reverse("admin:index")  # never a redirect off the site
    return redirect(target)


@hq_only
def campaign_list(request: HttpRequest) -> HttpResponse:
    campaigns = list(scoped(Campaign.objects.all(), request.user).order_by("-created_at")[:200])
    context = {
        **_admin_context(request, _("Campaign results")),
        "rows": [
            {"campaign": c, "results": s} for c, s in zip(campaigns, _summaries(campaigns), strict=True)
        ],
    }
    return TemplateResponse(request, "dashboard/campaign_list.html", context)


def _campaign_and_run(
    request: HttpRequest, pk: int
) -> tuple[Campaign, CampaignRun | None, list[CampaignRun]]:
    campaign = get_object_or_404(scoped(Campaign.objects.all(), request.user), pk=pk)
    runs = list(campaign.runs.order_by("-started_at", "-pk"))
    run = None
    raw = request.GET.get("run")
    if raw:
        run_id = _int(raw)
        run = next((r for r in runs if r.pk == run_id), None)
        if run is None:
            messages.error(request, _("That run does not belong to this campaign; showing every run."))
    return campaign, run, runs


@hq_only
def campaign_results(request: HttpRequest, pk: int) -> HttpResponse:
    campaign, run, runs = _campaign_and_run(request, pk)
    data = results_for(campaign, run) if runs else None
    context = {
        **_admin_context(request, _("Results: %(campaign)s") % {"campaign": campaign.name}),
        "campaign": campaign,
        "run": run,
        "runs": runs,
        "results": services.presentable(data) if data else None,
        "outcome_labels": dict(Task.Outcome.choices),
        "reason_labels": dict(Task.CancelReason.choices),
    }
    return TemplateResponse(request, "dashboard/campaign_results.html", context)


@hq_only
def campaign_export(request: HttpRequest, pk: int) -> HttpResponse:
    campaign, run, runs = _campaign_and_run(request, pk)
    if not runs:
        messages.error(request, _("This campaign has not run yet: there are no results to export."))
        return redirect("dashboard:campaign", pk=campaign.pk)
    content = services.export_results(campaign, run, actor=Actor.from_request(request))
    name = f"campaign-{campaign.pk}" + (f"-run-{run.pk}" if run else "") + ".xlsx"
    response = HttpResponse(
        content, content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    response["Content-Disposition"] = content_disposition_header(True, name)
    return response
