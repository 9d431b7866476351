"""The store-staff pages show each role exactly its scope: list, search, member page and export."""

import datetime
import io
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from members.models import Member, MemberTag
from scrm.masking import mask_mobile
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.factories import (
    GuideFactory,
    MemberFactory,
    OrderFactory,
    OrderLineFactory,
    TagFactory,
    TierFactory,
    UserFactory,
)
from tests.guides.world import HQ_USERS, STAFF_USERS, build_world


@pytest.fixture
def world(db):
    return build_world()


def listed_ids(response) -> set[int]:
    return {row.member.pk for row in response.context["rows"]}


def national(member: Member) -> str:
    return member.mobile.removeprefix("+86")


# Access ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["guides:members", "guides:member", "guides:export"])
def test_anonymous_users_are_sent_to_the_login_page(client, world, name):
    url = reverse(name, args=[world.members["A1a"].pk] if name == "guides:member" else [])
    response = client.post(url) if name == "guides:export" else client.get(url)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"


@pytest.mark.parametrize("user_key", HQ_USERS)
def test_hq_users_are_sent_to_the_admin(client, world, user_key):
    client.force_login(world.users[user_key])
    response = client.get(reverse("guides:members"))
    assert response.status_code == 302
    assert response.url == reverse("admin:index")


def test_accounts_without_a_staff_role_are_refused(client, world):
    client.force_login(world.users["no_role"])
    assert client.get(reverse("guides:members")).status_code == 403
    assert client.get(reverse("guides:member", args=[world.members["Al1"].pk])).status_code == 403
    assert client.post(reverse("guides:export")).status_code == 403


def test_a_guide_who_left_is_signed_out(client, world):
    client.force_login(world.users["left_guide"])
    response = client.get(reverse("guides:members"))
    assert response.url == f"{reverse('login')}?next={reverse('guides:members')}"
    assert AuditEvent.objects.get(action="auth.session_ended").changes == {"reason": "staff_left"}


# List --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_key", STAFF_USERS)
def test_the_list_shows_exactly_the_users_members(client, world, user_key):
    # given a guide or manager
    client.force_login(world.users[user_key])

    # when they open their member list
    response = client.get(reverse("guides:members"))

    # then it holds exactly their members, each with a masked mobile and never the full number
    assert response.status_code == 200
    assert listed_ids(response) == world.member_ids_for(user_key)
    html = response.content.decode()
    for member in world.members.values():
        assert national(member) not in html
        if member.pk in world.member_ids_for(user_key):
            assert mask_mobile(member.mobile) in html
            assert member.name in html
        else:
            assert member.name not in html


def test_the_manager_sees_each_members_guide_and_a_guide_does_not(client, world):
    client.force_login(world.users["manager_A"])
    manager_html = client.get(reverse("guides:members")).content.decode()
    client.force_login(world.users["guide_A1"])
    guide_response = client.get(reverse("guides:members"))

    assert "导购A2" in manager_html
    assert "离职导购" in manager_html
    assert guide_response.context["is_manager"] is False
    assert "导购A1" not in guide_response.content.decode().split('class="member-list"')[1]


def test_merged_and_erased_members_are_not_listed(client, guide):
    kept = MemberFactory(home_store=guide.store, guide=guide)
    MemberFactory(home_store=guide.store, guide=guide, status=Member.Status.MERGED)
    MemberFactory(home_store=guide.store, guide=guide, status=Member.Status.ERASED)
    client.force_login(guide.user)
    assert listed_ids(client.get(reverse("guides:members"))) == {kept.pk}


def test_the_list_pages_by_twenty_newest_first(client, guide):
    now = timezone.now()
    members = [
        MemberFactory(home_store=guide.store, guide=guide, joined_at=now - datetime.timedelta(days=i))
        for i in range(25)
    ]
    client.force_login(guide.user)

    first = client.get(reverse("guides:members"))
    second = client.get(reverse("guides:members"), {"page": 2})

    assert [row.member.pk for row in first.context["rows"]] == [m.pk for m in members[:20]]
    assert [row.member.pk for row in second.context["rows"]] == [m.pk for m in members[20:]]
    assert first.context["page_obj"].paginator.count == 25


@pytest.mark.parametrize("n_members", [2, 20])
def test_the_list_query_count_does_not_grow_with_rows(client, guide, n_members, django_assert_num_queries):
    tier = TierFactory(code="silver", name="银卡", rank=2)
    MemberFactory.create_batch(n_members, home_store=guide.store, guide=guide, tier=tier)
    client.force_login(guide.user)
    # session, user, role, staff profile, store, count, page of rows, tiers for the filter
    with django_assert_num_queries(8):
        response = client.get(reverse("guides:members"))
    assert len(response.context["rows"]) == n_members


@pytest.mark.parametrize("n_members", [2, 20])
def test_the_managers_list_query_count_does_not_grow_with_rows(
    client, manager, n_members, django_assert_num_queries
):
    guides = GuideFactory.create_batch(2, store=manager.store)
    for i in range(n_members):
        MemberFactory(home_store=manager.store, guide=guides[i % 2])
    client.force_login(manager.user)
    # … plus the colleagues who can receive selected members
    with django_assert_num_queries(9):
        response = client.get(reverse("guides:members"))
    assert len(response.context["rows"]) == n_members


# Search ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_key", "q", "expected"),
    [
        # last four digits: both stores have a …0001; each user finds only their own
        ("guide_A1", "0001", {"A1a"}),
        ("manager_B", "0001", {"B1a"}),
        ("guide_A2", "0001", set()),
        # the full mobile, in the shapes people type
        ("guide_A1", "139 0000 0002", {"A1b"}),
        ("guide_A1", "+86 139-0000-0002", {"A1b"}),
        ("guide_A1", "8613900000002", {"A1b"}),
        ("guide_A1", "１３９０００００００２", {"A1b"}),
        ("guide_A1", "０００２", {"A1b"}),
        ("manager_A", "13900000003", {"A2a"}),
        # a member of another guide or another store is never found, even by the full mobile
        ("guide_A2", "13900000002", set()),
        ("manager_B", "13900000002", set()),
        ("guide_B1", "13900000001", set()),
        # name prefix
        ("manager_A", "会员A", {"A1a", "A1b", "A2a", "Ama", "An", "Al1"}),
        ("manager_A", "会员A1", {"A1a", "A1b"}),
        ("guide_A1", "会员A2", set()),
        ("manager_A", "会员B", set()),
        # digits that are not a mobile match nothing rather than everything
        ("manager_A", "1390000", set()),
    ],
)
def test_search_finds_only_within_scope(client, world, user_key, q, expected):
    client.force_login(world.users[user_key])
    response = client.get(reverse("guides:members"), {"q": q})
    assert response.status_code == 200
    assert listed_ids(response) == {world.members[key].pk for key in expected}


def test_an_empty_search_lists_everything_in_scope(client, world):
    client.force_login(world.users["manager_B"])
    response = client.get(reverse("guides:members"), {"q": "   "})
    assert listed_ids(response) == world.member_ids_for("manager_B")


# Member page -------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_key", STAFF_USERS)
def test_member_pages_open_in_scope_and_404_outside(client, world, user_key):
    client.force_login(world.users[user_key])
    visible = world.member_ids_for(user_key)
    statuses = {
        key: client.get(reverse("guides:member", args=[member.pk])).status_code
        for key, member in world.members.items()
    }
    assert statuses == {key: 200 if m.pk in visible else 404 for key, m in world.members.items()}


def test_a_missing_member_is_the_same_404(client, world):
    client.force_login(world.users["manager_A"])
    missing = max(m.pk for m in world.members.values()) + 1000
    assert client.get(reverse("guides:member", args=[missing])).status_code == 404


def test_the_member_page_shows_the_card_masked(client, guide):
    # given a member with a tier, tags, consent on two channels and twelve orders
    now = timezone.now()
    member = MemberFactory(
        home_store=guide.store,
        guide=guide,
        mobile="+8613912345678",
        name="林晓",
        tier=TierFactory(code="platinum", name="铂金卡", rank=4),
        consent_sms=True,
        consent_wecom=True,
    )
    tag = TagFactory(name="偏好周末")
    MemberTag.objects.create(member=member, tag=tag, source=MemberTag.Source.GUIDE)
    orders = [
        OrderFactory(member=member, paid_at=now - datetime.timedelta(days=i), amount=Decimal("100.00") + i)
        for i in range(12)
    ]
    OrderLineFactory(order=orders[0], line_no=1, name="修护精华", sku="SKU-A", quantity=2)
    OrderLineFactory(order=orders[0], line_no=2, name="洁面乳", sku="SKU-B")
    client.force_login(guide.user)

    # when the guide opens the member page
    response = client.get(reverse("guides:member", args=[member.pk]))

    # then it shows the masked mobile only, the tags, the consent per channel and the last ten orders
    html = response.content.decode()
    card = response.context["card"]
    assert "139****5678" in html
    assert "13912345678" not in html
    assert "铂金卡" in html
    assert "偏好周末" in html
    assert [c.channel for c in card.consents if c.granted] == ["sms", "wecom"]
    assert [c.channel for c in card.consents if not c.granted] == ["call", "email"]
    assert [o.pk for o in card.orders] == [o.pk for o in orders[:10]]
    assert orders[10].external_no not in html
    assert [line.name for line in card.orders[0].lines.all()] == ["修护精华", "洁面乳"]
    assert "修护精华" in html


def test_the_member_page_query_count_does_not_grow_with_orders(client, guide, django_assert_num_queries):
    member = MemberFactory(home_store=guide.store, guide=guide)
    for order in OrderFactory.create_batch(10, member=member):
        OrderLineFactory.create_batch(2, order=order)
    client.force_login(guide.user)
    # session, user, role, staff profile, member (with tier, guide, store), tags, orders (with store), lines,
    # notes (with their authors)
    with django_assert_num_queries(9):
        assert client.get(reverse("guides:member", args=[member.pk])).status_code == 200


# Export ------------------------------------------------------------------------------------------


def read_xlsx(response) -> list[tuple]:
    workbook = load_workbook(io.BytesIO(b"".join(response.streaming_content)), read_only=True)
    return list(workbook.active.iter_rows(values_only=True))


@pytest.mark.parametrize("manager_key", ["manager_A", "manager_B"])
def test_the_export_holds_exactly_the_managers_store_masked(client, world, manager_key):
    # given a store manager
    client.force_login(world.users[manager_key])

    # when they export
    response = client.post(reverse("guides:export"))

    # then the workbook holds their store's members, masked, under Chinese headers
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    store = world.stores[manager_key.removeprefix("manager_")]
    assert f'filename="members-{store.code}-' in response["Content-Disposition"]
    header, *rows = read_xlsx(response)
    assert header[:3] == ("会员姓名", "手机号（脱敏）", "等级")
    expected = [m for m in world.members.values() if m.pk in world.member_ids_for(manager_key)]
    assert sorted((row[0], row[1]) for row in rows) == sorted(
        (m.name, mask_mobile(m.mobile)) for m in expected
    )
    everything = repr(rows)
    for member in world.members.values():
        assert national(member) not in everything


def test_the_export_is_audited_with_the_count_and_store(client, world):
    client.force_login(world.users["manager_A"])
    response = client.post(reverse("guides:export"), HTTP_X_REQUEST_ID="req-export-1")
    b"".join(response.streaming_content)

    event = AuditEvent.objects.get(action="member.exported")
    assert event.actor == world.users["manager_A"]
    assert event.target_type == "member"
    assert event.target_id == ""
    assert event.changes == {"count": 6, "scope": "store", "store": "STA"}
    assert event.store_id == world.stores["A"].pk
    assert event.request_id == "req-export-1"


def test_export_cells_are_typed_and_never_formulas(client, manager):
    MemberFactory(
        home_store=manager.store,
        name="=HYPERLINK(1)",
        last_purchase_at=timezone.now(),
        spend_12m=Decimal("1234.50"),
        lifecycle_stage=Member.Lifecycle.REPEAT,
    )
    client.force_login(manager.user)
    header, row = read_xlsx(client.post(reverse("guides:export")))
    values = dict(zip(header, row, strict=True))
    assert values["会员姓名"] == "=HYPERLINK(1)"
    assert values["近12个月消费"] == 1234.5
    assert values["最近购买"].date() == timezone.localdate()


@pytest.mark.parametrize("user_key", ["guide_A1", "guide_B2"])
def test_guides_cannot_export_and_nothing_is_audited(client, world, user_key):
    client.force_login(world.users[user_key])
    assert client.post(reverse("guides:export")).status_code == 403
    assert not AuditEvent.objects.filter(action="member.exported").exists()


def test_export_needs_a_post(client, world):
    client.force_login(world.users["manager_A"])
    assert client.get(reverse("guides:export")).status_code == 405
    assert not AuditEvent.objects.filter(action="member.exported").exists()


def test_the_export_button_is_only_on_the_managers_page(client, world):
    export_url = reverse("guides:export")
    client.force_login(world.users["manager_A"])
    assert export_url in client.get(reverse("guides:members")).content.decode()
    client.force_login(world.users["guide_A1"])
    assert export_url not in client.get(reverse("guides:members")).content.decode()


# Shell -------------------------------------------------------------------------------------------


def test_the_login_page_renders_in_chinese_with_a_language_switch(client, db):
    html = client.get(reverse("login")).content.decode()
    assert '<html lang="zh-hans">' in html
    assert 'name="viewport"' in html
    assert reverse("set_language") in html
    assert 'name="language" value="en"' in html


def test_switching_to_english_sets_the_page_language(client, guide):
    client.force_login(guide.user)
    client.post(reverse("set_language"), {"language": "en", "next": reverse("guides:members")})
    html = client.get(reverse("guides:members")).content.decode()
    assert '<html lang="en">' in html
    assert "My members" in html


def test_a_user_with_a_role_but_no_staff_profile_is_refused(client, db):
    client.force_login(UserFactory(role=Role.GUIDE))
    assert client.get(reverse("guides:members")).status_code == 403
