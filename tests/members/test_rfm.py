"""RFM cells: quantile bins cut nightly per population, stored, and used by incremental refreshes."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from members.metrics import refresh_member_metrics
from members.models import Member, RfmBinEdges, RfmSettings
from members.rfm import bin_fractions, rebin_rfm
from tests.factories import MemberFactory, OrderFactory, StoreFactory

pytestmark = pytest.mark.django_db

NOW = timezone.make_aware(datetime.datetime(2026, 6, 1, 12, 0))


def days_ago(n: float) -> datetime.datetime:
    return NOW - datetime.timedelta(days=n)


def cell(member: Member) -> str:
    member.refresh_from_db(fields=["rfm_cell"])
    return member.rfm_cell


def buyer(*, orders: int, last_days_ago: float, amount: str = "100", store=None) -> Member:
    member = MemberFactory(**({"home_store": store} if store else {}))
    for i in range(orders):
        OrderFactory(member=member, paid_at=days_ago(last_days_ago + 10 * i), amount=Decimal(amount))
    return member


def test_quintiles_by_default():
    # Buyer i (1–10): i orders of 100 in 12 months, last purchase 11 - i days ago (10 is the most recent).
    members = [buyer(orders=i, last_days_ago=11 - i) for i in range(1, 11)]
    never = MemberFactory()
    refresh_member_metrics(None, now=NOW)
    # Edges over 1…10 at 20/40/60/80%: 2.8, 4.6, 6.4, 8.2 → 1–2 score 1, 3–4 2, 5–6 3, 7–8 4, 9–10 5.
    assert [cell(m) for m in members] == [
        "111",
        "111",
        "222",
        "222",
        "333",
        "333",
        "444",
        "444",
        "555",
        "555",
    ]
    assert cell(never) == ""
    edges = RfmBinEdges.objects.get(scope="brand", scope_id=0)
    assert edges.frequency == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert edges.monetary == pytest.approx([280, 460, 640, 820])
    assert edges.buyers == 10


def test_a_crowd_on_an_edge_stays_in_the_lower_bin():
    ones = [buyer(orders=1, last_days_ago=5) for _ in range(7)]
    top = buyer(orders=4, last_days_ago=5)
    refresh_member_metrics(None, now=NOW)
    assert {cell(m)[1] for m in ones} == {"1"}  # frequency: seven single-order buyers all score 1
    assert cell(top)[1] == "5"


def test_hq_sets_the_number_of_bins():
    RfmSettings.objects.create(bins=3)
    assert bin_fractions(3) == pytest.approx([1 / 3, 2 / 3])
    members = [buyer(orders=i, last_days_ago=11 - i) for i in range(1, 7)]
    refresh_member_metrics(None, now=NOW)
    # 1…6 at a third and two thirds: 2.67 and 4.33.
    assert [cell(m) for m in members] == ["111", "111", "222", "222", "333", "333"]


def test_bins_per_store_rank_members_among_their_store_and_new_stores_use_the_brands_edges():
    RfmSettings.objects.create(bins=2, partition=RfmSettings.Partition.STORE)
    small_store, big_store = StoreFactory(), StoreFactory()
    small = [buyer(orders=1, last_days_ago=5, amount=a, store=small_store) for a in ("100", "200", "300")]
    big = [buyer(orders=1, last_days_ago=5, amount=a, store=big_store) for a in ("1000", "2000", "3000")]
    refresh_member_metrics(None, now=NOW)
    # Medians 200 and 2000: 300 is a top spender in its store, 1000 a low one in its own.
    assert [cell(m)[2] for m in small] == ["1", "1", "2"]
    assert [cell(m)[2] for m in big] == ["1", "1", "2"]
    assert RfmBinEdges.objects.filter(scope="store").count() == 2
    assert RfmBinEdges.objects.filter(scope="brand").count() == 1  # the fallback

    newcomer = buyer(orders=1, last_days_ago=1, amount="2500", store=StoreFactory())
    refresh_member_metrics([newcomer.pk], now=NOW)  # no edges for its store yet: the brand's (650)
    assert cell(newcomer)[2] == "2"


def test_incremental_refreshes_score_against_the_stored_edges_and_time_alone_changes_nothing():
    members = [buyer(orders=i, last_days_ago=11 - i) for i in range(1, 11)]
    refresh_member_metrics(None, now=NOW)
    newcomer = buyer(orders=10, last_days_ago=0.5, amount="100")
    assert refresh_member_metrics([newcomer.pk], now=NOW) == 1
    assert cell(newcomer) == "555"  # scored at once, no need to wait for the night
    # A day later, before the nightly run: recency edges are timestamps, so no cell moves.
    later = NOW + datetime.timedelta(days=1)
    assert refresh_member_metrics([m.pk for m in [*members, newcomer]], now=later) == 0


def test_rebinning_is_set_based_and_idempotent(django_assert_max_num_queries):
    for i in range(1, 11):
        buyer(orders=i, last_days_ago=11 - i)
    refresh_member_metrics(None, now=NOW)
    # Savepoint, settings, delete, one insert per population, one update, release: no row loop.
    with django_assert_max_num_queries(6):
        again = rebin_rfm(now=NOW)
    assert (again.populations, again.cells_changed) == (1, 0)


def test_rfm_settings_are_validated():
    with pytest.raises(ValidationError) as error:
        RfmSettings(bins=10).full_clean()
    assert "bins" in error.value.message_dict
