"""Reads for the store-staff pages. Every queryset here passes through ``scrm.scoping.scoped``."""

from __future__ import annotations

import datetime
import operator
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import reduce
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from campaigns.attribution import attribution_by_guide
from campaigns.models import Task
from campaigns.scripts import render_script
from campaigns.work import REACHED_OUTCOMES, contact_allowed
from members.models import ContactChannel, Member, MemberTag, Order, OrderLine
from members.phones import normalize_mobile
from scrm.masking import mask_mobile
from scrm.roles import Role
from scrm.scoping import scope_of, scoped
from stores.models import Guide

from .models import MemberNote

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


# --------------------------------------------------------------------------------------------------
# The workbench: Today, a task, member filters, my numbers, the store board

TODAY_PAGE_SIZE = 30  # one phone screen scrolled a few times; "more" loads the next
BIRTHDAY_SOON_DAYS = 7
NOT_CONTACTED_DAYS = 30
MEMBER_FILTERS = ("birthday", "dormant", "not_contacted", "unassigned")


def own_tasks(user: Any) -> QuerySet[Task]:
    """The tasks the user works themselves (a manager serves members too), inside their scope."""
    scope = scope_of(user)
    return scoped(Task.objects.filter(guide_id=scope.guide_id), user)


@dataclass(frozen=True)
class TaskGroup:
    title: str
    tasks: list[Task]


@dataclass(frozen=True)
class TodayPage:
    groups: list[TaskGroup]
    open_count: int
    overdue_count: int
    done_today: int
    due_today: int
    page: int
    has_next: bool

    @property
    def progress_percent(self) -> int:
        total = self.open_count + self.done_today
        return round(100 * self.done_today / total) if total else 100


def today_page(user: Any, *, now: datetime.datetime | None = None, page: int = 1) -> TodayPage:
    """Open tasks, overdue first then by due time, grouped by campaign; two queries whatever the count."""
    now = now or timezone.now()
    start_of_day = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    end_of_day = start_of_day + datetime.timedelta(days=1)
    mine = own_tasks(user)
    counts = mine.aggregate(
        open_count=Count("pk", filter=Q(state=Task.State.OPEN, opens_at__lte=now)),
        overdue_count=Count("pk", filter=Q(state=Task.State.OPEN, opens_at__lte=now, due_at__lt=now)),
        due_today=Count("pk", filter=Q(state=Task.State.OPEN, opens_at__lte=now, due_at__lt=end_of_day)),
        done_today=Count("pk", filter=Q(state=Task.State.DONE, completed_at__gte=start_of_day)),
    )
    page = max(1, page)
    offset = (page - 1) * TODAY_PAGE_SIZE
    # Ordering by due time already puts the overdue first: they are the ones due before now.
    tasks = list(
        mine.filter(state=Task.State.OPEN, opens_at__lte=now)
        .select_related("member__tier", "run__campaign", "run__journey_step")
        .only(
            "pk", "title", "channel", "due_at", "priority", "run_id", "member_id",
            "member__name", "member__mobile", "member__tier__name", "member__lifecycle_stage",
            "run__campaign__name", "run__journey_step__name",
        )
        .order_by("due_at", "priority", "pk")[offset : offset + TODAY_PAGE_SIZE + 1]
    )  # fmt: skip
    has_next = len(tasks) > TODAY_PAGE_SIZE
    tasks = tasks[:TODAY_PAGE_SIZE]
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        task.is_overdue = task.due_at < now  # type: ignore[attr-defined]
        task.masked_mobile = mask_mobile(task.member.mobile)  # type: ignore[attr-defined]
        groups.setdefault(_task_source(task), []).append(task)
    return TodayPage(
        groups=[TaskGroup(title=title, tasks=items) for title, items in groups.items()],
        page=page,
        has_next=has_next,
        **counts,
    )


def _task_source(task: Task) -> str:
    run = task.run
    if run.campaign_id:
        return run.campaign.name
    if run.journey_step_id:
        return run.journey_step.name
    return task.title


@dataclass(frozen=True)
class TaskCard:
    task: Task
    card: MemberCard
    notes: list[MemberNote]
    script: str
    contact_allowed: bool
    is_overdue: bool


def task_for(user: Any, pk: int) -> Task | None:
    """Task ``pk`` if ``user`` may work on it: a guide their own, a manager any of the store's."""
    return (
        scoped(Task.objects.all(), user)
        .select_related(
            "member__tier", "member__guide", "member__home_store", "store", "guide", "run__campaign"
        )
        .select_related("run__journey_step")
        .filter(pk=pk)
        .first()
    )


def task_to_complete(user: Any, pk: int) -> Task | None:
    """Task ``pk`` with its member (for the consent check), if ``user`` may work on it."""
    return scoped(Task.objects.all(), user).select_related("member").filter(pk=pk).first()


def task_card(user: Any, pk: int, *, now: datetime.datetime | None = None) -> TaskCard | None:
    """Everything the task page shows, or None outside the user's scope (the view answers 404)."""
    task = task_for(user, pk)
    if task is None:
        return None
    now = now or timezone.now()
    card = _card_for(user, task.member, within_task=True)
    script = render_script(
        script_body(task), member=task.member, store=task.store, guide=task.guide, coupon=_coupon(task)
    )
    return TaskCard(
        task=task,
        card=card,
        notes=notes_for(task.member),
        script=script,
        contact_allowed=contact_allowed(task.member, task.channel),
        is_overdue=task.state == Task.State.OPEN and task.due_at < now,
    )


def script_body(task: Task) -> str:
    """The script as frozen on the run when dispatch stored it, else the campaign's or step's script."""
    snapshot = task.run.snapshot or {}
    for key in ("script_body", "script"):
        value = snapshot.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict) and value.get("body"):
            return str(value["body"])
    source = task.run.campaign or task.run.journey_step
    script = getattr(source, "script", None) if source is not None else None
    return script.body if script is not None else ""


def _coupon(task: Task) -> str:
    snapshot = task.run.snapshot or {}
    # Only an issued coupon code; a coupon template's code is not something to send a member.
    value = snapshot.get("coupon") or ""
    return str(value) if isinstance(value, str) else ""


def notes_for(member: Member, *, limit: int = 20) -> list[MemberNote]:
    return list(
        MemberNote.objects.filter(member=member)
        .select_related("author")
        .order_by("-created_at", "-id")[:limit]
    )


def _card_for(user: Any, member: Member, *, within_task: bool = False) -> MemberCard:
    """The member card of an already authorised member (through the member or their task)."""
    tags = list(
        MemberTag.objects.filter(member=member).select_related("tag").order_by("tag__group", "tag__name")
    )
    orders = list(
        Order.objects.filter(member=member)
        .select_related("store")
        .prefetch_related(Prefetch("lines", queryset=OrderLine.objects.order_by("line_no")))
        .order_by("-paid_at", "-id")[: 3 if within_task else RECENT_ORDERS]
    )
    labels = dict(ContactChannel.choices)
    consents = [
        ConsentFlag(channel=str(channel), label=str(labels[channel]), granted=getattr(member, flag))
        for channel, flag in CONSENT_FLAGS
    ]
    return MemberCard(
        member=member, masked_mobile=mask_mobile(member.mobile), consents=consents, tags=tags, orders=orders
    )


def filtered_members(
    user: Any,
    *,
    q: str | None = None,
    tier: str = "",
    stage: str = "",
    flags: Iterable[str] = (),
    now: datetime.datetime | None = None,
) -> QuerySet[Member]:
    """``members_for`` narrowed by the list's filters (tier code, lifecycle stage and the flags)."""
    now = now or timezone.now()
    queryset = members_for(user, q=q)
    if tier:
        queryset = queryset.filter(tier__code=tier)
    if stage in Member.Lifecycle.values:
        queryset = queryset.filter(lifecycle_stage=stage)
    flags = set(flags)
    if "dormant" in flags:
        queryset = queryset.filter(lifecycle_stage__in=[Member.Lifecycle.DORMANT, Member.Lifecycle.LOST])
    if "birthday" in flags:
        today = timezone.localdate(now)
        days = [today + datetime.timedelta(days=n) for n in range(BIRTHDAY_SOON_DAYS + 1)]
        queryset = queryset.filter(
            reduce(operator.or_, (Q(birthday__month=d.month, birthday__day=d.day) for d in days))
        )
    if "not_contacted" in flags:
        since = now - datetime.timedelta(days=NOT_CONTACTED_DAYS)
        queryset = queryset.exclude(
            Exists(Task.objects.filter(member=OuterRef("pk"), state=Task.State.DONE, completed_at__gte=since))
        )
    if "unassigned" in flags:
        queryset = queryset.filter(guide__isnull=True)
    return queryset


def member_page_card(user: Any, pk: int) -> tuple[MemberCard, list[MemberNote]] | None:
    card = member_card(user, pk)
    if card is None:
        return None
    return card, notes_for(card.member)


# My numbers and the store board ---------------------------------------------------------------------


def month_bounds(now: datetime.datetime | None = None) -> tuple[datetime.datetime, datetime.datetime]:
    local = timezone.localtime(now or timezone.now())
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + datetime.timedelta(days=32)).replace(day=1)
    return start, end


@dataclass
class GuideStats:
    guide: Guide
    open: int = 0
    open_this_month: int = 0  # open and due before the month ends: what the completion rate counts
    overdue: int = 0
    done: int = 0
    on_time: int = 0
    expired: int = 0
    reached: int = 0  # members reached this month
    conversions: int = 0
    orders: int = 0
    sales: Decimal = Decimal("0")
    rank: int = 0

    @property
    def completion_rate(self) -> int | None:
        """Done this month out of the tasks due this month: open, done or expired (not cancelled)."""
        total = self.done + self.open_this_month + self.expired
        return round(100 * self.done / total) if total else None

    @property
    def on_time_rate(self) -> int | None:
        return round(100 * self.on_time / self.done) if self.done else None

    @property
    def conversion_rate(self) -> int | None:
        return round(100 * self.conversions / self.reached) if self.reached else None


def store_guide_stats(store_id: int, *, now: datetime.datetime | None = None) -> list[GuideStats]:
    """This month's figures for every active staff member of the store, ranked; three queries in all.

    Rank: by completion rate, then members reached, then attributed sales.
    """
    now = now or timezone.now()
    start, end = month_bounds(now)
    guides = list(Guide.objects.filter(store_id=store_id, status=Guide.Status.ACTIVE).order_by("employee_no"))
    stats = {g.pk: GuideStats(guide=g) for g in guides}
    month = Q(due_at__gte=start, due_at__lt=end) | Q(completed_at__gte=start, completed_at__lt=end)
    rows = (
        Task.objects.filter(store_id=store_id, guide_id__in=list(stats))
        .filter(month | Q(state=Task.State.OPEN))
        .values("guide_id")
        .annotate(
            open=Count("pk", filter=Q(state=Task.State.OPEN)),
            open_this_month=Count("pk", filter=Q(state=Task.State.OPEN, due_at__lt=end)),
            overdue=Count("pk", filter=Q(state=Task.State.OPEN, due_at__lt=now)),
            done=Count("pk", filter=Q(state=Task.State.DONE, completed_at__gte=start, completed_at__lt=end)),
            on_time=Count(
                "pk",
                filter=Q(
                    state=Task.State.DONE,
                    completed_at__gte=start,
                    completed_at__lt=end,
                    completed_at__lte=F("due_at"),
                ),
            ),
            expired=Count("pk", filter=Q(state=Task.State.EXPIRED, due_at__gte=start, due_at__lt=end)),
            reached=Count(
                "member_id",
                distinct=True,
                filter=Q(
                    state=Task.State.DONE,
                    outcome__in=list(REACHED_OUTCOMES),
                    completed_at__gte=start,
                    completed_at__lt=end,
                ),
            ),
        )
    )
    for row in rows:
        target = stats[row.pop("guide_id")]
        for key, value in row.items():
            setattr(target, key, value)
    for guide_id, totals in attribution_by_guide(
        start=start, end=end, guide_ids=list(stats), store_id=store_id
    ).items():
        if guide_id in stats:
            stats[guide_id].conversions = totals.members
            stats[guide_id].orders = totals.orders
            stats[guide_id].sales = totals.sales
    ordered = sorted(
        stats.values(), key=lambda s: (-(s.completion_rate or 0), -s.reached, -s.sales, s.guide.employee_no)
    )
    for position, item in enumerate(ordered, start=1):
        item.rank = position
    return ordered


@dataclass(frozen=True)
class StoreBoard:
    guides: list[GuideStats]
    unassigned_members: int
    queue: list[Task]
    queue_count: int


QUEUE_LIMIT = 50


def store_board(user: Any, *, now: datetime.datetime | None = None) -> StoreBoard:
    scope = scope_of(user)
    now = now or timezone.now()
    queue_qs = scoped(Task.objects.filter(guide__isnull=True, state=Task.State.OPEN), user)
    queue = list(queue_qs.select_related("member").order_by("due_at", "pk")[:QUEUE_LIMIT])
    for task in queue:
        task.masked_mobile = mask_mobile(task.member.mobile)  # type: ignore[attr-defined]
        task.is_overdue = task.due_at < now  # type: ignore[attr-defined]
    return StoreBoard(
        guides=store_guide_stats(scope.store_id, now=now) if scope.store_id else [],
        unassigned_members=visible_members(user).filter(guide__isnull=True).count(),
        queue=queue,
        queue_count=queue_qs.count() if len(queue) >= QUEUE_LIMIT else len(queue),
    )


def store_colleagues(user: Any) -> list[Guide]:
    """Active staff of the manager's store, who can receive tasks and members."""
    return list(
        scoped(Guide.objects.filter(status=Guide.Status.ACTIVE), user).order_by("position", "employee_no")
    )


def open_tasks_of(user: Any, guide_id: int | None) -> list[Task]:
    """A guide's (or the queue's) open tasks, for the manager's reassign page."""
    queryset = scoped(Task.objects.filter(state=Task.State.OPEN), user)
    queryset = queryset.filter(guide__isnull=True) if guide_id is None else queryset.filter(guide_id=guide_id)
    tasks = list(queryset.select_related("member").order_by("due_at", "pk")[:200])
    for task in tasks:
        task.masked_mobile = mask_mobile(task.member.mobile)  # type: ignore[attr-defined]
    return tasks


def member_card_for_work(user: Any, pk: int, *, task: str = "") -> MemberCard | None:
    """The member's card through the member list's scope, or through a task of the user's for them
    (a task may go to a guide who is not the member's exclusive guide)."""
    card = member_card(user, pk)
    if card is not None or not task.isdigit():
        return card
    found = task_for(user, int(task))
    if found is None or found.member_id != pk:
        return None
    return _card_for(user, found.member)
