"""Campaign results: task counts, attribution to this campaign's tasks, uplift over the holdout, export."""

import datetime
import io
from decimal import Decimal

import openpyxl
import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, RunMember, Task
from dashboard.models import CampaignResult
from dashboard.refresh import refresh_dashboard
from dashboard.results import compute_results
from members.models import Channel
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.campaigns.factories import CampaignFactory, CampaignRunFactory, TaskFactory
from tests.factories import GuideFactory, MemberFactory, OrderFactory, StoreFactory

pytestmark = pytest.mark.django_db


def _days(n: float) -> datetime.timedelta:
    return datetime.timedelta(days=n)


@pytest.fixture
def campaign_world():
    t0 = timezone.now() - _days(30)
    s1, s2 = StoreFactory(code="RS1", name="甲店"), StoreFactory(code="RS2", name="乙店")
    g1, g2, g3 = (
        GuideFactory(store=s1, name="王一"),
        GuideFactory(store=s1, name="王二"),
        GuideFactory(store=s2, name="李三"),
    )
    campaign = CampaignFactory(name="=SUM(1,2)", attribution_days=7, holdout_percent=Decimal("25"))
    run = CampaignRunFactory(
        campaign=campaign,
        snapshot={"opens_at": t0.isoformat(), "due_at": (t0 + _days(3)).isoformat(), "due_days": 3},
    )
    members = [
        MemberFactory(home_store=s1 if i < 3 or i >= 6 else s2, guide=g1 if i < 2 else None) for i in range(8)
    ]
    for i, m in enumerate(members):
        RunMember.objects.create(run=run, member=m, store=m.home_store, holdout=i >= 6)

    def task(member, store, guide, state, outcome="", completed=None, reason=""):
        return TaskFactory(
            run=run,
            member=member,
            store=store,
            guide=guide,
            state=state,
            outcome=outcome,
            completed_at=completed,
            cancel_reason=reason,
            opens_at=t0,
            due_at=t0 + _days(3),
        )

    task(members[0], s1, g1, Task.State.DONE, Task.Outcome.REACHED, t0 + _days(1))
    task(members[1], s1, g1, Task.State.DONE, Task.Outcome.VISIT_BOOKED, t0 + _days(4))  # late
    task(members[2], s1, g2, Task.State.DONE, Task.Outcome.NO_ANSWER, t0 + _days(1))
    task(members[3], s2, g3, Task.State.EXPIRED)
    task(members[4], s2, g3, Task.State.CANCELLED, reason=Task.CancelReason.CONSENT)
    task(members[5], s2, None, Task.State.CANCELLED, reason=Task.CancelReason.GUIDE_LEFT)
    # Another campaign reaches member 0 again later: the order after that goes to the other campaign.
    other = CampaignRunFactory(campaign=CampaignFactory(attribution_days=7))
    TaskFactory(
        run=other,
        member=members[0],
        store=s1,
        guide=g2,
        state=Task.State.DONE,
        outcome=Task.Outcome.REACHED,
        completed_at=t0 + _days(4),
    )

    def order(member, when, amount, store=s1, guide=None, channel=Channel.STORE):
        return OrderFactory(
            member=member, store=store, guide=guide, channel=channel, paid_at=when, amount=Decimal(amount)
        )

    order(members[0], t0 + _days(2), "100.00")  # ours (g1)
    order(members[0], t0 + _days(5), "60.00")  # the other campaign's
    order(members[0], t0 + _days(20), "50.00")  # after every window
    order(members[1], t0 + _days(7), "200.00")  # ours (g1), three days after the late task
    order(members[2], t0 + _days(2), "30.00")  # not reached: no credit, but a treated buyer
    order(members[6], t0 + _days(2), "80.00")  # holdout buyer
    return campaign, run, {"stores": (s1, s2), "guides": (g1, g2, g3), "members": members}


def test_task_counts_outcomes_and_cancel_reasons(campaign_world):
    campaign, run, _w = campaign_world
    data = compute_results(campaign, [run])
    assert data["tasks"] == {
        "created": 6,
        "done": 3,
        "on_time": 2,
        "expired": 1,
        "cancelled": 2,
        "open": 0,
        "reached": 2,
    }
    assert data["outcomes"] == {"reached": 1, "visit_booked": 1, "no_answer": 1}
    assert data["cancel_reasons"] == {"consent": 1, "guide_left": 1}


def test_attribution_per_store_and_guide(campaign_world):
    campaign, run, w = campaign_world
    s1, s2 = w["stores"]
    g1, g2, _g3 = w["guides"]
    data = compute_results(campaign, [run])
    assert data["attributed"] == {"orders": 2, "members": 2, "sales": "300.00"}
    stores = {r["store_id"]: r for r in data["stores"]}
    assert stores[s1.pk]["created"] == 3 and stores[s1.pk]["sales"] == "300.00"
    assert stores[s2.pk]["created"] == 3 and "sales" not in stores[s2.pk]
    guides = {r["guide_id"]: r for r in data["guides"]}
    assert guides[g1.pk]["orders"] == 2 and guides[g1.pk]["reached"] == 2
    assert guides[g2.pk]["done"] == 1 and "orders" not in guides[g2.pk]
    assert guides[None]["cancelled"] == 1  # the manager's queue


def test_uplift_compares_every_treated_member_with_the_holdout(campaign_world):
    campaign, run, _w = campaign_world
    uplift = compute_results(campaign, [run])["uplift"]
    assert uplift["treated"]["members"] == 6 and uplift["treated"]["buyers"] == 3
    assert uplift["treated"]["sales"] == "390.00"
    assert uplift["holdout"] == {"members": 2, "buyers": 1, "sales": "80.00", "sales_squares": "6400.0000"}
    assert uplift["conversion"]["difference"] == pytest.approx(3 / 6 - 1 / 2)
    assert not uplift["conversion"]["significant"]


def test_results_page_says_plainly_when_not_significant(english, hq_operator, campaign_world):
    campaign, _run, _w = campaign_world
    english.force_login(hq_operator)
    response = english.get(reverse("dashboard:campaign", args=[campaign.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "is not statistically significant" in html
    assert "¥300.00" in html


def test_results_are_stored_by_the_refresh_and_read_back(english, hq_operator, campaign_world):
    campaign, run, _w = campaign_world
    refresh_dashboard(actor=Actor.system("tests"))
    stored = CampaignResult.objects.get(campaign_id=campaign.pk, run_id=None)
    assert stored.data["tasks"]["created"] == 6
    english.force_login(hq_operator)
    assert (
        english.get(reverse("dashboard:campaign", args=[campaign.pk]) + f"?run={run.pk}").status_code == 200
    )
    listing = english.get(reverse("dashboard:campaigns")).content.decode()
    assert reverse("dashboard:campaign", args=[campaign.pk]) in listing


def test_an_unknown_run_is_refused_with_a_message(english, hq_operator, campaign_world):
    campaign, _run, _w = campaign_world
    english.force_login(hq_operator)
    response = english.get(reverse("dashboard:campaign", args=[campaign.pk]) + "?run=999999", follow=True)
    assert "does not belong to this campaign" in response.content.decode()


def test_export_to_xlsx_is_audited_and_neutralises_formulas(english, hq_operator, campaign_world):
    campaign, _run, _w = campaign_world
    english.force_login(hq_operator)
    response = english.get(reverse("dashboard:campaign_export", args=[campaign.pk]))
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    summary = book.worksheets[0]
    assert summary["B1"].value == "=SUM(1,2)" and summary["B1"].data_type == "s"
    assert summary["B4"].value == 6  # tasks created
    assert [ws.title for ws in book.worksheets] == ["Summary", "Uplift", "Stores", "Guides"]
    assert book["Stores"].max_row == 3
    assert AuditEvent.objects.filter(action="campaign_results.exported", target_id=str(campaign.pk)).exists()


def test_a_campaign_that_never_ran(english, hq_operator):
    campaign = CampaignFactory(status=Campaign.Status.DRAFT)
    english.force_login(hq_operator)
    page = english.get(reverse("dashboard:campaign", args=[campaign.pk]))
    export = english.get(reverse("dashboard:campaign_export", args=[campaign.pk]), follow=True)
    assert "has not run yet" in page.content.decode()
    assert "no results to export" in export.content.decode()
    assert not CampaignRun.objects.filter(campaign=campaign).exists()
