"""Reads for the store-staff pages. Every queryset here passes through ``scrm.scoping.scoped``."""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from members.models import ContactChannel, Member, MemberTag, Order, OrderLine
from members.phones import normalize_mobile
from scrm.masking import mask_mobile
from scrm.roles import Role
from scrm.scoping import scope_of, scoped

RECENT_ORDERS = 10
MAX_QUERY_LENGTH = 64

STAFF_ROLES = frozenset({Role.STORE_MANAGER, Role.GUIDE})

CONSENT_FLAGS: tuple[tuple[str, str], ...] = (
    (ContactChannel.SMS, "consent_sms"),
    (ContactChannel.CALL, "consent_call"),
    (ContactChannel.WECOM, "consent_wecom"),
    (ContactChannel.EMAIL, "consent_email"),
)


def is_store_staff(user: Any) -> bool:
    """An active guide or store manager (a guide who left has no role any more)."""
    return scope_of(user).role in STAFF_ROLES


def is_store_manager(user: Any) -> bool:
    return scope_of(user).role == Role.STORE_MANAGER


def visible_members(user: Any) -> QuerySet[Member]:
    """The active members ``user`` may see: a guide their own book, a manager their whole store."""
    return scoped(Member.objects.filter(status=Member.Status.ACTIVE), user)


def members_for(user: Any, *, q: str | None = None) -> QuerySet[Member]:
    """``visible_members`` for the list page, searched by ``q`` and with what a row shows joined in.

    ``q`` is the last four digits of the mobile, a full mobile in any format people type, or the
    start of a name. The search runs inside the scope, so nothing outside it is ever found.
    """
    queryset = visible_members(user).select_related("tier", "guide")
    text = (q or "").strip()[:MAX_QUERY_LENGTH]
    if text:
        queryset = queryset.filter(**_search_filter(text))
    return queryset.order_by("-joined_at", "-id")


def _search_filter(text: str) -> dict[str, Any]:
    text = unicodedata.normalize("NFKC", text)  # full-width digits from Chinese keyboards
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) == 4 and digits == text:
        return {"mobile__endswith": digits}
    if len(digits) >= 7:
        try:
            return {"mobile": normalize_mobile(text)}
        except ValidationError:
            # Looks like a number but is not a valid mobile: match nothing rather than a name.
            return {"pk__in": []}
    return {"name__startswith": text}


@dataclass(frozen=True)
class ConsentFlag:
    channel: str
    label: str
    granted: bool


@dataclass(frozen=True)
class MemberCard:
    """Everything the member page shows; the mobile is masked here so the page never holds it."""

    member: Member
    masked_mobile: str
    consents: list[ConsentFlag]
    tags: list[MemberTag]
    orders: list[Order]


def member_card(user: Any, pk: int) -> MemberCard | None:
    """The card of member ``pk``, or None when it is outside ``user``'s scope (or does not exist)."""
    member = visible_members(user).select_related("tier", "guide", "home_store").filter(pk=pk).first()
    if member is None:
        return None
    tags = list(
        scoped(MemberTag.objects.filter(member=member), user)
        .select_related("tag")
        .order_by("tag__group", "tag__name")
    )
    lines = scoped(OrderLine.objects.all(), user).order_by("line_no")
    orders = list(
        scoped(Order.objects.filter(member=member), user)
        .select_related("store")
        .prefetch_related(Prefetch("lines", queryset=lines))
        .order_by("-paid_at", "-id")[:RECENT_ORDERS]
    )
    labels = dict(ContactChannel.choices)
    consents = [
        ConsentFlag(channel=str(channel), label=str(labels[channel]), granted=getattr(member, flag))
        for channel, flag in CONSENT_FLAGS
    ]
    return MemberCard(
        member=member,
        masked_mobile=mask_mobile(member.mobile),
        consents=consents,
        tags=tags,
        orders=orders,
    )


# The export's column headers are the file's contract with the Excel import, which matches them
# by name: they stay in Chinese whatever the user's language (the import also accepts English).
EXPORT_HEADERS: tuple[str, ...] = (
    "会员姓名",
    "手机号（脱敏）",
    "等级",
    "生命周期",
    "专属导购",
    "导购工号",
    "积分",
    "最近购买",
    "订单数",
    "近12个月消费",
    "入会时间",
)
EXPORT_BATCH = 2000
ExportRow = tuple[str, str, str, str, str, str, int, datetime.date | None, int, Decimal, datetime.date]


def export_rows(user: Any) -> Iterator[ExportRow]:
    """One row per member in scope, masked, streamed from the database in batches."""
    stages = dict(Member.Lifecycle.choices)
    rows = (
        visible_members(user)
        .order_by("id")
        .values_list(
            "name",
            "mobile",
            "tier__name",
            "lifecycle_stage",
            "guide__name",
            "guide__employee_no",
            "points_balance",
            "last_purchase_at",
            "order_count",
            "spend_12m",
            "joined_at",
        )
    )
    for name, mobile, tier, stage, guide, employee_no, points, last, orders, spend, joined in rows.iterator(
        chunk_size=EXPORT_BATCH
    ):
        yield (
            name,
            mask_mobile(mobile),
            tier or "",
            str(stages.get(stage, stage)),
            guide or "",
            employee_no or "",
            points,
            timezone.localtime(last).date() if last else None,
            orders,
            spend,
            timezone.localtime(joined).date(),
        )


@dataclass(frozen=True)
class MemberRow:
    """A list row: the member plus the mobile masked on the server (the template never sees it)."""

    member: Member
    masked_mobile: str


def member_rows(members: Iterable[Member]) -> list[MemberRow]:
    return [MemberRow(member=m, masked_mobile=mask_mobile(m.mobile)) for m in members]
