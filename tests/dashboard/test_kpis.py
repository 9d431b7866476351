"""The dashboard's figures are members.kpis' figures: the fact tables follow the same definitions."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from dashboard import selectors
from dashboard.models import KpiFact, ScopeKind, WeekFact
from dashboard.refresh import refresh_dashboard
from dashboard.templatetags.dashboard_format import figure
from members.kpis import Scope, kpi_report
from scrm.audit import Actor
from scrm.models import AuditEvent

from .world import build_world

pytestmark = pytest.mark.django_db

COMPARED = [
    "transactions",
    "sales",
    "member_transaction_share",
    "member_sales_share",
    "average_order_value",
    "basket_size",
    "members",
    "online_rate",
    "active_members",
    "active_rate",
    "repurchase_rate",
    "churn_rate",
    "new_members",
    "first_purchase_conversion",
]


@pytest.fixture
def world():
    w = build_world()
    refresh_dashboard(actor=Actor.system("tests"), full=True)
    return w


def _scopes(world):
    return [
        (Scope.brand(), ScopeKind.BRAND, 0),
        (Scope.region(world.region), ScopeKind.REGION, world.region.pk),
        (Scope.region(world.other_region), ScopeKind.REGION, world.other_region.pk),
        *[(Scope.store(s), ScopeKind.STORE, s.pk) for s in world.stores],
        *[(Scope.guide(g), ScopeKind.GUIDE, g.pk) for g in world.guides],
    ]


def test_every_scope_and_period_matches_members_kpis(world):
    periods = [world.period, world.period.previous(), world.period.same_period_last_year()]
    for period in periods:
        for scope, kind, scope_id in _scopes(world):
            expected = kpi_report(period, scope)
            got = selectors.kpis_of(selectors.fact(period, kind, scope_id))
            if not got:  # a scope with nothing at all in that period has no row
                assert expected.transactions == 0 and expected.members == 0, (period, scope)
                continue
            for name in COMPARED:
                assert got[name] == getattr(expected, name), (period, scope, name)


def test_the_fixture_exercises_the_definitions(world):
    brand = selectors.kpis_of(selectors.fact(world.period, ScopeKind.BRAND, 0))
    assert brand["transactions"] == 7  # refunded, cancelled and next-month orders left out
    assert brand["active_members"] == 3  # the merged member's order is not a member's activity
    assert brand["repurchase_rate"] is not None and brand["churn_rate"] is not None
    assert brand["new_members"] == 2
    assert brand["first_purchase_conversion"] == Decimal("0.5000")  # one of the two bought
    store = selectors.kpis_of(selectors.fact(world.period, ScopeKind.STORE, world.stores[2].pk))
    assert store["transactions"] == 3  # its own two plus the online order of its member


def test_the_page_shows_the_kpis_of_members_kpis(english, hq_operator, world):
    english.force_login(hq_operator)
    month = world.period.start.strftime("%Y-%m")
    for query, scope in [("", Scope.brand()), (f"&region={world.region.pk}", Scope.region(world.region))]:
        response = english.get(reverse("admin:index") + f"?month={month}{query}")
        assert response.status_code == 200
        html = response.content.decode()
        report = kpi_report(world.period, scope)
        for key, _label, kind in selectors.KPIS:
            if not hasattr(report, key):
                continue
            card = re.search(rf'data-kpi="{key}">.*?dash-card-value">(.*?)</div>', html, re.S)
            assert card, key
            assert card.group(1).strip() == figure(getattr(report, key), kind), key


def test_weekly_facts_add_up_for_the_brand_regions_and_stores(world):
    from django.db.models import Sum

    def total(**scope):
        return WeekFact.objects.filter(**scope).aggregate(n=Sum("transactions"), j=Sum("new_members"))

    brand = total(scope_kind=ScopeKind.BRAND, scope_id=0)
    regions = total(scope_kind=ScopeKind.REGION)
    stores = total(scope_kind=ScopeKind.STORE)
    assert brand["n"] == regions["n"] == stores["n"] == 11  # every counted order of the last 53 weeks
    assert brand["j"] == stores["j"] == 2
    one = total(scope_kind=ScopeKind.STORE, scope_id=world.stores[2].pk)
    assert one["n"] == 4  # two of its own, two online orders of its member


def test_refresh_is_audited_and_repeatable(world):
    before = KpiFact.objects.count()
    counts = refresh_dashboard(actor=Actor.system("tests"), full=True)
    assert KpiFact.objects.count() == before
    assert counts["months"] > 12
    assert AuditEvent.objects.filter(action="dashboard.refreshed").count() == 2


def test_the_recent_refresh_fills_months_never_computed():
    build_world()
    counts = refresh_dashboard(actor=Actor.system("tests"))
    assert counts["months"] > 12  # a fresh install: every month the pages show
    counts = refresh_dashboard(actor=Actor.system("tests"))
    assert counts["months"] == 1  # then only the current month
