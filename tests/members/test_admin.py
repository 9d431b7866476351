"""The member admin: fast changelist, indexed search, audited writes through services, masked export."""

import csv
import datetime
import io

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.models import ConsentRecord, GuideAssignment, Member, MemberTag, PointsEntry
from members.resources import MemberResource
from members.services import add_points, assign_guide, create_member
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import Role, sync_role_groups
from stores.models import Store
from tests.factories import (
    GuideFactory,
    MemberFactory,
    OrderFactory,
    StoreFactory,
    TagFactory,
    TierFactory,
    UserFactory,
)

CHANGELIST = reverse("admin:members_member_changelist")
EXPORT = reverse("admin:members_member_export")


@pytest.fixture(scope="session", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """Give the role groups every app's permissions.

    The post-migrate hook syncs the groups when the ``scrm`` app has migrated, before the permissions
    of ``stores`` and ``members`` exist; syncing again once everything has migrated completes them.
    """
    with django_db_blocker.unblock():
        sync_role_groups()


def member_change_url(member: Member) -> str:
    return reverse("admin:members_member_change", args=[member.pk])


def bulk_members(count: int, *, stores, guides, tiers) -> None:
    now = timezone.now()
    Member.objects.bulk_create(
        [
            Member(
                mobile=f"+86139{i:08d}",
                name=f"会员{i}",
                home_store=stores[i % len(stores)],
                guide=guides[i % len(guides)],
                tier=tiers[i % len(tiers)],
                joined_at=now - datetime.timedelta(minutes=i),
            )
            for i in range(count)
        ],
        batch_size=1000,
    )


def without_full_mobile(role: str) -> None:
    """The role's group loses ``members.view_full_mobile`` (rolled back with the test)."""
    permission = Permission.objects.get(content_type__app_label="members", codename="view_full_mobile")
    Group.objects.get(name=role).permissions.remove(permission)


def changeform_data(response, **overrides) -> dict:
    """The POST a browser would send back from an admin change page, with ``overrides`` applied."""
    data = {}
    form = response.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        data[name] = "" if value is None else value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name in formset.management_form.fields:
            data[formset.management_form.add_prefix(name)] = formset.management_form[name].value()
        for inline_form in formset.initial_forms:
            for name in inline_form.fields:
                value = inline_form[name].value()
                data[inline_form.add_prefix(name)] = "" if value is None else value
    data.update(overrides)
    return data


def result_ids(response) -> set[int]:
    return {member.pk for member in response.context["cl"].result_list}


# --------------------------------------------------------------------------------------------------
# Changelist


# Session, user, the user's groups (its role), the user's and the groups' permissions, the tier and
# region filter lists, the table's row estimate, the exact count (the table is small) and the page.
CHANGELIST_QUERIES = 10


def analyze(table: str) -> None:
    """Give the planner statistics, as autovacuum does for every production table."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")


@pytest.mark.parametrize("n_members", [20, 2000])
def test_member_changelist_query_count_does_not_grow_with_members(
    client, hq_admin, n_members, django_assert_num_queries
):
    stores = StoreFactory.create_batch(3)
    guides = [GuideFactory(store=store) for store in stores]
    tiers = [TierFactory(code="silver"), TierFactory(code="gold")]
    bulk_members(n_members, stores=stores, guides=guides, tiers=tiers)
    analyze("members_member")
    client.force_login(hq_admin)

    with django_assert_num_queries(CHANGELIST_QUERIES):
        response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == min(n_members, 50)
    assert response.context["cl"].result_count == n_members


@pytest.mark.parametrize("role_user", ["hq_admin", "hq_operator", "auditor"])
def test_member_changelist_renders_for_every_hq_role(client, db, request, role_user):
    MemberFactory.create_batch(3)
    client.force_login(request.getfixturevalue(role_user))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert response.context["cl"].result_count == 3


@pytest.mark.parametrize("staff", ["guide", "manager"])
def test_store_staff_are_sent_away_from_the_admin(client, request, staff):
    client.force_login(request.getfixturevalue(staff).user)

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response.url == reverse("home")


def test_changelist_shows_masked_mobiles_without_the_permission(client, hq_operator):
    MemberFactory(mobile="+8613812345678")
    without_full_mobile(Role.HQ_OPERATOR)
    client.force_login(hq_operator)

    content = client.get(CHANGELIST).content.decode()

    assert "138****5678" in content
    assert "13812345678" not in content


def test_changelist_shows_full_mobiles_with_the_permission(client, hq_operator):
    MemberFactory(mobile="+8613812345678")
    client.force_login(hq_operator)

    content = client.get(CHANGELIST).content.decode()

    assert "+8613812345678" in content


def test_store_filter_is_a_text_box_by_store_code(client, hq_admin):
    ours, other = StoreFactory(code="SH001"), StoreFactory(code="BJ001")
    mine = MemberFactory(home_store=ours)
    MemberFactory(home_store=other)
    client.force_login(hq_admin)

    response = client.get(CHANGELIST, {"store": "sh001"})

    assert result_ids(response) == {mine.pk}
    assert 'name="store" value="sh001"' in response.content.decode()


# --------------------------------------------------------------------------------------------------
# Search


@pytest.fixture
def search_members(db):
    east, west = StoreFactory(code="EAST01"), StoreFactory(code="WEST01")
    guide = GuideFactory(store=west, employee_no="E777")
    return {
        "wang": MemberFactory(mobile="+8613812345678", name="王小明", home_store=east),
        "xiaowang": MemberFactory(mobile="+8613912345678", name="小王", home_store=west),
        "wangfang": MemberFactory(mobile="+8615012345678", name="王芳", home_store=west, guide=guide),
    }


@pytest.mark.parametrize(
    "term",
    [
        "13812345678",
        "138 1234 5678",
        "+86 138-1234-5678",
        "8613812345678",
        "0086 13812345678",
        "１３８１２３４５６７８",
    ],
)
def test_search_by_mobile_in_any_format(client, hq_admin, search_members, term):
    client.force_login(hq_admin)

    response = client.get(CHANGELIST, {"q": term})

    assert result_ids(response) == {search_members["wang"].pk}


def test_search_by_name_prefix_uses_like_not_upper(client, hq_admin, search_members):
    client.force_login(hq_admin)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, {"q": "王"})

    assert result_ids(response) == {search_members["wang"].pk, search_members["wangfang"].pk}
    member_sql = [q["sql"] for q in queries.captured_queries if "members_member" in q["sql"]]
    assert any("LIKE '王%'" in sql for sql in member_sql)
    assert not any("UPPER(" in sql for sql in member_sql)


def test_search_by_store_code_ignores_case(client, hq_admin, search_members):
    client.force_login(hq_admin)

    response = client.get(CHANGELIST, {"q": "west01"})

    assert result_ids(response) == {search_members["xiaowang"].pk, search_members["wangfang"].pk}


def test_search_by_guide_employee_number(client, hq_admin, search_members):
    client.force_login(hq_admin)

    response = client.get(CHANGELIST, {"q": "E777"})

    assert result_ids(response) == {search_members["wangfang"].pk}


def test_search_with_no_match_returns_nothing(client, hq_admin, search_members):
    client.force_login(hq_admin)

    response = client.get(CHANGELIST, {"q": "李"})

    assert result_ids(response) == set()


# --------------------------------------------------------------------------------------------------
# Writes go through the services and are audited


def test_member_change_through_admin_is_audited_with_old_and_new_values(
    client, hq_admin, store, system_actor
):
    member = create_member(mobile="13812345678", home_store=store, name="王小明", actor=system_actor)
    client.force_login(hq_admin)
    page = client.get(member_change_url(member))

    response = client.post(member_change_url(member), changeform_data(page, name="王晓明"))

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.name == "王晓明"
    event = AuditEvent.objects.get(action="member.updated", target_id=str(member.pk))
    assert event.changes == {"name": ["王小明", "王晓明"]}
    assert event.actor == hq_admin
    assert event.request_id != ""


def test_guide_change_through_admin_goes_through_assign_guide(client, hq_admin, store, system_actor):
    first, second = GuideFactory(store=store), GuideFactory(store=store)
    member = create_member(mobile="13812345678", home_store=store, guide=first, actor=system_actor)
    client.force_login(hq_admin)
    page = client.get(member_change_url(member))

    response = client.post(member_change_url(member), changeform_data(page, guide=second.pk))

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.guide == second
    current = GuideAssignment.objects.get(member=member, ended_at__isnull=True)
    assert (current.guide, current.reason, current.actor) == (second, GuideAssignment.Reason.HQ, hq_admin)
    event = AuditEvent.objects.get(action="member.guide_assigned", target_id=str(member.pk), actor=hq_admin)
    assert event.changes == {"guide": [first.pk, second.pk], "reason": "hq"}


def test_guide_of_another_store_is_a_form_error_and_changes_nothing(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    elsewhere = GuideFactory()
    client.force_login(hq_admin)
    page = client.get(member_change_url(member))

    response = client.post(member_change_url(member), changeform_data(page, guide=elsewhere.pk))

    assert response.status_code == 200
    assert "guide" in response.context["adminform"].form.errors
    member.refresh_from_db()
    assert member.guide is None
    assert not AuditEvent.objects.filter(action="member.guide_assigned").exists()


def test_member_creation_through_admin_uses_create_member(client, hq_admin, store):
    client.force_login(hq_admin)
    add_url = reverse("admin:members_member_add")
    data = {
        "mobile": "139 1234 5678",
        "name": "李雷",
        "gender": Member.Gender.MALE,
        "birthday": "",
        "home_store": store.pk,
        "guide": "",
        "tier": "",
        "join_channel": "store",
        "joined_at_0": "",
        "joined_at_1": "",
    }

    response = client.post(add_url, data)

    assert response.status_code == 302
    member = Member.objects.get(mobile="+8613912345678")
    assert member.name == "李雷"
    event = AuditEvent.objects.get(action="member.created", target_id=str(member.pk))
    assert event.actor == hq_admin
    assert event.changes["mobile"] == "139****5678"


def test_auditor_cannot_change_a_member(client, auditor, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, name="王小明", actor=system_actor)
    client.force_login(auditor)
    page = client.get(member_change_url(member))
    assert page.status_code == 200  # view-only

    response = client.post(member_change_url(member), {"name": "改掉", "home_store": store.pk})

    assert response.status_code == 403
    member.refresh_from_db()
    assert member.name == "王小明"
    assert not AuditEvent.objects.filter(action="member.updated").exists()


def test_change_page_masks_the_mobile_without_the_permission(client, hq_operator, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    without_full_mobile(Role.HQ_OPERATOR)
    client.force_login(hq_operator)

    response = client.get(member_change_url(member))

    content = response.content.decode()
    assert "138****5678" in content
    assert "13812345678" not in content
    assert "mobile" not in response.context["adminform"].form.fields


def test_tag_added_on_the_member_page_goes_through_tag_member(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    tag = TagFactory(name="周末来电")
    client.force_login(hq_admin)
    page = client.get(member_change_url(member))
    data = changeform_data(page, **{"member_tags-TOTAL_FORMS": "1", "member_tags-0-tag": tag.pk})

    response = client.post(member_change_url(member), data)

    assert response.status_code == 302
    member_tag = MemberTag.objects.get(member=member)
    assert (member_tag.tag, member_tag.source, member_tag.added_by) == (tag, MemberTag.Source.HQ, hq_admin)
    event = AuditEvent.objects.get(action="member.tagged", target_id=str(member.pk))
    assert event.changes == {"tag": "周末来电", "source": "hq"}


# --------------------------------------------------------------------------------------------------
# The member page stays small for members with long histories


def _order_formset(response):
    return next(
        inline.formset
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.prefix == "orders"
    )


@pytest.mark.parametrize("n_orders", [12, 60])
def test_member_page_shows_the_latest_orders_with_a_link_to_all(
    client, hq_admin, store, system_actor, n_orders, django_assert_num_queries
):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    now = timezone.now()
    orders = [
        OrderFactory(member=member, paid_at=now - datetime.timedelta(days=day)) for day in range(n_orders)
    ]
    client.force_login(hq_admin)

    # Flat in the number of orders: the page never reads more than the newest rows (one query per
    # inline, the lifecycle transitions included).
    with django_assert_num_queries(15):
        response = client.get(member_change_url(member))

    formset = _order_formset(response)
    assert [form.instance.pk for form in formset.forms] == [order.pk for order in orders[:10]]
    assert formset.has_more is True
    assert (
        formset.full_list_url == f"{reverse('admin:members_order_changelist')}?member__id__exact={member.pk}"
    )
    assert formset.full_list_url.replace("&", "&amp;") in response.content.decode()


def test_full_order_list_link_filters_by_member(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    mine = OrderFactory.create_batch(3, member=member)
    OrderFactory()
    client.force_login(hq_admin)

    response = client.get(reverse("admin:members_order_changelist"), {"member__id__exact": member.pk})

    assert {order.pk for order in response.context["cl"].result_list} == {order.pk for order in mine}


# --------------------------------------------------------------------------------------------------
# Export


# Export headers are the models' verbose names (Chinese by default).
HEADER_FIELDS = [(Member, "mobile"), (Member, "name"), (Store, "code")]


def export_csv(client, query: str = "", fields=("mobile", "name", "home_store_code")):
    data = {"format": "1", "resource": "0"} | {f"memberresource_{name}": "on" for name in fields}
    response = client.post(f"{EXPORT}{query}", data)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_export_masks_mobiles_without_the_permission(client, hq_operator, store):
    MemberFactory(mobile="+8613812345678", name="王小明", home_store=store)
    without_full_mobile(Role.HQ_OPERATOR)
    client.force_login(hq_operator)

    rows = export_csv(client)

    headers = [str(model._meta.get_field(name).verbose_name) for model, name in HEADER_FIELDS]
    assert rows == [headers, ["138****5678", "王小明", store.code]]


def test_export_shows_full_mobiles_with_the_permission_and_is_audited(client, hq_operator):
    gold, silver = TierFactory(code="gold"), TierFactory(code="silver")
    MemberFactory(mobile="+8613812345678", tier=gold)
    MemberFactory(mobile="+8613912345678", tier=gold)
    MemberFactory(mobile="+8615012345678", tier=silver)
    client.force_login(hq_operator)

    rows = export_csv(client, f"?tier__id__exact={gold.pk}", fields=("mobile",))

    assert sorted(row[0] for row in rows[1:]) == ["13812345678", "13912345678"]
    event = AuditEvent.objects.get(action="member.exported")
    assert event.actor == hq_operator
    assert event.changes["rows"] == 2
    assert event.changes["filters"] == {"tier__id__exact": [str(gold.pk)]}
    assert event.changes["full_mobile"] is True


def test_export_headers_are_chinese_by_default():
    headers = MemberResource().get_export_headers()

    assert (headers[0], headers[2]) == ("手机号", "性别")


def test_export_neutralises_formulas():
    member = MemberFactory.build(name='=HYPERLINK("http://x")', mobile="+85291234567")

    row = MemberResource(user=None).export_resource(member, selected_fields=("name", "mobile"))

    assert row == ["'+85****4567", '\'=HYPERLINK("http://x")']


@pytest.mark.parametrize("name", ["+1", "-1", "@SUM(A1)", "=1+2"])
def test_every_formula_trigger_is_neutralised(name):
    member = MemberFactory.build(name=name)

    assert MemberResource().export_resource(member, selected_fields=("name",)) == ["'" + name]


def test_export_runs_a_fixed_number_of_queries(client, hq_admin, django_assert_max_num_queries):
    stores = StoreFactory.create_batch(3)
    guides = [GuideFactory(store=store) for store in stores]
    bulk_members(120, stores=stores, guides=guides, tiers=[TierFactory()])
    client.force_login(hq_admin)

    with CaptureQueriesContext(connection) as queries:
        rows = export_csv(client, fields=("mobile", "home_store_code", "region", "guide", "tier"))

    assert len(rows) == 121
    member_selects = [q for q in queries.captured_queries if 'FROM "members_member"' in q["sql"]]
    assert len(member_selects) == 1  # one select_related query, no per-row lookups


def test_auditor_cannot_export(client, auditor):
    client.force_login(auditor)

    assert client.get(EXPORT).status_code == 403
    assert (
        client.post(EXPORT, {"format": "1", "resource": "0", "memberresource_mobile": "on"}).status_code
        == 403
    )
    assert not AuditEvent.objects.filter(action="member.exported").exists()


@pytest.mark.parametrize("staff", ["guide", "manager"])
def test_store_staff_cannot_export(client, request, staff):
    client.force_login(request.getfixturevalue(staff).user)

    response = client.post(EXPORT, {"format": "1", "resource": "0", "memberresource_mobile": "on"})

    assert response.status_code == 302
    assert response.url == reverse("home")
    assert not AuditEvent.objects.filter(action="member.exported").exists()


def test_export_button_only_for_users_who_may_export(client, hq_operator, auditor):
    client.force_login(hq_operator)
    assert EXPORT in client.get(CHANGELIST).content.decode()

    client.force_login(auditor)
    assert EXPORT not in client.get(CHANGELIST).content.decode()


def test_guide_assignment_history_is_read_only(client, hq_admin, store, system_actor):
    guide = GuideFactory(store=store)
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    assign_guide(member, guide, actor=Actor.for_user(UserFactory()), reason="hq")
    assignment = GuideAssignment.objects.get(member=member)
    client.force_login(hq_admin)

    url = reverse("admin:members_guideassignment_change", args=[assignment.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"reason": "import"}).status_code == 403
    assert client.get(reverse("admin:members_guideassignment_add")).status_code == 403


# --------------------------------------------------------------------------------------------------
# Ledgers: added through their services, never changed


def test_points_added_in_the_admin_go_through_add_points(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    client.force_login(hq_admin)
    data = {
        "member": member.pk,
        "kind": "earn",
        "delta": "120",
        "reason": "补录",
        "ref": "",
        "expires_at_0": "",
        "expires_at_1": "",
    }

    response = client.post(reverse("admin:members_pointsentry_add"), data)

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.points_balance == 120
    entry = PointsEntry.objects.get(member=member)
    assert (entry.delta, entry.actor) == (120, hq_admin)
    event = AuditEvent.objects.get(action="points.added", target_id=str(member.pk))
    assert event.changes["balance"] == 120
    assert event.actor == hq_admin


def test_points_that_would_overdraw_the_balance_are_a_form_error(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    client.force_login(hq_admin)
    data = {
        "member": member.pk,
        "kind": "redeem",
        "delta": "-50",
        "reason": "",
        "ref": "",
        "expires_at_0": "",
        "expires_at_1": "",
    }

    response = client.post(reverse("admin:members_pointsentry_add"), data)

    assert response.status_code == 200
    assert "delta" in response.context["adminform"].form.errors
    assert not PointsEntry.objects.filter(member=member).exists()


def test_consent_recorded_in_the_admin_goes_through_record_consent(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    client.force_login(hq_admin)
    data = {
        "member": member.pk,
        "channel": "sms",
        "purpose": "marketing",
        "action": "grant",
        "method": "paper",
        "policy_version": "2024-01",
        "evidence": "",
        "store": "",
        "at_0": "",
        "at_1": "",
    }

    response = client.post(reverse("admin:members_consentrecord_add"), data)

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.consent_sms is True
    consent = ConsentRecord.objects.get(member=member)
    assert (consent.source, consent.method, consent.actor) == ("hq_admin", "paper", hq_admin)
    event = AuditEvent.objects.get(action="consent.recorded", target_id=str(member.pk))
    assert event.changes["consent_sms"] == [False, True]


def test_ledger_rows_cannot_be_changed_or_deleted_in_the_admin(client, hq_admin, store, system_actor):
    member = create_member(mobile="13812345678", home_store=store, actor=system_actor)
    entry = add_points(member, delta=10, kind="earn", actor=system_actor)
    client.force_login(hq_admin)

    change = client.post(reverse("admin:members_pointsentry_change", args=[entry.pk]), {"delta": "999"})
    delete = client.post(reverse("admin:members_pointsentry_delete", args=[entry.pk]), {"post": "yes"})

    assert (change.status_code, delete.status_code) == (403, 403)
    entry.refresh_from_db()
    assert entry.delta == 10
