"""``manage.py seed_demo``: a believable, consistent, deterministic and idempotent demo brand."""

from __future__ import annotations

import datetime
import hashlib
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone

from members.demo_data import DEMO_LOGINS, DEMO_PASSWORD, TIERS, seed_demo
from members.metrics import refresh_member_metrics
from members.models import (
    Channel,
    ConsentRecord,
    ExternalIdentity,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    OrderLine,
    PointsEntry,
    Tag,
    Tier,
)
from members.phones import normalize_mobile
from scrm.models import AuditEvent
from scrm.roles import Role, role_of
from stores.models import Guide, Region, Store

pytestmark = pytest.mark.django_db

MEMBERS = 300
TODAY = datetime.date(2026, 3, 15)  # a fixed day: determinism is per seed and per day


@pytest.fixture
def seeded():
    return seed_demo(members=MEMBERS, seed=7, today=TODAY)


def data_digest() -> str:
    """A hash of the demo data by natural keys (mobiles, codes, order numbers), never by database ids."""
    parts = [
        Store.objects.order_by("code").values_list("code", "name", "city", "address", "region__code"),
        Guide.objects.order_by("employee_no").values_list(
            "employee_no", "name", "mobile", "position", "store__code", "user__username"
        ),
        Member.objects.order_by("mobile").values_list(
            "mobile",
            "name",
            "gender",
            "birthday",
            "home_store__code",
            "guide__employee_no",
            "tier__code",
            "joined_at",
            "join_channel",
            "consent_sms",
            "consent_wecom",
            "points_balance",
            "spend_12m",
            "lifecycle_stage",
            "rfm_cell",
        ),
        Order.objects.order_by("channel", "external_no").values_list(
            "channel",
            "external_no",
            "member__mobile",
            "store__code",
            "guide__employee_no",
            "paid_at",
            "amount",
            "refunded_amount",
            "status",
            "item_count",
        ),
        OrderLine.objects.order_by("order__channel", "order__external_no", "line_no").values_list(
            "order__external_no", "line_no", "sku", "category", "quantity", "amount"
        ),
        PointsEntry.objects.order_by("member__mobile", "created_at", "ref", "delta").values_list(
            "member__mobile", "delta", "kind", "ref", "created_at", "expires_at"
        ),
        ConsentRecord.objects.order_by("member__mobile", "at", "channel").values_list(
            "member__mobile", "channel", "action", "source", "method", "policy_version", "at"
        ),
        MemberTag.objects.order_by("member__mobile", "tag__name").values_list(
            "member__mobile", "tag__name", "source", "added_at"
        ),
        ExternalIdentity.objects.order_by("platform", "external_id").values_list(
            "member__mobile", "platform", "external_id"
        ),
    ]
    digest = hashlib.sha256()
    for rows in parts:
        for row in rows:
            digest.update(repr(row).encode())
    return digest.hexdigest()


def digest_of_fresh_seed(seed: int) -> str:
    """Seed into a fresh state (a savepoint rolled back afterwards) and hash what was written."""
    with transaction.atomic():
        seed_demo(members=MEMBERS, seed=seed, today=TODAY)
        digest = data_digest()
        transaction.set_rollback(True)
    return digest


def test_seed_builds_a_brand_with_the_requested_counts(seeded):
    stores = Store.objects.count()
    assert Region.objects.count() == 6
    assert stores == 39
    assert Guide.objects.count() == 5 * stores
    assert Guide.objects.filter(position=Guide.Position.MANAGER).count() == stores
    assert Member.objects.count() == MEMBERS
    assert Order.objects.count() == 2250  # 300 members × 7.5
    assert Order.objects.filter(member__isnull=True).count() == 562  # a quarter: non-member buyers
    assert list(Tier.objects.order_by("rank").values_list("code", "name", "threshold")) == [
        (code, name, threshold) for code, name, _rank, threshold, _benefits in TIERS
    ]
    assert Tag.objects.count() >= 12
    assert seeded.created is True
    assert seeded.counts["members"] == MEMBERS
    assert seeded.counts["orders"] == 2250


def test_seed_leaves_one_audit_event_with_the_counts(seeded):
    event = AuditEvent.objects.get(action="demo.seeded")
    assert event.actor_kind == AuditEvent.ActorKind.SYSTEM
    assert event.actor_label == "seed_demo"
    assert event.target_type == "demo"
    assert event.target_id == "7"
    assert event.changes["members"] == MEMBERS
    assert event.changes["orders"] == 2250
    # The bulk writes are the seeder's own: the row-change triggers recorded nothing beside it.
    assert AuditEvent.objects.exclude(action="demo.seeded").count() == 0


def test_every_staff_login_has_its_role_and_profile(seeded):
    User = get_user_model()
    for guide in Guide.objects.select_related("user", "store"):
        assert guide.user.username == guide.employee_no.lower()
        assert guide.employee_no.startswith(guide.store.code + "-")
        expected = Role.STORE_MANAGER if guide.position == Guide.Position.MANAGER else Role.GUIDE
        assert role_of(guide.user) == expected
        assert guide.user.is_staff is False
    for username, role in (
        ("hq_admin", Role.HQ_ADMIN),
        ("hq_operator", Role.HQ_OPERATOR),
        ("auditor", Role.AUDITOR),
    ):
        user = User.objects.get(username=username)
        assert (role_of(user), user.is_staff, user.is_superuser) == (role, True, False)


def test_every_points_balance_equals_the_sum_of_its_entries(seeded):
    sums = dict(PointsEntry.objects.values("member").annotate(s=Sum("delta")).values_list("member", "s"))
    balances = dict(Member.objects.values_list("pk", "points_balance"))
    assert balances == {pk: sums.get(pk, 0) for pk in balances}
    assert PointsEntry.objects.filter(kind=PointsEntry.Kind.REDEEM).exists()


def test_each_paid_member_order_earns_one_point_per_yuan(seeded):
    earns = dict(PointsEntry.objects.filter(kind=PointsEntry.Kind.EARN).values_list("ref", "delta"))
    paid = Order.objects.filter(
        member__isnull=False, status__in=[Order.Status.PAID, Order.Status.PARTIALLY_REFUNDED]
    )
    assert earns == {o.external_no: int(o.amount - o.refunded_amount) for o in paid}


def test_no_balance_ever_went_below_zero(seeded):
    running: dict[int, int] = {}
    for member_id, delta in PointsEntry.objects.order_by("member", "created_at", "id").values_list(
        "member", "delta"
    ):
        running[member_id] = running.get(member_id, 0) + delta
        assert running[member_id] >= 0


def test_consent_flags_equal_the_latest_marketing_record_per_channel(seeded):
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT ON (member_id, channel) member_id, channel, action
              FROM members_consentrecord WHERE purpose = 'marketing'
             ORDER BY member_id, channel, at DESC, id DESC
            """
        )
        latest = {(m, c): a in ("grant", "guardian_grant") for m, c, a in cursor.fetchall()}
    for pk, sms, call, wecom, email in Member.objects.values_list(
        "pk", "consent_sms", "consent_call", "consent_wecom", "consent_email"
    ):
        assert (sms, wecom) == (latest[(pk, "sms")], latest[(pk, "wecom")])
        assert (call, email) == (False, False)
    actions = set(ConsentRecord.objects.values_list("action", flat=True))
    assert actions == {"grant", "refuse", "withdraw"}


def test_every_exclusive_guide_works_in_the_home_store_with_one_open_assignment(seeded):
    open_assignments = dict(
        GuideAssignment.objects.filter(ended_at__isnull=True)
        .values("member")
        .annotate(n=Count("pk"))
        .values_list("member", "n")
    )
    open_guide = dict(GuideAssignment.objects.filter(ended_at__isnull=True).values_list("member", "guide"))
    with_guide = 0
    for member in Member.objects.select_related("guide"):
        if member.guide is None:
            assert member.pk not in open_assignments
            continue
        with_guide += 1
        assert member.guide.store_id == member.home_store_id
        assert open_assignments[member.pk] == 1
        assert open_guide[member.pk] == member.guide_id
    assert 0.7 * MEMBERS < with_guide < 0.9 * MEMBERS  # about four in five


def test_every_mobile_is_a_valid_unique_mainland_number(seeded):
    mobiles = list(Member.objects.values_list("mobile", flat=True))
    assert len(set(mobiles)) == MEMBERS
    for mobile in mobiles:
        assert re.fullmatch(r"\+861[3-9]\d{9}", mobile)
        assert normalize_mobile(mobile) == mobile


def test_orders_add_up_and_store_orders_carry_their_store(seeded):
    lines = dict(OrderLine.objects.values("order").annotate(s=Sum("amount")).values_list("order", "s"))
    quantities = dict(OrderLine.objects.values("order").annotate(q=Sum("quantity")).values_list("order", "q"))
    for order in Order.objects.select_related("member", "guide"):
        assert order.amount == lines[order.pk]
        assert order.item_count == quantities[order.pk]
        if order.channel == Channel.STORE:
            assert order.store_id is not None
        if order.channel in (Channel.TMALL, Channel.JD):
            assert (order.store_id, order.guide_id) == (None, None)
        if order.guide_id is not None:
            assert order.guide.store_id == order.store_id
        if order.member_id is not None:
            assert order.paid_at >= order.member.joined_at
    refunded = Order.objects.filter(status=Order.Status.REFUNDED)
    assert refunded.exists()
    assert all(o.refunded_amount == o.amount for o in refunded)


def test_metrics_are_current_and_tiers_follow_the_twelve_month_spend(seeded):
    anchor = datetime.datetime.combine(TODAY, datetime.time.min, tzinfo=timezone.get_default_timezone())
    # Members who never bought keep the default metrics, so their row is not rewritten.
    assert set(Member.objects.values_list("metrics_updated_at", flat=True)) == {anchor, None}
    assert refresh_member_metrics(None, now=anchor) == 0  # already current as of the seeding moment
    thresholds = sorted((t.threshold, t.code) for t in Tier.objects.all())
    for spend, tier in Member.objects.values_list("spend_12m", "tier__code"):
        assert tier == [code for threshold, code in thresholds if threshold <= spend][-1]


def test_the_same_seed_on_the_same_day_gives_the_same_data():
    assert digest_of_fresh_seed(11) == digest_of_fresh_seed(11)
    assert digest_of_fresh_seed(11) != digest_of_fresh_seed(12)


def test_a_second_run_adds_nothing_and_prints_the_logins_again():
    first = io.StringIO()
    call_command("seed_demo", "--members", str(MEMBERS), stdout=first)
    counts = (
        Member.objects.count(),
        Order.objects.count(),
        PointsEntry.objects.count(),
        AuditEvent.objects.count(),
    )

    second = io.StringIO()
    call_command("seed_demo", "--members", str(MEMBERS), stdout=second)

    assert (
        Member.objects.count(),
        Order.objects.count(),
        PointsEntry.objects.count(),
        AuditEvent.objects.count(),
    ) == counts
    assert AuditEvent.objects.filter(action="demo.seeded").count() == 1
    for output in (first.getvalue(), second.getvalue()):
        for _role, username in DEMO_LOGINS:
            assert re.search(rf"\b{re.escape(username)}\s+{DEMO_PASSWORD}\b", output)
        assert f"{MEMBERS:,}" in output


@pytest.mark.parametrize(
    ("username", "lands_on"),
    [
        ("hq_admin", "admin:index"),
        ("hq_operator", "admin:index"),
        ("auditor", "admin:index"),
        ("sh001-01", "guides:store"),
        ("sh001-02", "guides:today"),
    ],
)
def test_each_demo_login_works_and_lands_where_its_role_goes(seeded, client, username, lands_on):
    assert client.login(username=username, password=DEMO_PASSWORD) is True

    response = client.get("/")

    assert response.status_code == 302
    assert response.url == reverse(lands_on)
    if lands_on == "admin:index":
        assert client.get(reverse("admin:index")).status_code == 200
    else:  # store staff never reach the admin
        assert client.get(reverse("admin:index")).url == reverse("home")
