"""Two stores, each with a manager and two guides, members spread over them, and every scoped record.

Each record is labelled, as it is built, with the store whose manager may see it and the guides who
may see it; the scoping tests compare what ``scoped()`` and the pages return with these labels.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Model
from django.utils import timezone

from members.models import (
    Channel,
    ConsentRecord,
    ContactChannel,
    ExternalIdentity,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    OrderLine,
    PointsEntry,
)
from scrm.roles import Role
from stores.models import Guide, Store
from tests.factories import (
    GuideFactory,
    ManagerFactory,
    MemberFactory,
    OrderFactory,
    OrderLineFactory,
    StoreFactory,
    TagFactory,
    TierFactory,
    UserFactory,
)

SCOPED_MODELS: tuple[type[Model], ...] = (
    Store,
    Guide,
    Member,
    Order,
    OrderLine,
    ConsentRecord,
    PointsEntry,
    MemberTag,
    ExternalIdentity,
    GuideAssignment,
)

HQ_USERS = ("hq_admin", "hq_operator", "auditor", "superuser")
STAFF_USERS = ("manager_A", "manager_B", "guide_A1", "guide_A2", "guide_B1", "guide_B2")
BLIND_USERS = ("no_role", "left_guide")
ALL_USERS = HQ_USERS + STAFF_USERS + BLIND_USERS
# Distinct from the member factory's +86138… so sequences never collide.
MOBILE_PREFIX = {"A": "+861390000", "B": "+861370000"}


@dataclass(frozen=True)
class Row:
    obj: Model
    stores: frozenset[str]  # the stores whose managers see it
    guides: frozenset[str]  # the guides who see it


@dataclass
class World:
    stores: dict[str, Store]
    staff: dict[str, Guide]  # "A1", "A2", "Am" (the manager), "Al" (left) ...
    members: dict[str, Member]
    users: dict[str, Any]
    rows: dict[type[Model], list[Row]] = field(default_factory=dict)

    def add(self, obj: Model, store: str | set[str] | None, guides: set[str] | frozenset[str]) -> None:
        stores = {store} if isinstance(store, str) else (store or set())
        self.rows.setdefault(type(obj), []).append(Row(obj, frozenset(stores), frozenset(guides)))

    def expected(self, user_key: str, model: type[Model]) -> set[int]:
        """Ids of ``model`` that ``user_key`` must see, from the labels alone."""
        rows = self.rows.get(model, [])
        if user_key in HQ_USERS:
            return {r.obj.pk for r in rows}
        if user_key.startswith("manager_"):
            store = user_key.removeprefix("manager_")
            return {r.obj.pk for r in rows if store in r.stores}
        if user_key.startswith("guide_"):
            guide = user_key.removeprefix("guide_")
            return {r.obj.pk for r in rows if guide in r.guides}
        return set()

    def member_ids_for(self, user_key: str) -> set[int]:
        return self.expected(user_key, Member)


def build_world() -> World:
    now = timezone.now()
    gold = TierFactory(code="gold", name="金卡", rank=3)
    stores = {key: StoreFactory(code=f"ST{key}", name=f"{key}店") for key in ("A", "B")}
    staff: dict[str, Guide] = {}
    for key, store in stores.items():
        staff[f"{key}m"] = ManagerFactory(store=store, name=f"店长{key}")
        staff[f"{key}1"] = GuideFactory(store=store, name=f"导购{key}1")
        staff[f"{key}2"] = GuideFactory(store=store, name=f"导购{key}2")
    staff["Al"] = GuideFactory(
        store=stores["A"], name="离职导购", status=Guide.Status.LEFT, left_on=datetime.date(2025, 1, 31)
    )

    users = {
        "hq_admin": UserFactory(role=Role.HQ_ADMIN),
        "hq_operator": UserFactory(role=Role.HQ_OPERATOR),
        "auditor": UserFactory(role=Role.AUDITOR),
        "superuser": UserFactory(is_superuser=True, is_staff=True),
        "no_role": UserFactory(),
        "manager_A": staff["Am"].user,
        "manager_B": staff["Bm"].user,
        "guide_A1": staff["A1"].user,
        "guide_A2": staff["A2"].user,
        "guide_B1": staff["B1"].user,
        "guide_B2": staff["B2"].user,
        "left_guide": staff["Al"].user,
    }
    world = World(stores=stores, staff=staff, members={}, users=users)

    for key, store in stores.items():
        store_guides = {k for k in staff if k.startswith(key)}
        world.add(store, key, store_guides)
        for staff_key in sorted(store_guides):
            world.add(staff[staff_key], key, {staff_key})

    # Member key → (store, guide key or None). "Al1" still points at the guide who left.
    layout = {
        "A1a": ("A", "A1"),
        "A1b": ("A", "A1"),
        "A2a": ("A", "A2"),
        "Ama": ("A", "Am"),
        "An": ("A", None),
        "Al1": ("A", "Al"),
        "B1a": ("B", "B1"),
        "B2a": ("B", "B2"),
        "B2b": ("B", "B2"),
        "Bn": ("B", None),
    }
    tag = TagFactory(name="周末来电")
    index_in_store = {"A": 0, "B": 0}
    for number, (member_key, (store_key, guide_key)) in enumerate(layout.items(), start=1):
        index_in_store[store_key] += 1
        guide = staff[guide_key] if guide_key else None
        guides = {guide_key} if guide_key else set()
        member = MemberFactory(
            # Same last four digits in both stores (…0001, …0002): search must stay in scope.
            mobile=MOBILE_PREFIX[store_key] + f"{index_in_store[store_key]:04d}",
            name=f"会员{member_key}",
            home_store=stores[store_key],
            guide=guide,
            tier=gold if number % 2 else None,
            joined_at=now - datetime.timedelta(days=100 + number),
        )
        world.members[member_key] = member
        world.add(member, store_key, guides)
        order = OrderFactory(member=member, store=stores[store_key], amount=Decimal("299.00"))
        world.add(order, store_key, guides)
        world.add(OrderLineFactory(order=order, line_no=1, name="精华液"), store_key, guides)
        world.add(
            ConsentRecord.objects.create(
                member=member,
                channel=ContactChannel.SMS,
                action=ConsentRecord.Action.GRANT,
                source=ConsentRecord.Source.STORE_POS,
                policy_version="2024-01",
                at=now,
            ),
            store_key,
            guides,
        )
        world.add(
            PointsEntry.objects.create(
                member=member, delta=100, kind=PointsEntry.Kind.EARN, ref=order.external_no
            ),
            store_key,
            guides,
        )
        world.add(
            MemberTag.objects.create(member=member, tag=tag, source=MemberTag.Source.GUIDE), store_key, guides
        )
        world.add(
            ExternalIdentity.objects.create(
                member=member,
                platform=ExternalIdentity.Platform.WECHAT_UNIONID,
                external_id=f"u-{member_key}",
            ),
            store_key,
            guides,
        )
        if guide is not None:
            world.add(
                GuideAssignment.objects.create(
                    member=member, guide=guide, started_at=now, reason=GuideAssignment.Reason.JOINED
                ),
                store_key,
                guides,
            )

    # The history follows the member: A2a's earlier binding to A1 is seen by A2, its guide now.
    world.add(
        GuideAssignment.objects.create(
            member=world.members["A2a"],
            guide=staff["A1"],
            started_at=now - datetime.timedelta(days=90),
            ended_at=now - datetime.timedelta(days=30),
            reason=GuideAssignment.Reason.JOINED,
        ),
        "A",
        {"A2"},
    )
    # A store-A member bought in store B: store B's manager sees the order (not the member), and so
    # does store A's manager, whose member it is; the member's guide sees it through the member.
    cross = OrderFactory(member=world.members["A1a"], store=stores["B"])
    world.add(cross, {"A", "B"}, {"A1"})
    world.add(OrderLineFactory(order=cross, line_no=1), {"A", "B"}, {"A1"})
    # An online order has no store: the member's home store and guide (and HQ) see it.
    online = OrderFactory(member=world.members["A1a"], store=None, channel=Channel.TMALL)
    world.add(online, "A", {"A1"})
    # A walk-in buyer who is not a member: the store's manager sees the order, no guide does.
    walk_in = OrderFactory(member=None, store=stores["A"])
    world.add(walk_in, "A", set())
    world.add(OrderLineFactory(order=walk_in, line_no=1), "A", set())
    return world
