"""The segment compiler: every field × operator, negation with NULLs, hand-computed membership.

One small fixture of four live members (and two that never match: erased and merged), each with
known attributes, orders, tags, consent and tasks. Every case lists, by hand, who matches; the same
condition negated must match exactly the others — which pins NULL handling for every field (a
member without a birthday, without a purchase, without a tier is in the negation).
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation
from lunardate import LunarDate

from campaigns import segments
from campaigns.models import Task
from members.models import ConsentRecord, Member, MemberTag, OrderLine, PointsEntry, PrivacyNotice
from tests.campaigns.factories import TaskFactory
from tests.factories import (
    GuideFactory,
    MemberFactory,
    OrderFactory,
    RegionFactory,
    StoreFactory,
    TagFactory,
    TierFactory,
)

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()
ZONE = timezone.get_default_timezone()


def at(day: datetime.date, hour: int = 12) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(hour), tzinfo=ZONE)


def days_ago(n: int) -> datetime.datetime:
    return at(TODAY - datetime.timedelta(days=n))


def years_before(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def lunar_birth_date(celebrated_on: datetime.date, birth_year: int) -> datetime.date:
    """A birth date in ``birth_year`` whose lunar month and day fall on ``celebrated_on``."""
    lunar = LunarDate.from_solar_date(celebrated_on.year, celebrated_on.month, celebrated_on.day)
    day = min(lunar.day, 29)
    return LunarDate(birth_year, lunar.month, day).to_solar_date()


class World:
    """Names → objects of the fixture."""

    def __init__(self) -> None:
        self.r1 = RegionFactory(code="R1", name="华东")
        self.r2 = RegionFactory(code="R2", name="华北")
        self.s1 = StoreFactory(code="S1", region=self.r1, city="上海")
        self.s2 = StoreFactory(code="S2", region=self.r1, city="杭州")
        self.s3 = StoreFactory(code="S3", region=self.r2, city="北京")
        self.gold = TierFactory(code="gold", rank=3)
        self.silver = TierFactory(code="silver", rank=2)
        self.t1, self.t2 = TagFactory(name="护肤达人"), TagFactory(name="高潜")
        guide = GuideFactory(store=self.s1)

        # A: 29 (30 in three days), gold, Shanghai, guide, WeCom consent, 500 points, two recent orders.
        self.a = MemberFactory(
            name="A",
            gender="F",
            tier=self.gold,
            home_store=self.s1,
            guide=guide,
            birthday=years_before(TODAY + datetime.timedelta(days=3), 30),
            joined_at=at(datetime.date(2024, 1, 10)),
            join_channel="store",
            consent_wecom=True,
        )
        # B: no birthday, silver, Hangzhou, SMS consent, one old JD order.
        self.b = MemberFactory(
            name="B",
            gender="M",
            tier=self.silver,
            home_store=self.s2,
            birthday=None,
            joined_at=at(datetime.date(2025, 6, 1)),
            join_channel="tmall",
            consent_sms=True,
        )
        # C: lunar birthday in two days, no tier, Beijing, joined five days ago, never bought.
        self.c = MemberFactory(
            name="C",
            gender="U",
            tier=None,
            home_store=self.s3,
            birthday=lunar_birth_date(TODAY + datetime.timedelta(days=2), 1990),
            birthday_lunar=True,
            joined_at=days_ago(5),
            join_channel="miniprogram",
        )
        # D: 45, gold, Shanghai, guide, every consent, one order 60 days ago (and a refunded one).
        self.d = MemberFactory(
            name="D",
            gender="M",
            tier=self.gold,
            home_store=self.s1,
            guide=guide,
            birthday=years_before(TODAY - datetime.timedelta(days=20), 45),
            joined_at=at(datetime.date(2020, 3, 1)),
            join_channel="store",
            consent_sms=True,
            consent_call=True,
            consent_wecom=True,
            consent_email=True,
        )
        # Never in a segment: erased and merged members matching everything else.
        for name, status in (("E", Member.Status.ERASED), ("M", Member.Status.MERGED)):
            MemberFactory(name=name, tier=self.gold, home_store=self.s1, status=status, consent_wecom=True)

        PointsEntry.objects.create(member=self.a, delta=500, kind=PointsEntry.Kind.EARN)

        def order(member, days, amount, channel, store, category, sku, refunded="0", status="paid"):
            placed = OrderFactory(
                member=member,
                store=store,
                channel=channel,
                paid_at=days_ago(days),
                amount=Decimal(amount),
                refunded_amount=Decimal(refunded),
                status=status,
            )
            OrderLine.objects.create(
                order=placed, line_no=1, sku=sku, category=category, quantity=1, amount=Decimal(amount)
            )

        order(self.a, 10, "300", "store", self.s1, "护肤", "SKU1")
        order(self.a, 100, "200", "tmall", None, "彩妆", "SKU2", refunded="50", status="partially_refunded")
        order(self.b, 400, "1000", "jd", None, "香水", "SKU4")
        order(self.d, 60, "80", "store", self.s1, "护肤", "SKU3")
        order(self.d, 5, "999", "store", self.s1, "彩妆", "SKU2", refunded="999", status="refunded")

        # Metrics as members.metrics would leave them (set directly: the compiler reads the columns).
        metrics = {
            self.a: (days_ago(10), 2, "450", "225", "repeat", "555"),
            self.b: (days_ago(400), 0, "0", "1000", "lost", "155"),
            self.d: (days_ago(60), 1, "80", "80", "first_purchase", "311"),
        }
        for member, (last, orders_12m, spend_12m, average, stage, rfm) in metrics.items():
            Member.objects.filter(pk=member.pk).update(
                last_purchase_at=last,
                order_count=max(orders_12m, 1),
                orders_12m=orders_12m,
                spend_12m=Decimal(spend_12m),
                avg_order_value=Decimal(average),
                lifecycle_stage=stage,
                rfm_cell=rfm,
            )

        MemberTag.objects.create(member=self.a, tag=self.t1, source="hq")
        MemberTag.objects.create(member=self.a, tag=self.t2, source="hq")
        MemberTag.objects.create(member=self.b, tag=self.t1, source="hq")

        # Tasks: A contacted today (reached); B twice, 40 and 20 days ago, the last "asked to stop".
        TaskFactory(
            member=self.a,
            store=self.s1,
            state=Task.State.DONE,
            outcome="reached",
            completed_at=timezone.now(),
        )
        older = TaskFactory(
            member=self.b, store=self.s2, state=Task.State.DONE, outcome="reached", completed_at=days_ago(39)
        )
        newer = TaskFactory(
            member=self.b, store=self.s2, state=Task.State.DONE, outcome="stop", completed_at=days_ago(19)
        )
        Task.objects.filter(pk=older.pk).update(created_at=days_ago(40))
        Task.objects.filter(pk=newer.pk).update(created_at=days_ago(20))

        # Consent for personalised targeting (no flag: the ledger decides): C granted on WeCom; A granted
        # then withdrew; D granted under a notice version that did not ask for it.
        PrivacyNotice.objects.create(
            version="p2", purposes=["marketing", "personalisation"], published_at=days_ago(300)
        )
        PrivacyNotice.objects.create(version="p1", purposes=["marketing"], published_at=days_ago(900))

        def consent(member, action, version, when):
            ConsentRecord.objects.create(
                member=member,
                channel="wecom",
                purpose="personalisation",
                action=action,
                source="hq_admin",
                policy_version=version,
                at=when,
            )

        consent(self.c, "grant", "p2", days_ago(3))
        consent(self.a, "grant", "p2", days_ago(30))
        consent(self.a, "withdraw", "p2", days_ago(2))
        consent(self.d, "grant", "p1", days_ago(30))


@pytest.fixture
def world() -> World:
    return World()


def names(definition: dict) -> set[str]:
    return set(segments.segment_members(definition, today=TODAY).values_list("name", flat=True))


def condition(field: str, op: str, value) -> dict:
    return {"op": "all", "items": [{"field": field, "op": op, "value": value}]}


EVERYONE = {"A", "B", "C", "D"}

# (field, op, value or a function of the world, expected names)
CASES = [
    ("tier", "in", lambda w: [w.gold.pk], {"A", "D"}),
    ("tier", "not_in", lambda w: [w.gold.pk], {"B", "C"}),
    ("home_store", "in", lambda w: [w.s1.pk], {"A", "D"}),
    ("home_store", "not_in", lambda w: [w.s1.pk, w.s3.pk], {"B"}),
    ("region", "in", lambda w: [w.r1.pk], {"A", "B", "D"}),
    ("region", "not_in", lambda w: [w.r1.pk], {"C"}),
    ("city", "in", ["北京", "杭州"], {"B", "C"}),
    ("city", "not_in", ["上海"], {"B", "C"}),
    ("gender", "in", ["F"], {"A"}),
    ("gender", "not_in", ["F", "M"], {"C"}),
    ("age", "eq", 45, {"D"}),
    ("age", "ne", 45, {"A", "B", "C"}),
    ("age", "gt", 29, {"C", "D"}),
    ("age", "gte", 29, {"A", "C", "D"}),
    ("age", "lt", 45, {"A", "C"}),
    ("age", "lte", 45, {"A", "C", "D"}),
    ("age", "between", [29, 40], {"A", "C"}),
    ("birthday", "in_next_days", 7, {"A", "C"}),
    ("birthday", "in_next_days", 2, {"C"}),
    ("joined", "on_or_after", "2025-06-01", {"B", "C"}),
    ("joined", "on_or_before", "2024-01-10", {"A", "D"}),
    ("joined", "between", ["2024-01-01", "2025-06-01"], {"A", "B"}),
    ("joined", "in_last_days", 10, {"C"}),
    ("join_channel", "in", ["tmall"], {"B"}),
    ("join_channel", "not_in", ["store"], {"B", "C"}),
    ("points_balance", "eq", 0, {"B", "C", "D"}),
    ("points_balance", "ne", 0, {"A"}),
    ("points_balance", "gt", 100, {"A"}),
    ("points_balance", "gte", 500, {"A"}),
    ("points_balance", "lt", 500, {"B", "C", "D"}),
    ("points_balance", "lte", 500, EVERYONE),
    ("points_balance", "between", [1, 1000], {"A"}),
    ("has_guide", "is", True, {"A", "D"}),
    ("has_guide", "is", False, {"B", "C"}),
    ("consent_marketing", "granted", "wecom", {"A", "D"}),
    ("consent_marketing", "granted", "any", {"A", "B", "D"}),
    ("consent_marketing", "not_granted", "sms", {"A", "C"}),
    ("consent_personalisation", "granted", "wecom", {"C"}),
    ("consent_personalisation", "not_granted", "wecom", {"A", "B", "D"}),
    ("consent_service", "granted", "any", set()),
    ("consent_service", "not_granted", "email", EVERYONE),
    ("tags", "has_any", lambda w: [w.t1.pk], {"A", "B"}),
    ("tags", "has_all", lambda w: [w.t1.pk, w.t2.pk], {"A"}),
    ("tags", "has_none", lambda w: [w.t2.pk], {"B", "C", "D"}),
    ("days_since_last_purchase", "eq", 60, {"D"}),
    ("days_since_last_purchase", "ne", 60, {"A", "B", "C"}),
    ("days_since_last_purchase", "gt", 60, {"B"}),
    ("days_since_last_purchase", "gte", 60, {"B", "D"}),
    ("days_since_last_purchase", "lt", 60, {"A"}),
    ("days_since_last_purchase", "lte", 60, {"A", "D"}),
    ("days_since_last_purchase", "between", [10, 60], {"A", "D"}),
    # orders in the last 120 days: A 2, B 0, C 0, D 1 (its refunded order does not count)
    ("orders_in_window", "eq", {"days": 120, "value": 1}, {"D"}),
    ("orders_in_window", "ne", {"days": 120, "value": 1}, {"A", "B", "C"}),
    ("orders_in_window", "gt", {"days": 120, "value": 1}, {"A"}),
    ("orders_in_window", "gte", {"days": 120, "value": 1}, {"A", "D"}),
    ("orders_in_window", "lt", {"days": 120, "value": 1}, {"B", "C"}),
    ("orders_in_window", "lte", {"days": 120, "value": 1}, {"B", "C", "D"}),
    ("orders_in_window", "between", {"days": 120, "value": [1, 2]}, {"A", "D"}),
    ("orders_in_window", "eq", {"days": 9, "value": 0}, EVERYONE),
    # comparisons meaning "some order" / "no order" compile to EXISTS / NOT EXISTS
    ("orders_in_window", "ne", {"days": 120, "value": 0}, {"A", "D"}),
    ("orders_in_window", "lte", {"days": 120, "value": 0}, {"B", "C"}),
    ("orders_in_window", "between", {"days": 120, "value": [0, 0]}, {"B", "C"}),
    ("spend_in_window", "gt", {"days": 120, "value": 0}, {"A", "D"}),
    ("spend_in_window", "eq", {"days": 120, "value": 0}, {"B", "C"}),
    ("spend_in_window", "gte", {"days": 120, "value": 1}, {"A", "D"}),
    ("spend_in_window", "lt", {"days": 120, "value": 1}, {"B", "C"}),
    ("spend_in_window", "gt", {"days": 7, "value": 0}, set()),  # D's order 5 days ago was refunded
    # spend in the last 120 days, net of refunds: A 300 + 150, D 80
    ("spend_in_window", "eq", {"days": 120, "value": 80}, {"D"}),
    ("spend_in_window", "ne", {"days": 120, "value": 80}, {"A", "B", "C"}),
    ("spend_in_window", "gt", {"days": 120, "value": 80}, {"A"}),
    ("spend_in_window", "gte", {"days": 120, "value": 80}, {"A", "D"}),
    ("spend_in_window", "lt", {"days": 120, "value": 80}, {"B", "C"}),
    ("spend_in_window", "lte", {"days": 120, "value": "80.00"}, {"B", "C", "D"}),
    ("spend_in_window", "between", {"days": 120, "value": [100, 450]}, {"A"}),
    ("orders_12m", "eq", 1, {"D"}),
    ("orders_12m", "ne", 1, {"A", "B", "C"}),
    ("orders_12m", "gt", 1, {"A"}),
    ("orders_12m", "gte", 1, {"A", "D"}),
    ("orders_12m", "lt", 1, {"B", "C"}),
    ("orders_12m", "lte", 1, {"B", "C", "D"}),
    ("orders_12m", "between", [1, 2], {"A", "D"}),
    ("spend_12m", "eq", 80, {"D"}),
    ("spend_12m", "ne", 80, {"A", "B", "C"}),
    ("spend_12m", "gt", 80, {"A"}),
    ("spend_12m", "gte", 80, {"A", "D"}),
    ("spend_12m", "lt", 80, {"B", "C"}),
    ("spend_12m", "lte", 80, {"B", "C", "D"}),
    ("spend_12m", "between", [100, 450], {"A"}),
    ("avg_order_value", "eq", 80, {"D"}),
    ("avg_order_value", "ne", 80, {"A", "B", "C"}),
    ("avg_order_value", "gt", 80, {"A", "B"}),
    ("avg_order_value", "gte", 80, {"A", "B", "D"}),
    ("avg_order_value", "lt", 80, {"C"}),
    ("avg_order_value", "lte", 80, {"C", "D"}),
    ("avg_order_value", "between", [100, 500.5], {"A"}),
    ("lifecycle_stage", "in", ["repeat"], {"A"}),
    ("lifecycle_stage", "not_in", ["no_purchase"], {"A", "B", "D"}),
    ("rfm_cell", "in", ["555"], {"A"}),
    ("rfm_cell", "not_in", ["555", "311"], {"B", "C"}),
    ("bought_category", "in", {"values": ["护肤"], "days": 30}, {"A"}),
    ("bought_category", "in", {"values": ["护肤"], "days": None}, {"A", "D"}),
    ("bought_category", "in", {"values": ["彩妆"], "days": 30}, set()),  # D's order was refunded
    ("bought_category", "not_in", {"values": ["护肤"], "days": 30}, {"B", "C", "D"}),
    ("bought_sku", "in", {"values": ["SKU2"], "days": 120}, {"A"}),
    ("bought_sku", "not_in", {"values": ["SKU2", "SKU4"]}, {"C", "D"}),
    ("bought_through_channel", "in", {"values": ["tmall"], "days": 120}, {"A"}),
    ("bought_through_channel", "in", {"values": ["jd"]}, {"B"}),
    ("bought_through_channel", "not_in", {"values": ["store"], "days": 90}, {"B", "C"}),
    ("bought_in_store", "in", lambda w: {"values": [w.s1.pk], "days": 30}, {"A"}),
    ("bought_in_store", "not_in", lambda w: {"values": [w.s1.pk]}, {"B", "C"}),
    ("contacted", "in_last_days", 7, {"A"}),
    ("contacted", "in_last_days", 30, {"A", "B"}),
    ("contacted", "not_in_last_days", 7, {"B", "C", "D"}),
    ("last_task_outcome", "in", ["stop"], {"B"}),
    ("last_task_outcome", "in", ["reached"], {"A"}),
    ("last_task_outcome", "not_in", ["reached"], {"B", "C", "D"}),
]


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"), CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_every_field_and_operator_with_its_negation(world, field, op, value, expected):
    value = value(world) if callable(value) else value
    # when the condition is compiled and run, then exactly the hand-computed members match
    assert names(condition(field, op, value)) == expected
    # and the negated condition matches every other live member, NULLs included
    negated = {"op": "all", "negate": True, "items": [{"field": field, "op": op, "value": value}]}
    assert names(negated) == EVERYONE - expected


def test_every_field_and_operator_is_covered():
    covered = {(field, op) for field, op, _value, _expected in CASES}
    covered |= {("birthday", "in_month")}  # tested on its own below: months depend on today
    every = {(spec.name, op) for spec in segments.FIELD_LIST for op in spec.operators}
    assert every - covered == set()


def test_birthday_in_month(world):
    months = [world.a.birthday.month]
    expected = {
        m.name for m in (world.a, world.b, world.c, world.d) if m.birthday and m.birthday.month in months
    }
    assert "A" in expected
    assert names(condition("birthday", "in_month", months)) == expected
    negated = {
        "op": "any",
        "negate": True,
        "items": [{"field": "birthday", "op": "in_month", "value": months}],
    }
    assert names(negated) == EVERYONE - expected  # B has no birthday: in the negation


def test_gregorian_birthday_of_a_lunar_member_does_not_count(world):
    # C's Gregorian birth date is not in the window (only its lunar anniversary is)
    gregorian_day = world.c.birthday.replace(year=TODAY.year)
    if 0 <= (gregorian_day - TODAY).days <= 2:
        pytest.skip("the lunar and Gregorian anniversaries coincide this year")
    Member.objects.filter(pk=world.c.pk).update(birthday_lunar=False)
    assert "C" not in names(condition("birthday", "in_next_days", 2))


def test_lunar_birthdays_window():
    # 2026-02-17 is the first day of the first lunar month (Spring Festival 2026)
    keys, births = segments._solar_birthdays(datetime.date(2026, 2, 16), 1)
    assert LunarDate(1990, 1, 1).to_solar_date() in births  # 1990-01-27
    assert LunarDate(1990, 12, 29).to_solar_date() in births
    assert {216, 217} <= set(keys)


def test_feb_29_birthdays_are_kept_on_feb_28_in_common_years():
    keys, _births = segments._solar_birthdays(datetime.date(2027, 2, 27), 1)
    assert 229 in keys
    keys, _births = segments._solar_birthdays(datetime.date(2027, 3, 2), 3)
    assert 229 not in keys


# --------------------------------------------------------------------------------------------------
# Hand-computed membership of composite rules


def test_nested_groups_and_negation(world):
    definition = {
        "op": "all",
        "items": [
            {"field": "region", "op": "in", "value": [world.r1.pk]},
            {
                "op": "any",
                "items": [
                    {"field": "days_since_last_purchase", "op": "lte", "value": 30},
                    {"field": "consent_marketing", "op": "granted", "value": "sms"},
                ],
            },
            {
                "op": "all",
                "negate": True,
                "items": [{"field": "tier", "op": "in", "value": [world.silver.pk]}],
            },
        ],
    }
    # East: A, B, D; bought in 30 days or SMS consent: A, B, D; not silver: A, D (C has no tier but is North)
    assert names(definition) == {"A", "D"}


def test_any_group_with_negated_null_condition(world):
    definition = {
        "op": "any",
        "items": [
            {"field": "home_store", "op": "in", "value": [world.s3.pk]},
            {"op": "all", "negate": True, "items": [{"field": "age", "op": "gte", "value": 18}]},
        ],
    }
    # C (Beijing) by store; B (no birthday) by "not an adult": unknown age is not ≥ 18
    assert names(definition) == {"B", "C"}


def test_empty_groups_match_nobody(world):
    assert names({}) == set()  # Segment.definition's default
    assert names({"op": "all", "items": []}) == set()
    assert names({"op": "any", "items": []}) == set()
    with_empty = {
        "op": "any",
        "items": [{"op": "all", "items": []}, {"field": "gender", "op": "in", "value": ["F"]}],
    }
    assert names(with_empty) == {"A"}
    nested_empty_in_all = {
        "op": "all",
        "items": [{"op": "any", "items": []}, {"field": "gender", "op": "in", "value": ["F"]}],
    }
    assert names(nested_empty_in_all) == set()


def test_erased_and_merged_members_never_match(world):
    assert names(condition("tier", "in", [world.gold.pk])) == {"A", "D"}


def test_personalisation_consent_of_a_child_needs_a_guardian(world):
    child = MemberFactory(name="K", home_store=world.s1, birthday=TODAY - datetime.timedelta(days=365 * 10))
    ConsentRecord.objects.create(
        member=child,
        channel="sms",
        purpose="personalisation",
        action="grant",
        source="hq_admin",
        policy_version="p2",
        at=days_ago(1),
    )
    assert "K" not in names(condition("consent_personalisation", "granted", "sms"))
    ConsentRecord.objects.create(
        member=child,
        channel="sms",
        purpose="personalisation",
        action="guardian_grant",
        source="hq_admin",
        policy_version="p2",
        at=days_ago(0),
    )
    assert "K" in names(condition("consent_personalisation", "granted", "sms"))


def test_compiles_to_one_query(world, django_assert_num_queries):
    definition = {
        "op": "all",
        "items": [
            {"field": "gender", "op": "in", "value": ["F", "M"]},
            {"field": "bought_category", "op": "in", "value": {"values": ["护肤"], "days": 365}},
            {"field": "spend_in_window", "op": "gte", "value": {"days": 120, "value": 50}},
            {"field": "contacted", "op": "not_in_last_days", "value": 3},
            {"field": "consent_marketing", "op": "granted", "value": "any"},
        ],
    }
    members = segments.segment_members(definition, today=TODAY)  # compiling reads nothing
    with django_assert_num_queries(1):
        assert {m.name for m in members} == {"D"}


# --------------------------------------------------------------------------------------------------
# Preview


def test_preview_counts_per_region_and_store_with_consent_exclusions(world):
    definition = condition("region", "in", [world.r1.pk, world.r2.pk])
    preview = segments.preview_segment(definition, channel="wecom", today=TODAY)
    assert preview.total == 4
    assert preview.excluded_no_consent == 2  # B and C have no WeCom consent
    assert {(a.name, a.total, a.excluded) for a in preview.by_region} == {("华东", 3, 1), ("华北", 1, 1)}
    assert {(a.id, a.total, a.excluded) for a in preview.by_store} == {
        (world.s1.pk, 2, 0),
        (world.s2.pk, 1, 1),
        (world.s3.pk, 1, 1),
    }
    assert len(preview.sample) == 4
    assert all("****" in m.mobile for m in preview.sample)
    assert {m.name for m in preview.sample} == {"A*", "B*", "C*", "D*"}  # masked, even one letter


def test_preview_in_store_needs_consent_on_any_channel(world):
    preview = segments.preview_segment(
        condition("region", "in", [world.r1.pk, world.r2.pk]), channel="in_store"
    )
    assert preview.excluded_no_consent == 1  # only C has no consent at all


def test_preview_without_channel_and_masked_names(world):
    Member.objects.filter(pk=world.a.pk).update(name="王小明")
    preview = segments.preview_segment(condition("gender", "in", ["F"]), sample_size=20)
    assert preview.excluded_no_consent == 0 and preview.total == 1
    assert preview.sample[0].name == "王**"
    assert preview.sample[0].mobile == "138****" + world.a.mobile[-4:]


def test_preview_query_count_does_not_grow_with_members(world, django_assert_num_queries):
    # savepoint, SET LOCAL jit, the grouped count, release, store names, sample
    definition = condition("tier", "in", [world.gold.pk])
    with django_assert_num_queries(6):
        segments.preview_segment(definition, channel="sms")
    for _ in range(10):
        MemberFactory(tier=world.gold, home_store=StoreFactory())
    with django_assert_num_queries(6):
        preview = segments.preview_segment(definition, channel="sms")
    assert preview.total == 12


def test_preview_refuses_an_unknown_channel(world):
    with translation.override("en"), pytest.raises(ValidationError, match="Unknown channel"):
        segments.preview_segment(condition("gender", "in", ["F"]), channel="fax")


# --------------------------------------------------------------------------------------------------
# Validation


def error_of(definition) -> str:
    with translation.override("en"), pytest.raises(ValidationError) as caught:
        segments.validate_definition(definition)
    return " ".join(caught.value.messages)


def test_unknown_field_is_refused_with_its_name():
    assert "unknown field “salary”" in error_of(condition("salary", "gt", 1))


def test_unknown_operator_is_refused_with_the_allowed_ones():
    message = error_of(condition("tier", "gt", [1]))
    assert "operator “gt”" in message and "tier" in message and "in, not_in" in message


@pytest.mark.parametrize(
    ("field", "op", "value", "fragment"),
    [
        ("tier", "in", [999999], "no tier with id 999999"),
        ("tier", "in", [], "choose at least one value"),
        ("gender", "in", ["X"], "“X” is not a valid choice"),
        ("age", "gt", "old", "a whole number is expected"),
        ("age", "between", [40, 20], "must not be greater"),
        ("age", "gt", 200, "between 0 and 150"),
        ("joined", "on_or_after", "31/01/2026", "a date like 2026-01-31"),
        ("has_guide", "is", "maybe", "yes or no"),
        ("consent_marketing", "granted", "fax", "“fax” is not a valid choice"),
        ("orders_in_window", "gte", 3, "a number of days and a value"),
        ("spend_in_window", "gte", {"days": 30, "value": "lots"}, "a number is expected"),
        ("rfm_cell", "in", ["5"], "three digits"),
        ("bought_category", "in", ["护肤"], "values and a number of days"),
        ("birthday", "in_next_days", 400, "between 0 and 366"),
        ("last_task_outcome", "in", ["happy"], "“happy” is not a valid choice"),
    ],
)
def test_bad_values_are_refused_naming_field_and_reason(field, op, value, fragment):
    message = error_of(condition(field, op, value))
    assert fragment in message
    with translation.override("en"):
        assert f"“{segments.FIELDS[field].label}”" in message


@pytest.mark.parametrize(
    ("definition", "fragment"),
    [
        ([], "a group is expected"),
        ({"op": "some", "items": []}, "“all” or “any”"),
        ({"op": "all", "items": [], "negate": True}, "an empty group cannot be negated"),
        ({"op": "all", "items": [], "negate": "yes"}, "“negate” must be true or false"),
        ({"op": "all", "items": [], "match": "all"}, "unknown key “match”"),
        ({"op": "all", "items": [{"field": "tier"}]}, "item 1: operator “None” cannot be used"),
        ({"op": "all", "items": ["tier"]}, "item 1: a condition needs"),
        (
            {"op": "all", "items": [{"op": "any", "items": [{"field": "x", "op": "in", "value": 1}]}]},
            "item 1.1",
        ),
    ],
)
def test_bad_trees_are_refused_saying_where(definition, fragment):
    assert fragment in error_of(definition)


def test_a_saved_segment_naming_a_deleted_tier_still_compiles(world):
    definition = condition("tier", "in", [world.gold.pk, 999999])
    with pytest.raises(ValidationError):
        segments.validate_definition(definition)
    assert names(definition) == {"A", "D"}


def test_groups_nest_at_most_five_deep():
    tree: dict = {"op": "all", "items": [{"field": "gender", "op": "in", "value": ["F"]}]}
    for _ in range(5):
        tree = {"op": "all", "items": [tree]}
    assert "nest at most 5 deep" in error_of(tree)


def test_validation_normalises_values(world):
    tree = segments.validate_definition(
        {
            "op": "any",
            "negate": False,
            "items": [
                {"field": "tier", "op": "in", "value": [str(world.gold.pk), world.gold.pk]},
                {"field": "spend_12m", "op": "gte", "value": "199.5"},
                {"field": "joined", "op": "between", "value": [" 2024-01-01", "2024-12-31"]},
                {"field": "has_guide", "op": "is", "value": "true"},
            ],
        }
    )
    assert tree == {
        "op": "any",
        "items": [
            {"field": "tier", "op": "in", "value": [world.gold.pk]},
            {"field": "spend_12m", "op": "gte", "value": 199.5},
            {"field": "joined", "op": "between", "value": ["2024-01-01", "2024-12-31"]},
            {"field": "has_guide", "op": "is", "value": True},
        ],
    }


def test_messages_are_translated():
    with translation.override("zh-hans"), pytest.raises(ValidationError) as caught:
        segments.validate_definition(condition("salary", "gt", 1))
    assert "salary" in caught.value.messages[0]
