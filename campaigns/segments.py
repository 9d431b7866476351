"""Segments: a validated JSON tree of conditions, compiled through a whitelist into one SQL query.

The definition (a fixed contract: the admin builder, campaigns and journeys all write it)::

    group     = {"op": "all" | "any", "negate": bool (optional), "items": [group | condition, ...]}
    condition = {"field": str, "op": str, "value": ...}

The root is a group; groups nest (at most ``MAX_DEPTH`` deep). An empty group matches nobody, also when
it is negated (``negate`` on an empty group is refused rather than silently matching everybody).

``validate_definition`` returns the normalised tree or raises a translated ``ValidationError`` naming the
bad field, operator or value. ``compile_definition`` turns a tree into one ``Q`` over ``Member``: member
columns directly, related data (tags, orders, order lines, consent ledger, tasks) through ``Exists`` or
``pk IN (subquery)``, so PostgreSQL plans each as a semi- or anti-join. Nothing is evaluated per member in
Python, and no user input ever reaches a lookup name: fields and operators come from ``FIELDS``.

NULLs: each condition is true or false for every member, never unknown. A condition on a missing value
(no birthday, never bought) is false, and its negation (a negated group, or ``ne`` / ``not_in``) is
true: Django adds ``IS NOT NULL`` inside a negated lookup on a nullable column, and ``NOT EXISTS`` is
two-valued. Tests pin this for every nullable field.

Dates are the project's calendar dates (Asia/Shanghai). "In the last N days" means on or after the date
N days before today (so N = 0 is today). Windows over orders count orders that are paid or partially
refunded, with spend net of refunds, as the member metrics do (members.metrics).

Consent: purpose ``marketing`` reads the member's flags, the ledger's projection (members.consent).
Other purposes (personalised targeting, service notices) have no flag: they are evaluated on the ledger
itself with the same rule — the latest event for member × channel × purpose is a grant under a notice
version that asks for the purpose, and a member under 14 needs a guardian's grant.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, ExtractDay, ExtractMonth
from django.db.models.lookups import Exact, GreaterThan, GreaterThanOrEqual, In, LessThan, LessThanOrEqual
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members import consent as consent_rules
from members.models import (
    Channel,
    ConsentRecord,
    ContactChannel,
    Member,
    MemberTag,
    Order,
    OrderLine,
    Tag,
    Tier,
)
from scrm.masking import mask_mobile, mask_name
from stores.models import Region, Store

from .models import CONSENT_CHANNEL, Task, TaskChannel

MAX_DEPTH = 5
MAX_ITEMS = 50  # per group
MAX_CONDITIONS = 100  # in the whole tree
MAX_LIST = 500  # values in one list
MAX_DAYS = 3660  # ten years: windows and "days since"

# Orders that count as purchases (members.metrics counts the same ones).
COUNTED_ORDER_STATUSES = (Order.Status.PAID, Order.Status.PARTIALLY_REFUNDED)

NOBODY = Q(pk__in=[])


# --------------------------------------------------------------------------------------------------
# Operators


OPERATOR_LABELS: dict[str, Promise] = {
    "eq": gettext_lazy("equals"),
    "ne": gettext_lazy("does not equal"),
    "gt": gettext_lazy("more than"),
    "gte": gettext_lazy("at least"),
    "lt": gettext_lazy("less than"),
    "lte": gettext_lazy("at most"),
    "between": gettext_lazy("between"),
    "in": gettext_lazy("is one of"),
    "not_in": gettext_lazy("is none of"),
    "is": gettext_lazy("is"),
    "on_or_after": gettext_lazy("on or after"),
    "on_or_before": gettext_lazy("on or before"),
    "in_last_days": gettext_lazy("in the last N days"),
    "not_in_last_days": gettext_lazy("not in the last N days"),
    "in_next_days": gettext_lazy("in the next N days"),
    "in_month": gettext_lazy("in month"),
    "has_any": gettext_lazy("has any of"),
    "has_all": gettext_lazy("has all of"),
    "has_none": gettext_lazy("has none of"),
    "granted": gettext_lazy("granted on"),
    "not_granted": gettext_lazy("not granted on"),
}

NUMBER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
LIST_OPS = ("in", "not_in")
DATE_OPS = ("on_or_after", "on_or_before", "between", "in_last_days")
TAG_OPS = ("has_any", "has_all", "has_none")
CONSENT_OPS = ("granted", "not_granted")


# --------------------------------------------------------------------------------------------------
# Context handed to every compiler


@dataclass(frozen=True)
class Context:
    today: datetime.date

    def start_of(self, day: datetime.date) -> datetime.datetime:
        """Midnight at the start of ``day`` in the project's time zone (an aware datetime)."""
        return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min), _project_zone())

    def since(self, days: int) -> datetime.datetime:
        """Start of the window "in the last ``days`` days": midnight of the date ``days`` days ago."""
        return self.start_of(self.today - datetime.timedelta(days=days))


def _project_zone() -> datetime.tzinfo:
    return timezone.get_default_timezone()


def local_today() -> datetime.date:
    return timezone.localdate(timezone.now(), _project_zone())


# --------------------------------------------------------------------------------------------------
# Value parsing (each returns the normalised JSON value or raises ValidationError)


class _Bad(Exception):
    """Raised by a value parser; turned into a ValidationError naming field and operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _int(value: Any, *, low: int = 0, high: int = 10**9) -> int:
    if isinstance(value, bool):
        raise _Bad(_("a whole number is expected"))
    if isinstance(value, str):
        value = value.strip()
    try:
        number = int(str(value)) if not isinstance(value, float) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise _Bad(_("a whole number is expected"))
    if not low <= number <= high:
        raise _Bad(_("the number must be between %(low)s and %(high)s") % {"low": low, "high": high})
    return number


def _decimal(value: Any) -> int | float:
    if isinstance(value, bool) or value is None:
        raise _Bad(_("a number is expected"))
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _Bad(_("a number is expected")) from None
    if not number.is_finite() or abs(number) >= Decimal(10) ** 12:
        raise _Bad(_("a number is expected"))
    number = number.quantize(Decimal("0.01"))
    return int(number) if number == number.to_integral_value() else float(number)


def _date(value: Any) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    try:
        return datetime.date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise _Bad(_("a date like 2026-01-31 is expected")) from None


def _list(value: Any, item: Callable[[Any], Any]) -> list[Any]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise _Bad(_("choose at least one value"))
    if len(value) > MAX_LIST:
        raise _Bad(_("at most %(count)s values") % {"count": MAX_LIST})
    seen: list[Any] = []
    for raw in value:
        parsed = item(raw)
        if parsed not in seen:
            seen.append(parsed)
    return seen


def _choice(choices: Callable[[], Iterable[tuple[Any, Any]]]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        allowed = {str(key) for key, _label in choices()}
        text = str(raw).strip()
        if text not in allowed:
            raise _Bad(_("“%(value)s” is not a valid choice") % {"value": text})
        return text

    return parse


# Whether ids (tiers, stores, regions, tags) must exist: when a segment is saved, yes; when a saved
# segment is compiled, no — a store closed or a tag deleted since then simply matches nobody.
_CHECK_REFERENCES: contextvars.ContextVar[bool] = contextvars.ContextVar("check_references", default=True)


def _ids(model: Any) -> Callable[[Any], list[int]]:
    def parse(value: Any) -> list[int]:
        ids = _list(value, lambda raw: _int(raw, low=1, high=2**31 - 1))
        if not _CHECK_REFERENCES.get():
            return ids
        found = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        missing = [str(pk) for pk in ids if pk not in found]
        if missing:
            raise _Bad(
                _("no %(model)s with id %(ids)s")
                % {"model": model._meta.verbose_name, "ids": ", ".join(missing)}
            )
        return ids

    return parse


def _text(raw: Any) -> str:
    text = str(raw).strip() if raw is not None else ""
    if not text or len(text) > 64:
        raise _Bad(_("a text of 1 to 64 characters is expected"))
    return text


_RFM_CELL = re.compile(r"^[1-9]{3}$")


def _rfm(raw: Any) -> str:
    text = str(raw).strip()
    if not _RFM_CELL.match(text):
        raise _Bad(_("an RFM cell is three digits, e.g. 555"))
    return text


def _number_value(op: str, value: Any, parse: Callable[[Any], Any]) -> Any:
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise _Bad(_("two numbers are expected: from and to"))
        low, high = parse(value[0]), parse(value[1])
        if low > high:
            raise _Bad(_("“from” must not be greater than “to”"))
        return [low, high]
    return parse(value)


def _window_value(op: str, value: Any, parse: Callable[[Any], Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(_("a number of days and a value are expected"))
    return {
        "days": _int(value.get("days"), low=0, high=MAX_DAYS),
        "value": _number_value(op, value.get("value"), parse),
    }


def _purchase_value(item: Callable[[Any], Any]) -> Callable[[str, Any], dict[str, Any]]:
    def parse(op: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Bad(_("values and a number of days are expected"))
        days = value.get("days")
        return {
            "values": item(value.get("values")),
            "days": None if days in (None, "") else _int(days, low=0, high=MAX_DAYS),
        }

    return parse


# --------------------------------------------------------------------------------------------------
# Compilers


def _lookup_q(path: str, op: str, value: Any) -> Q:
    """Comparison ops on a column; ``ne`` and ``not_in`` are the negations (NULL rows included)."""
    if op == "eq":
        return Q(**{path: value})
    if op == "ne":
        return ~Q(**{path: value})
    if op in ("gt", "gte", "lt", "lte"):
        return Q(**{f"{path}__{op}": value})
    if op == "between":
        return Q(**{f"{path}__gte": value[0], f"{path}__lte": value[1]})
    if op == "in":
        return Q(**{f"{path}__in": value})
    if op == "not_in":
        return ~Q(**{f"{path}__in": value})
    raise AssertionError(op)


def _money(value: Any) -> Any:
    if isinstance(value, list):
        return [Decimal(str(v)) for v in value]
    return Decimal(str(value))


def _integer_scale(op: str, value: Any, *, at_least: Callable[[int], Q], below: Callable[[int], Q]) -> Q:
    """Comparisons on a whole-number quantity derived from a column (age, days since …).

    ``at_least(n)`` is the Q for "quantity >= n", ``below(n)`` for "quantity < n"; both are false when
    the column is NULL, so ``ne`` (their negation) includes NULL rows.
    """
    if op == "eq":
        return at_least(value) & below(value + 1)
    if op == "ne":
        return ~(at_least(value) & below(value + 1))
    if op == "gt":
        return at_least(value + 1)
    if op == "gte":
        return at_least(value)
    if op == "lt":
        return below(value)
    if op == "lte":
        return below(value + 1)
    if op == "between":
        return at_least(value[0]) & below(value[1] + 1)
    raise AssertionError(op)


def _years_before(day: datetime.date, years: int) -> datetime.date:
    """The same calendar day ``years`` earlier; 29 February becomes 28 February in a common year."""
    year = day.year - years
    if year < datetime.MINYEAR:
        return datetime.date.min
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


def _compile_age(op: str, value: Any, ctx: Context) -> Q:
    # age >= n  <=>  born on or before the same day n years ago.
    def at_least(n: int) -> Q:
        return Q(birthday__lte=_years_before(ctx.today, n))

    def below(n: int) -> Q:
        return Q(birthday__gt=_years_before(ctx.today, n))

    return _integer_scale(op, value, at_least=at_least, below=below)


def _compile_days_since_purchase(op: str, value: Any, ctx: Context) -> Q:
    # days since >= n  <=>  last purchase on or before the date n days ago, i.e. before the next midnight.
    def at_least(n: int) -> Q:
        return Q(last_purchase_at__lt=ctx.since(n - 1))

    def below(n: int) -> Q:
        return Q(last_purchase_at__gte=ctx.since(n - 1))

    return _integer_scale(op, value, at_least=at_least, below=below)


def _compile_date(path: str) -> Callable[[str, Any, Context], Q]:
    def compile_(op: str, value: Any, ctx: Context) -> Q:
        if op == "in_last_days":
            return Q(**{f"{path}__gte": ctx.since(value)})
        if op == "on_or_after":
            return Q(**{f"{path}__gte": ctx.start_of(datetime.date.fromisoformat(value))})
        next_day = datetime.timedelta(days=1)
        if op == "on_or_before":
            return Q(**{f"{path}__lt": ctx.start_of(datetime.date.fromisoformat(value) + next_day)})
        if op == "between":
            low, high = (datetime.date.fromisoformat(v) for v in value)
            return Q(**{f"{path}__gte": ctx.start_of(low), f"{path}__lt": ctx.start_of(high + next_day)})
        raise AssertionError(op)

    return compile_


def _month_day_key(day: datetime.date) -> int:
    return day.month * 100 + day.day


@functools.lru_cache(maxsize=64)
def _solar_birthdays(today: datetime.date, days: int) -> tuple[tuple[int, ...], tuple[datetime.date, ...]]:
    """Birthdays falling in ``today`` … ``today + days``.

    Returns (month*100+day keys for Gregorian birthdays, birth dates for lunar birthdays). A 29 February
    birthday is celebrated on 28 February in a common year. A lunar birthday is the anniversary of the
    lunar month and day of birth; born in a leap month, it is kept in the ordinary month of that number;
    born on day 30 of a month that has 29 days this year, it is kept on day 29.
    """
    from lunardate import LunarDate

    window = [today + datetime.timedelta(days=n) for n in range(days + 1)]
    keys: set[int] = set()
    for day in window:
        keys.add(_month_day_key(day))
        if day.month == 2 and day.day == 28 and not _is_leap(day.year):
            keys.add(229)

    # The lunar (month, day) pairs celebrated in the window.
    lunar_pairs: set[tuple[int, int]] = set()
    for day in window:
        try:
            lunar = LunarDate.from_solar_date(day.year, day.month, day.day)
        except ValueError:
            continue
        if lunar.is_leap_month:
            continue  # an ordinary month's birthday is not kept again in the leap month
        lunar_pairs.add((lunar.month, lunar.day))
        if lunar.day == 29 and _lunar_month_days(lunar.year, lunar.month) == 29:
            lunar_pairs.add((lunar.month, 30))
    # Every Gregorian birth date, from 1900 (the library's first year) to today, with such a lunar date.
    births: set[datetime.date] = set()
    for year in range(1900, today.year + 1):
        for month, day in lunar_pairs:
            for leap in (False, True):
                try:
                    solar = LunarDate(year, month, day, leap).to_solar_date()
                except ValueError:
                    continue
                if solar <= today:
                    births.add(solar)
    return tuple(sorted(keys)), tuple(sorted(births))


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _lunar_month_days(year: int, month: int) -> int:
    from lunardate import LunarDate

    try:
        LunarDate(year, month, 30).to_solar_date()
    except ValueError:
        return 29
    return 30


def _compile_birthday(op: str, value: Any, ctx: Context) -> Q:
    if op == "in_month":
        return Q(birthday__month__in=value)
    if op == "in_next_days":
        keys, lunar_births = _solar_birthdays(ctx.today, value)
        # month*100+day of the birthday, compared with the window's keys: no per-member Python.
        key = ExpressionWrapper(
            ExtractMonth("birthday") * 100 + ExtractDay("birthday"), output_field=IntegerField()
        )
        solar = Q(birthday_lunar=False, birthday__isnull=False) & Q(In(key, list(keys)))
        lunar = Q(birthday_lunar=True, birthday__in=list(lunar_births)) if lunar_births else NOBODY
        return solar | lunar
    raise AssertionError(op)


def _compile_column(path: str, *, money: bool = False) -> Callable[[str, Any, Context], Q]:
    def compile_(op: str, value: Any, ctx: Context) -> Q:
        return _lookup_q(path, op, _money(value) if money else value)

    return compile_


def _compile_has_guide(op: str, value: Any, ctx: Context) -> Q:
    return Q(guide__isnull=not value)


def _compile_tags(op: str, value: Any, ctx: Context) -> Q:
    def has(tag_id: int) -> Exists:
        return Exists(MemberTag.objects.filter(member=OuterRef("pk"), tag_id=tag_id))

    if op == "has_any":
        return Q(Exists(MemberTag.objects.filter(member=OuterRef("pk"), tag_id__in=value)))
    if op == "has_none":
        return ~Q(Exists(MemberTag.objects.filter(member=OuterRef("pk"), tag_id__in=value)))
    if op == "has_all":
        return functools.reduce(operator.and_, (Q(has(tag_id)) for tag_id in value))
    raise AssertionError(op)


CONSENT_FLAGS = consent_rules.CONSENT_FLAG  # contact channel -> member flag (marketing purpose)


def _consent_ledger_q(channel: str, purpose: str, ctx: Context) -> Q:
    """The consent rule for a purpose without a flag, on the ledger (see members.consent)."""
    versions = [
        version for version, purposes in consent_rules.notice_purposes().items() if purpose in purposes
    ]
    if not versions:
        return NOBODY
    later = ConsentRecord.objects.filter(member=OuterRef("member"), channel=channel, purpose=purpose).filter(
        Q(at__gt=OuterRef("at")) | Q(at=OuterRef("at"), id__gt=OuterRef("id"))
    )
    adult_or_unknown = Q(member__birthday__isnull=True) | Q(
        member__birthday__lte=consent_rules.guardian_age_cutoff(ctx.today)
    )
    granted = ConsentRecord.objects.filter(
        member=OuterRef("pk"), channel=channel, purpose=purpose, policy_version__in=versions
    ).filter(
        Q(action=ConsentRecord.Action.GUARDIAN_GRANT)
        | (Q(action=ConsentRecord.Action.GRANT) & adult_or_unknown)
    )
    return Q(Exists(granted.filter(~Exists(later))))


def consent_q(channel: str, purpose: str = ConsentRecord.Purpose.MARKETING, *, today=None) -> Q:
    """Members with consent on a contact channel (``"any"``: on at least one) for a purpose."""
    ctx = Context(today=today or local_today())
    channels = list(CONSENT_FLAGS) if channel == "any" else [channel]
    if purpose == ConsentRecord.Purpose.MARKETING:
        parts = [Q(**{CONSENT_FLAGS[c]: True}) for c in channels]
    else:
        parts = [_consent_ledger_q(c, purpose, ctx) for c in channels]
    return functools.reduce(operator.or_, parts)


def channel_consent_q(channel: str | None) -> Q:
    """Members a task on ``channel`` (campaigns.models.TaskChannel) may be created for.

    A remote channel needs marketing consent on its contact channel; ``in_store`` (no remote contact,
    still a marketing approach) needs marketing consent on at least one channel. ``None``: everybody.
    """
    if channel is None:
        return ~NOBODY
    contact = CONSENT_CHANNEL[TaskChannel(channel)]
    return consent_q(contact or "any")


def _compile_consent(purpose: str) -> Callable[[str, Any, Context], Q]:
    def compile_(op: str, value: Any, ctx: Context) -> Q:
        q = consent_q(value, purpose, today=ctx.today)
        return q if op == "granted" else ~q

    return compile_


def _counted_orders(ctx: Context, days: int | None) -> QuerySet[Order]:
    orders = Order.objects.filter(status__in=COUNTED_ORDER_STATUSES, member__isnull=False)
    if days is not None:
        orders = orders.filter(paid_at__gte=ctx.since(days))
    return orders


def _compile_window(aggregate: str) -> Callable[[str, Any, Context], Q]:
    """Orders or spend in the last N days, compared with a number.

    A correlated sub-select per member (served by the index on orders (member, paid_at)): PostgreSQL
    evaluates it last, only for the members the cheaper conditions left, which is what a segment with
    several conditions needs. A member without orders in the window has 0, never NULL.
    """

    def compile_(op: str, value: Any, ctx: Context) -> Q:
        days, target = value["days"], value["value"]
        # "any order in the window" / "none": a semi- or anti-join the planner can order freely, instead
        # of a sub-select per member. (Net spend per order is never negative, so spend > 0 is "some
        # order with a net amount".)
        existence = _as_existence(op, target, whole=aggregate == "orders")
        if existence is not None:
            orders = _counted_orders(ctx, days).filter(member=OuterRef("pk"))
            if aggregate == "spend":
                orders = orders.filter(amount__gt=F("refunded_amount"))
            q = Q(Exists(orders))
            return q if existence else ~q
        if aggregate == "spend":
            target = _money(target)
            metric: Any = Sum(F("amount") - F("refunded_amount"))
            zero: Any = Value(Decimal(0), output_field=DecimalField(max_digits=14, decimal_places=2))
        else:
            metric = Count("pk")
            zero = Value(0)
        per_member = (
            _counted_orders(ctx, days)
            .filter(member=OuterRef("pk"))
            .order_by()
            .values("member_id")
            .annotate(metric=metric)
            .values("metric")
        )
        total = Coalesce(Subquery(per_member[:1]), zero)
        return _expression_q(total, op, target)

    return compile_


def _as_existence(op: str, target: Any, *, whole: bool) -> bool | None:
    """True when a comparison on a total (never negative) means "total > 0", False when it means
    "total = 0", None otherwise. ``whole``: the total is a count, so ">= 1" is "> 0"."""
    zero, one = Decimal(0), Decimal(1)
    if op == "between":
        low, high = Decimal(str(target[0])), Decimal(str(target[1]))
        return False if low <= zero == high else None
    target = Decimal(str(target))
    if (op in ("gt", "ne") and target == zero) or (whole and op == "gte" and target == one):
        return True
    if (op in ("eq", "lte") and target == zero) or (whole and op == "lt" and target == one):
        return False
    return None


_LOOKUPS = {
    "eq": Exact,
    "gt": GreaterThan,
    "gte": GreaterThanOrEqual,
    "lt": LessThan,
    "lte": LessThanOrEqual,
}


def _expression_q(expression: Any, op: str, target: Any) -> Q:
    """A comparison on a (never NULL) expression."""
    if op == "between":
        return Q(GreaterThanOrEqual(expression, target[0])) & Q(LessThanOrEqual(expression, target[1]))
    if op == "ne":
        return ~Q(Exact(expression, target))
    return Q(_LOOKUPS[op](expression, target))


def _compile_purchase(kind: str) -> Callable[[str, Any, Context], Q]:
    """Bought (``in``) or never bought (``not_in``) a category / SKU / through a channel / in a store."""

    def compile_(op: str, value: Any, ctx: Context) -> Q:
        orders = _counted_orders(ctx, value["days"])
        values = value["values"]
        if kind in ("category", "sku"):
            lines = OrderLine.objects.filter(
                order__member=OuterRef("pk"),
                order__status__in=COUNTED_ORDER_STATUSES,
                **{f"{kind}__in": values},
            )
            if value["days"] is not None:
                lines = lines.filter(order__paid_at__gte=ctx.since(value["days"]))
            q = Q(Exists(lines))
        else:
            path = "channel__in" if kind == "channel" else "store_id__in"
            q = Q(Exists(orders.filter(member=OuterRef("pk"), **{path: values})))
        return q if op == "in" else ~q

    return compile_


def _compile_contacted(op: str, value: Any, ctx: Context) -> Q:
    q = Q(Exists(Task.objects.filter(member=OuterRef("pk"), created_at__gte=ctx.since(value))))
    return q if op == "in_last_days" else ~q


def _compile_last_outcome(op: str, value: Any, ctx: Context) -> Q:
    """The outcome of the member's latest completed task (by completion time, then id)."""
    later = Task.objects.filter(member=OuterRef("member"), state=Task.State.DONE).filter(
        Q(completed_at__gt=OuterRef("completed_at"))
        | Q(completed_at=OuterRef("completed_at"), id__gt=OuterRef("id"))
    )
    last = Task.objects.filter(member=OuterRef("pk"), state=Task.State.DONE, outcome__in=value)
    q = Q(Exists(last.filter(~Exists(later))))
    return q if op == "in" else ~q


# --------------------------------------------------------------------------------------------------
# The whitelist


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: Promise
    group: Promise
    operators: tuple[str, ...]
    # Validates and normalises the value for an operator; raises _Bad.
    parse: Callable[[str, Any], Any]
    compile: Callable[[str, Any, Context], Q]
    # The value widget the admin builder shows (see templates/admin/campaigns/segment/).
    widget: str
    choices: Callable[[], list[tuple[Any, str]]] | None = None
    help_text: Promise | str = ""


def _per_op(parsers: dict[str, Callable[[Any], Any]]) -> Callable[[str, Any], Any]:
    def parse(op: str, value: Any) -> Any:
        return parsers[op](value)

    return parse


def _number_parser(parse: Callable[[Any], Any]) -> Callable[[str, Any], Any]:
    return lambda op, value: _number_value(op, value, parse)


def _list_parser(item: Callable[[Any], Any]) -> Callable[[str, Any], Any]:
    return lambda op, value: _list(value, item)


def _ids_parser(model: Any) -> Callable[[str, Any], Any]:
    parse = _ids(model)
    return lambda op, value: parse(value)


def _days(value: Any) -> int:
    return _int(value, low=0, high=MAX_DAYS)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "no"):
        return False
    raise _Bad(_("yes or no is expected"))


def _date_parser(op: str, value: Any) -> Any:
    if op == "in_last_days":
        return _days(value)
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise _Bad(_("two dates are expected: from and to"))
        low, high = _date(value[0]), _date(value[1])
        if low > high:
            raise _Bad(_("“from” must not be after “to”"))
        return [low, high]
    return _date(value)


def _month(value: Any) -> int:
    return _int(value, low=1, high=12)


def _model_choices(model: Any, label: Callable[[Any], str] = str) -> Callable[[], list[tuple[Any, str]]]:
    return lambda: [(obj.pk, label(obj)) for obj in model.objects.all()]


def _consent_channel_choices() -> list[tuple[Any, str]]:
    return [("any", str(_("any channel"))), *((c.value, str(c.label)) for c in ContactChannel)]


def _lazy_choices(choices: Any) -> Callable[[], list[tuple[Any, str]]]:
    return lambda: [(key, str(label)) for key, label in choices]


def _lifecycle_choices() -> list[tuple[Any, str]]:
    return [(key, str(label)) for key, label in Member.Lifecycle.choices]


def _month_choices() -> list[tuple[Any, str]]:
    return [(month, str(month)) for month in range(1, 13)]


def _city_choices() -> list[tuple[Any, str]]:
    return [(city, city) for city in Store.objects.order_by("city").values_list("city", flat=True).distinct()]


def _store_label(store: Store) -> str:
    return f"{store.code} {store.name}"


ATTRIBUTES = gettext_lazy("Member")
CONSENT = gettext_lazy("Consent")
TAGS = gettext_lazy("Tags")
METRICS = gettext_lazy("Purchase metrics")
PURCHASES = gettext_lazy("Purchases")
CONTACT = gettext_lazy("Contact history")

_category_or_sku = _list_parser(_text)


FIELD_LIST: list[FieldSpec] = [
    # Member attributes
    FieldSpec("tier", gettext_lazy("tier"), ATTRIBUTES, LIST_OPS, _ids_parser(Tier),
              _compile_column("tier_id"), "multi", _model_choices(Tier)),
    FieldSpec("home_store", gettext_lazy("home store"), ATTRIBUTES, LIST_OPS, _ids_parser(Store),
              _compile_column("home_store_id"), "multi", _model_choices(Store, _store_label)),
    FieldSpec("region", gettext_lazy("region"), ATTRIBUTES, LIST_OPS, _ids_parser(Region),
              _compile_column("home_store__region_id"), "multi", _model_choices(Region)),
    FieldSpec("city", gettext_lazy("city"), ATTRIBUTES, LIST_OPS, _list_parser(_text),
              _compile_column("home_store__city"), "multi",
              _city_choices),
    FieldSpec("gender", gettext_lazy("gender"), ATTRIBUTES, LIST_OPS,
              _list_parser(_choice(lambda: Member.Gender.choices)), _compile_column("gender"), "multi",
              _lazy_choices(Member.Gender.choices)),
    FieldSpec("age", gettext_lazy("age"), ATTRIBUTES, NUMBER_OPS,
              _number_parser(lambda v: _int(v, low=0, high=150)), _compile_age, "number",
              help_text=gettext_lazy("Members without a birthday have no age.")),
    FieldSpec("birthday", gettext_lazy("birthday"), ATTRIBUTES, ("in_next_days", "in_month"),
              _per_op({"in_next_days": lambda v: _int(v, low=0, high=366),
                       "in_month": lambda v: _list(v, _month)}),
              _compile_birthday, "birthday", _month_choices,
              help_text=gettext_lazy("Lunar birthdays are matched by the lunar calendar.")),
    FieldSpec("joined", gettext_lazy("joined"), ATTRIBUTES, DATE_OPS, _date_parser,
              _compile_date("joined_at"), "date"),
    FieldSpec("join_channel", gettext_lazy("join channel"), ATTRIBUTES, LIST_OPS,
              _list_parser(_choice(lambda: Channel.choices)), _compile_column("join_channel"), "multi",
              _lazy_choices(Channel.choices)),
    FieldSpec("points_balance", gettext_lazy("points balance"), ATTRIBUTES, NUMBER_OPS,
              _number_parser(lambda v: _int(v, low=0)), _compile_column("points_balance"), "number"),
    FieldSpec("has_guide", gettext_lazy("has an exclusive guide"), ATTRIBUTES, ("is",),
              lambda op, v: _bool(v), _compile_has_guide, "bool"),
    # Consent
    FieldSpec("consent_marketing", gettext_lazy("marketing consent"), CONSENT, CONSENT_OPS,
              lambda op, v: _choice(_consent_channel_choices)(v), _compile_consent("marketing"), "choice",
              _consent_channel_choices),
    FieldSpec("consent_personalisation", gettext_lazy("personalised targeting consent"), CONSENT,
              CONSENT_OPS, lambda op, v: _choice(_consent_channel_choices)(v),
              _compile_consent("personalisation"), "choice", _consent_channel_choices),
    FieldSpec("consent_service", gettext_lazy("service notices consent"), CONSENT, CONSENT_OPS,
              lambda op, v: _choice(_consent_channel_choices)(v), _compile_consent("service"), "choice",
              _consent_channel_choices),
    # Tags
    FieldSpec("tags", gettext_lazy("tags"), TAGS, TAG_OPS, _ids_parser(Tag), _compile_tags, "multi",
              _model_choices(Tag)),
    # Metrics
    FieldSpec("days_since_last_purchase", gettext_lazy("days since the last purchase"), METRICS,
              NUMBER_OPS, _number_parser(_days), _compile_days_since_purchase, "number",
              help_text=gettext_lazy("Members who never bought have no value here.")),
    FieldSpec("orders_in_window", gettext_lazy("orders in the last N days"), METRICS, NUMBER_OPS,
              lambda op, v: _window_value(op, v, lambda x: _int(x, low=0)), _compile_window("orders"),
              "window"),
    FieldSpec("spend_in_window", gettext_lazy("spend in the last N days (yuan)"), METRICS, NUMBER_OPS,
              lambda op, v: _window_value(op, v, _decimal), _compile_window("spend"), "window"),
    FieldSpec("orders_12m", gettext_lazy("orders in 12 months"), METRICS, NUMBER_OPS,
              _number_parser(lambda v: _int(v, low=0)), _compile_column("orders_12m"), "number"),
    FieldSpec("spend_12m", gettext_lazy("spend in 12 months (yuan)"), METRICS, NUMBER_OPS,
              _number_parser(_decimal), _compile_column("spend_12m", money=True), "number"),
    FieldSpec("avg_order_value", gettext_lazy("average order value (yuan)"), METRICS, NUMBER_OPS,
              _number_parser(_decimal), _compile_column("avg_order_value", money=True), "number"),
    FieldSpec("lifecycle_stage", gettext_lazy("lifecycle stage"), METRICS, LIST_OPS,
              _list_parser(_choice(lambda: Member.Lifecycle.choices)), _compile_column("lifecycle_stage"),
              "multi", _lifecycle_choices),
    FieldSpec("rfm_cell", gettext_lazy("RFM cell"), METRICS, LIST_OPS, _list_parser(_rfm),
              _compile_column("rfm_cell"), "tags",
              help_text=gettext_lazy("Three digits: recency, frequency, monetary score, e.g. 555.")),
    # Purchases
    FieldSpec("bought_category", gettext_lazy("bought category"), PURCHASES, LIST_OPS,
              _purchase_value(lambda v: _list(v, _text)), _compile_purchase("category"), "purchase_text"),
    FieldSpec("bought_sku", gettext_lazy("bought SKU"), PURCHASES, LIST_OPS,
              _purchase_value(lambda v: _list(v, _text)), _compile_purchase("sku"), "purchase_text"),
    FieldSpec("bought_through_channel", gettext_lazy("bought through channel"), PURCHASES, LIST_OPS,
              _purchase_value(lambda v: _list(v, _choice(lambda: Channel.choices))),
              _compile_purchase("channel"), "purchase_multi", _lazy_choices(Channel.choices)),
    FieldSpec("bought_in_store", gettext_lazy("bought in store"), PURCHASES, LIST_OPS,
              _purchase_value(_ids(Store)), _compile_purchase("store"), "purchase_multi",
              _model_choices(Store, _store_label)),
    # Contact history
    FieldSpec("contacted", gettext_lazy("contacted by a task"), CONTACT, ("in_last_days", "not_in_last_days"),
              lambda op, v: _days(v), _compile_contacted, "days"),
    FieldSpec("last_task_outcome", gettext_lazy("outcome of the last completed task"), CONTACT, LIST_OPS,
              _list_parser(_choice(lambda: Task.Outcome.choices)), _compile_last_outcome, "multi",
              _lazy_choices(Task.Outcome.choices)),
]  # fmt: skip

FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in FIELD_LIST}


# --------------------------------------------------------------------------------------------------
# Validation


def validate_definition(definition: Any, *, check_references: bool = True) -> dict[str, Any]:
    """The normalised tree, or a translated ``ValidationError`` naming what is wrong and where.

    ``check_references`` also checks that the ids named (tiers, stores, regions, tags) exist. ``{}``
    (a new segment's default) is the empty group: it matches nobody.
    """
    if definition == {}:
        definition = {"op": "all", "items": []}
    token = _CHECK_REFERENCES.set(check_references)
    try:
        return _validate_group(definition, path=[], depth=1, counter=[0])
    finally:
        _CHECK_REFERENCES.reset(token)


def _where(path: list[int]) -> str:
    if not path:
        return str(_("the top group"))
    return str(_("item %(path)s")) % {"path": ".".join(str(n + 1) for n in path)}


def _validate_group(node: Any, *, path: list[int], depth: int, counter: list[int]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise ValidationError(
            _("%(where)s: a group is expected.") % {"where": _where(path)}, code="invalid_group"
        )
    unknown = set(node) - {"op", "negate", "items"}
    if unknown:
        raise ValidationError(
            _("%(where)s: unknown key “%(key)s” in a group.")
            % {"where": _where(path), "key": sorted(unknown)[0]},
            code="invalid_group",
        )
    match = node.get("op")
    if match not in ("all", "any"):
        raise ValidationError(
            _("%(where)s: a group must match “all” or “any”, not “%(op)s”.")
            % {"where": _where(path), "op": match},
            code="invalid_group_op",
        )
    negate = node.get("negate", False)
    if not isinstance(negate, bool):
        raise ValidationError(
            _("%(where)s: “negate” must be true or false.") % {"where": _where(path)}, code="invalid_group"
        )
    items = node.get("items", [])
    if not isinstance(items, list):
        raise ValidationError(
            _("%(where)s: the items of a group must be a list.") % {"where": _where(path)},
            code="invalid_group",
        )
    if len(items) > MAX_ITEMS:
        raise ValidationError(
            _("%(where)s: a group holds at most %(count)s items.")
            % {"where": _where(path), "count": MAX_ITEMS},
            code="too_many",
        )
    if negate and not items:
        raise ValidationError(
            _("%(where)s: an empty group cannot be negated.") % {"where": _where(path)}, code="empty_negated"
        )
    normalised = []
    for index, item in enumerate(items):
        here = [*path, index]
        if isinstance(item, dict) and "items" in item:
            if depth >= MAX_DEPTH:
                raise ValidationError(
                    _("%(where)s: groups nest at most %(depth)s deep.")
                    % {"where": _where(here), "depth": MAX_DEPTH},
                    code="too_deep",
                )
            normalised.append(_validate_group(item, path=here, depth=depth + 1, counter=counter))
        else:
            counter[0] += 1
            if counter[0] > MAX_CONDITIONS:
                raise ValidationError(
                    _("A segment holds at most %(count)s conditions.") % {"count": MAX_CONDITIONS},
                    code="too_many",
                )
            normalised.append(validate_condition(item, where=_where(here)))
    group: dict[str, Any] = {"op": match, "items": normalised}
    if negate:
        group["negate"] = True
    return group


def validate_condition(node: Any, *, where: str = "") -> dict[str, Any]:
    prefix = f"{where}: " if where else ""
    if not isinstance(node, dict) or set(node) - {"field", "op", "value"} or "field" not in node:
        raise ValidationError(
            prefix + _("a condition needs a field, an operator and a value."), code="invalid_condition"
        )
    name, op = node.get("field"), node.get("op")
    spec = FIELDS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValidationError(
            prefix + _("unknown field “%(field)s”.") % {"field": name}, code="unknown_field"
        )
    if op not in spec.operators:
        raise ValidationError(
            prefix
            + _("operator “%(op)s” cannot be used with the field “%(field)s” (use one of: %(ops)s).")
            % {"op": op, "field": spec.label, "ops": ", ".join(spec.operators)},
            code="unknown_operator",
        )
    try:
        value = spec.parse(op, node.get("value"))
    except _Bad as bad:
        raise ValidationError(
            prefix
            + _("invalid value for “%(field)s” %(op)s: %(reason)s.")
            % {"field": spec.label, "op": OPERATOR_LABELS[op], "reason": bad.message},
            code="invalid_value",
        ) from None
    return {"field": name, "op": op, "value": value}


# --------------------------------------------------------------------------------------------------
# Compilation


def compile_definition(definition: dict[str, Any], *, today: datetime.date | None = None) -> Q:
    """One ``Q`` over ``Member`` for a definition (validated here first, without database reads)."""
    tree = validate_definition(definition, check_references=False)
    return _compile_group(tree, Context(today=today or local_today()))


def _compile_group(group: dict[str, Any], ctx: Context) -> Q:
    parts = [
        _compile_group(item, ctx) if "items" in item else _compile_condition(item, ctx)
        for item in group["items"]
    ]
    if not parts:
        return NOBODY  # an empty group matches nobody, never everybody
    combined = functools.reduce(operator.and_ if group["op"] == "all" else operator.or_, parts)
    return ~combined if group.get("negate") else combined


def _compile_condition(condition: dict[str, Any], ctx: Context) -> Q:
    spec = FIELDS[condition["field"]]
    return spec.compile(condition["op"], condition["value"], ctx)


def eligible_members() -> QuerySet[Member]:
    """Members a segment may contain: active, not erased."""
    return Member.objects.filter(status=Member.Status.ACTIVE, erased_at__isnull=True)


def segment_members(definition: dict[str, Any], *, today: datetime.date | None = None) -> QuerySet[Member]:
    """Active, not erased members matching ``definition`` (one query; not yet evaluated)."""
    return eligible_members().filter(compile_definition(definition, today=today))


# --------------------------------------------------------------------------------------------------
# Preview


@dataclass(frozen=True)
class AreaCount:
    id: int
    name: str
    total: int
    excluded: int  # for lack of consent on the chosen channel


@dataclass(frozen=True)
class SampleMember:
    id: int
    name: str  # masked
    mobile: str  # masked
    store: str
    tier: str
    lifecycle_stage: str
    last_purchase_at: datetime.datetime | None


@dataclass(frozen=True)
class SegmentPreview:
    total: int
    channel: str | None
    excluded_no_consent: int
    by_region: list[AreaCount]
    by_store: list[AreaCount]
    sample: list[SampleMember]

    @property
    def reachable(self) -> int:
        return self.total - self.excluded_no_consent


def preview_segment(
    definition: dict[str, Any],
    *,
    channel: str | None = None,
    sample_size: int = 20,
    today: datetime.date | None = None,
) -> SegmentPreview:
    """Counts (total, per region, per store, without consent on ``channel``) and a masked sample.

    Counts are one grouped query over the members (per store, with the consent count as a FILTER);
    regions are summed from the stores. The sample is a second query, ``sample_size`` rows.
    """
    if channel is not None and channel not in TaskChannel.values:
        raise ValidationError(
            _("Unknown channel “%(channel)s”.") % {"channel": channel}, code="invalid_channel"
        )
    members = segment_members(definition, today=today)
    consent = channel_consent_q(channel)
    with transaction.atomic(), connection.cursor() as cursor:
        # The planner's cost for a per-member sub-select is its worst case (every member), which turns
        # on JIT compilation: 0.5 s of compiling for a query that runs in a fraction of that.
        cursor.execute("SET LOCAL jit = off")
        rows = list(
            members.order_by()
            .values("home_store_id")
            .annotate(total=Count("pk"), consented=Count("pk", filter=consent) if channel else Count("pk"))
        )
        sample = _sample(members, sample_size) if sample_size and rows else []
    stores = {
        store.pk: store
        for store in Store.objects.select_related("region").filter(
            pk__in=[row["home_store_id"] for row in rows]
        )
    }
    by_store: list[AreaCount] = []
    regions: dict[int, list[int]] = {}
    region_names: dict[int, str] = {}
    for row in rows:
        store = stores[row["home_store_id"]]
        excluded = row["total"] - row["consented"]
        by_store.append(AreaCount(store.pk, str(store), row["total"], excluded))
        counts = regions.setdefault(store.region_id, [0, 0])
        counts[0] += row["total"]
        counts[1] += excluded
        region_names[store.region_id] = store.region.name
    by_store.sort(key=lambda area: (-area.total, area.name))
    by_region = sorted(
        (AreaCount(pk, region_names[pk], total, excluded) for pk, (total, excluded) in regions.items()),
        key=lambda area: (-area.total, area.name),
    )
    total = sum(area.total for area in by_store)
    return SegmentPreview(
        total=total,
        channel=channel,
        excluded_no_consent=sum(area.excluded for area in by_store),
        by_region=by_region,
        by_store=by_store,
        sample=sample,
    )


def _sample(members: QuerySet[Member], size: int) -> list[SampleMember]:
    """The latest joiners among the matches: cheap to find, and what HQ recognises. Always masked."""
    rows = (
        members.select_related("home_store", "tier")
        .order_by("-joined_at", "-id")
        .only(
            "id", "name", "mobile", "home_store__name", "home_store__code", "tier__name",
            "lifecycle_stage", "last_purchase_at", "joined_at",
        )[:size]
    )  # fmt: skip
    return [
        SampleMember(
            id=member.pk,
            name=mask_name(member.name),
            mobile=mask_mobile(member.mobile),
            store=str(member.home_store),
            tier=member.tier.name if member.tier else "",
            lifecycle_stage=str(member.get_lifecycle_stage_display()),
            last_purchase_at=member.last_purchase_at,
        )
        for member in rows
    ]
