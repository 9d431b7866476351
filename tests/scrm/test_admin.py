"""The admin foundations: estimated counts, the audit trail's admin, and every registered page."""

import datetime

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import pgettext

from api.models import MergeProposal, WebhookDelivery, WebhookEndpoint
from api.services import create_api_client
from campaigns.models import ContactPolicy, Festival, Journey
from members.metrics import refresh_member_metrics
from members.models import ConsentRecord, LifecycleSettings, Member, OrderLine, RfmSettings
from members.privacy import open_data_request
from members.services import add_points, assign_guide, create_member, record_consent, tag_member
from scrm.admin_base import EstimatedCountPaginator
from scrm.audit import Actor, record
from scrm.models import AuditEvent
from scrm.roles import sync_role_groups
from tests.campaigns.factories import TaskFactory
from tests.factories import GuideFactory, OrderLineFactory, StoreFactory, TagFactory, TierFactory
from tests.loyalty.world import make_loyalty_rows


@pytest.fixture(scope="session", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """Give the role groups every app's permissions (the post-migrate sync runs before some exist)."""
    with django_db_blocker.unblock():
        sync_role_groups()


def count_queries(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


# --------------------------------------------------------------------------------------------------
# EstimatedCountPaginator


@pytest.fixture
def analysed_members(db, settings):
    """300 analysed members, then 40 more the statistics do not know about yet."""
    settings.SCRM_EXACT_COUNT_LIMIT = 100
    store = StoreFactory()
    small_tier = TierFactory(code="small")
    now = timezone.now()
    with connection.cursor() as cursor:
        # Held until the test's transaction ends: autovacuum cannot re-analyse the table meanwhile.
        cursor.execute("LOCK TABLE members_member IN SHARE UPDATE EXCLUSIVE MODE")
    Member.objects.bulk_create(
        Member(
            mobile=f"+86137{i:08d}",
            name=f"会员{i}",
            home_store=store,
            joined_at=now,
            tier=small_tier if i < 5 else None,
        )
        for i in range(300)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE members_member")
    Member.objects.bulk_create(
        Member(mobile=f"+86136{i:08d}", home_store=store, joined_at=now) for i in range(40)
    )
    return small_tier


def test_unfiltered_count_on_a_big_analysed_table_is_the_table_estimate(analysed_members):
    paginator = EstimatedCountPaginator(Member.objects.all(), 50)

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count

    assert count == 300  # what ANALYZE saw, not the 340 rows there are now
    assert paginator.count_is_estimated is True
    assert count_queries(queries) == []


def test_broad_filter_on_a_big_table_uses_the_planner_estimate(analysed_members):
    paginator = EstimatedCountPaginator(Member.objects.filter(status=Member.Status.ACTIVE), 50)

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count

    assert count > 100
    assert paginator.count_is_estimated is True
    assert count_queries(queries) == []
    assert any(q["sql"].startswith("EXPLAIN (FORMAT JSON)") for q in queries.captured_queries)


def test_narrow_filter_on_a_big_table_is_counted_exactly(analysed_members):
    paginator = EstimatedCountPaginator(Member.objects.filter(tier=analysed_members), 50)

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count

    assert count == 5
    assert paginator.count_is_estimated is False
    assert len(count_queries(queries)) == 1


def test_an_empty_queryset_counts_as_zero_without_a_query(db):
    paginator = EstimatedCountPaginator(Member.objects.none(), 50)

    with CaptureQueriesContext(connection) as queries:
        assert paginator.count == 0

    assert queries.captured_queries == []


def test_search_no_index_can_answer_shows_an_empty_list(client, hq_admin):
    client.force_login(hq_admin)

    # Points entries are searched by a member's mobile only: other text matches nothing.
    response = client.get(reverse("admin:members_pointsentry_changelist"), {"q": "not a mobile"})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


def test_small_table_is_counted_exactly(db):
    StoreFactory.create_batch(3)
    paginator = EstimatedCountPaginator(Member.objects.all(), 50)

    assert paginator.count == 0
    assert paginator.count_is_estimated is False


def test_changelist_says_about_when_the_count_is_estimated(client, hq_admin, analysed_members):
    client.force_login(hq_admin)

    response = client.get(reverse("admin:members_member_changelist"))

    assert response.context["cl"].result_count == 300
    assert response.context["cl"].paginator.count_is_estimated is True
    assert f"{pgettext('approximate count', 'about')} 300" in response.content.decode()


# --------------------------------------------------------------------------------------------------
# The audit trail's admin


@pytest.fixture
def events(db):
    store = StoreFactory()
    first = record(Actor.system("tests"), "store.updated", target=store, changes={"name": ["a", "b"]})
    pos = Actor(kind=AuditEvent.ActorKind.API, label="pos")
    second = record(pos, "member.exported", target_type="members.member", target_id="", changes={"rows": 3})
    return first, second


def test_audit_events_can_be_searched_by_target_id_and_request_id(client, auditor, events):
    first, second = events
    client.force_login(auditor)
    url = reverse("admin:scrm_auditevent_changelist")

    by_id = client.get(url, {"q": first.target_id}).context["cl"].result_list
    by_type_and_id = client.get(url, {"q": f"stores.store#{first.target_id}"}).context["cl"].result_list
    by_request = client.get(url, {"q": second.request_id}).context["cl"].result_list

    # The store's creation is on the trail too (db.insert), with the same target.
    assert first.pk in {e.pk for e in by_id}
    assert {e.target_id for e in by_id} == {first.target_id}  # any kind of record with that id
    assert first.pk in {e.pk for e in by_type_and_id}
    assert {(e.target_type, e.target_id) for e in by_type_and_id} == {("stores.store", first.target_id)}
    assert [e.pk for e in by_request] == [second.pk]


def test_audit_events_filter_by_action_prefix_and_actor_kind(client, auditor, events):
    first, second = events
    client.force_login(auditor)
    url = reverse("admin:scrm_auditevent_changelist")

    by_action = client.get(url, {"action": "store."}).context["cl"].result_list
    by_kind = client.get(url, {"actor_kind__exact": "api"}).context["cl"].result_list

    assert [e.pk for e in by_action] == [first.pk]
    assert [e.pk for e in by_kind] == [second.pk]


def test_audit_events_are_read_only_for_everyone(client, hq_admin, events):
    first, _second = events
    client.force_login(hq_admin)
    change_url = reverse("admin:scrm_auditevent_change", args=[first.pk])

    assert client.get(change_url).status_code == 200
    assert client.post(change_url, {"action": "forged"}).status_code == 403
    assert client.get(reverse("admin:scrm_auditevent_add")).status_code == 403
    assert client.post(reverse("admin:scrm_auditevent_delete", args=[first.pk])).status_code == 403
    first.refresh_from_db()
    assert first.action == "store.updated"


# --------------------------------------------------------------------------------------------------
# Every registered admin page opens


@pytest.fixture
def one_of_everything(db, hq_admin):
    actor = Actor.for_user(hq_admin)
    store = StoreFactory()
    guide = GuideFactory(store=store)
    member = create_member(
        mobile="13812345678", home_store=store, name="王小明", tier=TierFactory(), actor=actor
    )
    assign_guide(member, guide, actor=actor, reason="hq")
    tag_member(member, TagFactory(), source="hq", actor=actor)
    add_points(member, delta=100, kind="earn", actor=actor)
    record_consent(
        member,
        channel="sms",
        action=ConsentRecord.Action.GRANT,
        source=ConsentRecord.Source.HQ_ADMIN,
        actor=actor,
        policy_version="2024-01",
    )
    OrderLineFactory(order__member=member)
    member.identities.create(platform="wechat_unionid", external_id="u-1")
    open_data_request(member, kind="access", channel="hq_admin", details="", actor=actor)
    LifecycleSettings.objects.create()
    RfmSettings.objects.create()
    refresh_member_metrics(None)  # the order: a lifecycle transition and the RFM edges
    # campaigns: a task brings its run, campaign, segment and script
    task = TaskFactory(store=store, member=member, guide=guide)
    ContactPolicy.objects.create()
    Festival.objects.create(name="双11", date=datetime.date(2026, 11, 11))
    journey = Journey.objects.create(name="新会员旅程")
    journey.steps.create(
        name="入会3天", event="joined", offset_days=3, channel="wecom", script=task.run.campaign.script
    )
    # api: a client, a merge proposal, a webhook and one delivery
    create_api_client(name="POS", scopes=["read"], actor=actor)
    duplicate = create_member(mobile="13912345678", home_store=store, actor=actor)
    MergeProposal.objects.create(survivor=member, duplicate=duplicate)
    endpoint = WebhookEndpoint.objects.create(name="bi", url="http://127.0.0.1:9/", secret="x", events=[])
    WebhookDelivery.objects.create(endpoint=endpoint, event="member.merged", payload={})
    make_loyalty_rows(member, actor)
    assert OrderLine.objects.exists()


def _registered() -> list:
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.mark.parametrize("model_admin", [m for _model, m in _registered()], ids=lambda m: m.opts.label)
def test_every_admin_page_opens_for_hq_admin(client, hq_admin, one_of_everything, model_admin):
    opts = model_admin.opts
    obj = model_admin.model._default_manager.order_by("pk").first()
    assert obj is not None, f"no {opts.label} to open"
    client.force_login(hq_admin)

    changelist = client.get(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"), follow=True
    )  # a settings row redirects to itself
    change = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
    add = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))

    assert changelist.status_code == 200
    assert change.status_code == 200
    request = change.wsgi_request
    assert add.status_code == (200 if model_admin.has_add_permission(request) else 403)


def test_admin_index_opens_for_hq_admin(client, hq_admin):
    client.force_login(hq_admin)

    assert client.get(reverse("admin:index")).status_code == 200
