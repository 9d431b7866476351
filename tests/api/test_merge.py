"""Merging members: orders, points, identities, tags and history move; the strictest consent wins;
a merge can be undone; every step audited."""

from decimal import Decimal
from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from api import services
from api.models import MergeProposal, WebhookDelivery, WebhookEndpoint
from members.models import ConsentRecord, ExternalIdentity, Member, MemberTag, Order, PointsEntry
from members.services import OrderInput, add_points, assign_guide, record_consent, record_orders
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import GuideFactory, MemberFactory, TagFactory

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


def consent(member, channel, action):
    record_consent(
        member, channel=channel, action=action, source="hq_admin", actor=ACTOR, policy_version="2026-01"
    )


@pytest.fixture
def pair(store, notice):
    survivor = MemberFactory(home_store=store)
    duplicate = MemberFactory(home_store=store)
    record_orders(
        [
            OrderInput(
                channel="tmall",
                external_no="T1",
                paid_at="2026-11-01T00:00Z",
                amount=Decimal("300"),
                member=duplicate,
            ),
            OrderInput(
                channel="store",
                external_no="S1",
                paid_at="2026-11-02T00:00Z",
                amount=Decimal("100"),
                member=survivor,
            ),
        ],
        actor=ACTOR,
    )
    add_points(duplicate, delta=120, kind="earn", actor=ACTOR)
    add_points(survivor, delta=30, kind="earn", actor=ACTOR)
    ExternalIdentity.objects.create(member=duplicate, platform="tmall_ouid", external_id="ou-7")
    shared, own = TagFactory(), TagFactory()
    MemberTag.objects.create(member=duplicate, tag=shared, source="import")
    MemberTag.objects.create(member=duplicate, tag=own, source="import")
    MemberTag.objects.create(member=survivor, tag=shared, source="import")
    # The survivor agreed to SMS and calls; the duplicate profile withdrew SMS and never answered on calls.
    consent(survivor, "sms", "grant")
    consent(survivor, "call", "grant")
    consent(duplicate, "sms", "grant")
    consent(duplicate, "sms", "withdraw")
    consent(duplicate, "wecom", "grant")
    proposal = MergeProposal.objects.create(survivor=survivor, duplicate=duplicate)
    return survivor, duplicate, proposal


def test_merge_moves_everything_and_keeps_the_strictest_consent(pair):
    survivor, duplicate, proposal = pair
    endpoint = WebhookEndpoint.objects.create(
        name="bi", url="http://127.0.0.1:9/", secret="x", events=["member.merged"]
    )
    kept, moved = survivor.points_balance, duplicate.points_balance  # earned by hand and by any order rules
    assert moved >= 120
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    with mock.patch("api.tasks.deliver_webhook_task.delay"):
        services.accept_merge_proposal(proposal, actor=ACTOR)
    survivor.refresh_from_db()
    duplicate.refresh_from_db()
    assert duplicate.status == "merged"
    assert set(Order.objects.filter(member=survivor).values_list("external_no", flat=True)) == {"T1", "S1"}
    assert (survivor.order_count, survivor.total_spend) == (2, Decimal("400.00"))
    assert (duplicate.order_count, duplicate.total_spend) == (0, Decimal("0.00"))
    assert (survivor.points_balance, duplicate.points_balance) == (kept + moved, 0)
    assert list(
        PointsEntry.objects.filter(ref=f"merge:{proposal.pk}")
        .values_list("member_id", "delta")
        .order_by("delta")
    ) == [
        (duplicate.pk, -moved),
        (survivor.pk, moved),
    ]
    assert ExternalIdentity.objects.get(external_id="ou-7").member == survivor
    assert MemberTag.objects.filter(member=survivor).count() == 2
    # strictest: the duplicate's SMS withdrawal reaches the survivor; its WeCom grant does not; calls stay.
    assert (survivor.consent_sms, survivor.consent_call, survivor.consent_wecom) == (False, True, False)
    withdrawal = ConsentRecord.objects.filter(member=survivor, channel="sms").order_by("-id").first()
    assert withdrawal.action == "withdraw" and withdrawal.evidence["merged_from"] == duplicate.pk
    assert WebhookDelivery.objects.get(endpoint=endpoint).payload == {
        "survivor_id": survivor.pk,
        "merged_id": duplicate.pk,
        "proposal_id": proposal.pk,
    }
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"member.merged", "member.merged_away", "merge.accepted"} <= actions
    # nothing the merge wrote bypassed the services' own audit events
    assert not AuditEvent.objects.filter(id__gt=before, action__startswith="db.").exists()


def test_undo_gives_everything_back_but_keeps_the_withdrawal(pair):
    survivor, duplicate, proposal = pair
    kept, moved = survivor.points_balance, duplicate.points_balance
    services.accept_merge_proposal(proposal, actor=ACTOR)
    services.undo_merge(proposal, actor=ACTOR)
    survivor.refresh_from_db()
    duplicate.refresh_from_db()
    proposal.refresh_from_db()
    assert (proposal.state, duplicate.status) == ("undone", "active")
    assert list(Order.objects.filter(member=duplicate).values_list("external_no", flat=True)) == ["T1"]
    assert (survivor.points_balance, duplicate.points_balance) == (kept, moved)
    assert (survivor.order_count, duplicate.order_count) == (1, 1)
    assert ExternalIdentity.objects.get(external_id="ou-7").member == duplicate
    assert MemberTag.objects.filter(member=duplicate).count() == 2
    assert survivor.consent_sms is False  # a person who said stop is not contacted again
    assert duplicate.consent_wecom is True
    assert AuditEvent.objects.filter(action__in=["member.unmerged", "merge.undone"]).count() == 2
    with pytest.raises(ValidationError):
        services.undo_merge(proposal, actor=ACTOR)


def test_undo_is_refused_when_the_points_were_spent(pair):
    survivor, _duplicate, proposal = pair
    services.accept_merge_proposal(proposal, actor=ACTOR)
    survivor.refresh_from_db()
    add_points(survivor, delta=-(survivor.points_balance - 10), kind="redeem", actor=ACTOR)
    with pytest.raises(ValidationError):
        services.undo_merge(proposal, actor=ACTOR)
    proposal.refresh_from_db()
    assert proposal.state == "merged"


def test_reject_changes_no_member_and_a_decided_proposal_cannot_be_decided_again(pair):
    _survivor, duplicate, proposal = pair
    services.reject_merge_proposal(proposal, actor=ACTOR)
    assert Member.objects.get(pk=duplicate.pk).status == "active"
    with pytest.raises(ValidationError):
        services.accept_merge_proposal(proposal, actor=ACTOR)
    assert AuditEvent.objects.filter(action="merge.rejected").count() == 1


def test_the_duplicates_guide_follows_when_the_survivor_has_none(store, notice):
    guide = GuideFactory(store=store)
    survivor, duplicate = MemberFactory(home_store=store), MemberFactory(home_store=store)
    assign_guide(duplicate, guide, actor=ACTOR, reason="hq")
    proposal = MergeProposal.objects.create(survivor=survivor, duplicate=duplicate)
    services.accept_merge_proposal(proposal, actor=ACTOR)
    assert Member.objects.get(pk=survivor.pk).guide == guide
    assert Member.objects.get(pk=duplicate.pk).guide is None
    services.undo_merge(proposal, actor=ACTOR)
    assert Member.objects.get(pk=duplicate.pk).guide == guide


def test_the_merged_away_members_open_tasks_are_cancelled_and_done_ones_stay(pair):
    from campaigns.models import Task
    from tests.campaigns.factories import TaskFactory

    survivor, duplicate, proposal = pair
    open_task = TaskFactory(member=duplicate, store=duplicate.home_store)
    done_task = TaskFactory(
        member=duplicate,
        store=duplicate.home_store,
        state=Task.State.DONE,
        outcome=Task.Outcome.REACHED,
        completed_at="2026-11-03T00:00Z",
    )
    survivors_task = TaskFactory(member=survivor, store=survivor.home_store)

    with mock.patch("api.tasks.deliver_webhook_task.delay"):
        services.accept_merge_proposal(proposal, actor=ACTOR)

    states = {t.pk: (t.state, t.cancel_reason) for t in Task.objects.all()}
    assert states[open_task.pk] == ("cancelled", "member")
    assert states[done_task.pk] == ("done", "")
    assert states[survivors_task.pk] == ("open", "")
