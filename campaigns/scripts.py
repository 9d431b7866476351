"""Scripts (话术): placeholder rendering for guides' messages, validation at save and a live preview.

A placeholder is a name in single braces, ``{name}``. Rendering never raises: a member with missing
data gets a neutral fallback, and a name that is not a placeholder stays visible as typed (saving such
a script is refused by ``validate_script``). No placeholder ever yields the full mobile number.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Every placeholder a script may use, with the help text shown beside the editor.
PLACEHOLDERS: dict[str, Any] = {
    "name": _("Member's name"),
    "surname": _("Member's surname"),
    "salutation": _("Surname with Mr/Ms, e.g. Ms Wang"),
    "store": _("Store name"),
    "guide": _("Guide's name"),
    "tier": _("Membership tier"),
    "points": _("Points balance"),
    "coupon": _("Coupon code"),
    "birthday": _("Birthday (month and day)"),
    "last_purchase": _("Date of the last purchase"),
    "mobile_last4": _("Last four digits of the mobile"),
    "festival": _("Festival name (festival journeys)"),
    "expiring_points": _("Points about to expire (points-expiring journeys)"),
    "expires_on": _("Date the points expire (points-expiring journeys)"),
}


def placeholders_in(body: str) -> list[str]:
    """The placeholder names used in ``body``, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER_RE.findall(body or "")))


def unknown_placeholders(body: str) -> list[str]:
    return [name for name in placeholders_in(body) if name not in PLACEHOLDERS]


def validate_script(body: str) -> None:
    """Refuse a script body that uses placeholders the renderer does not know."""
    unknown = unknown_placeholders(body)
    if unknown:
        raise ValidationError(
            gettext("Unknown placeholders: %(names)s. Known placeholders: %(known)s.")
            % {
                "names": ", ".join("{" + name + "}" for name in unknown),
                "known": ", ".join("{" + name + "}" for name in PLACEHOLDERS),
            },
            code="unknown_placeholder",
        )


def _local_date(value: datetime.date | datetime.datetime | None) -> datetime.date | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    return value


def _month_day(value: datetime.date | None) -> str:
    if value is None:
        return ""
    return gettext("%(month)d/%(day)d") % {"month": value.month, "day": value.day}


def _full_date(value: datetime.date | None) -> str:
    if value is None:
        return ""
    return gettext("%(year)d/%(month)d/%(day)d") % {
        "year": value.year,
        "month": value.month,
        "day": value.day,
    }


def _related(obj: Any, attr: str) -> Any:
    """``obj.attr`` for a nullable relation, without raising if it is missing."""
    try:
        return getattr(obj, attr, None)
    except Exception:  # a dangling relation on an unsaved or half-loaded object
        return None


def _salutation(member: Any) -> str:
    name = (getattr(member, "name", "") or "").strip()
    if not name:
        return gettext("Dear member")
    gender = getattr(member, "gender", "U")
    surname = name[0]
    if gender == "F":
        return gettext("Ms %(surname)s") % {"surname": surname}
    if gender == "M":
        return gettext("Mr %(surname)s") % {"surname": surname}
    return name


def _birthday(member: Any) -> str:
    birthday = getattr(member, "birthday", None)
    if birthday is None:
        return ""
    if getattr(member, "birthday_lunar", False):
        from lunardate import LunarDate

        try:
            lunar = LunarDate.from_solar_date(birthday.year, birthday.month, birthday.day)
        except ValueError:
            return _month_day(birthday)
        return gettext("lunar %(month)d/%(day)d") % {"month": lunar.month, "day": lunar.day}
    return _month_day(birthday)


def script_context(
    *,
    member: Any,
    store: Any = None,
    guide: Any = None,
    coupon: str = "",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The value of every placeholder for one member, all strings, never failing on missing data."""
    store = store if store is not None else _related(member, "home_store")
    guide = guide if guide is not None else _related(member, "guide")
    tier = _related(member, "tier")
    name = (getattr(member, "name", "") or "").strip()
    mobile = getattr(member, "mobile", "") or ""
    values: dict[str, str] = {
        "name": name or gettext("Dear member"),
        "surname": name[:1],
        "salutation": _salutation(member),
        "store": getattr(store, "name", "") or "",
        "guide": getattr(guide, "name", "") or "",
        "tier": getattr(tier, "name", "") or "",
        "points": str(getattr(member, "points_balance", 0) or 0),
        "coupon": coupon or "",
        "birthday": _birthday(member),
        "last_purchase": _full_date(_local_date(getattr(member, "last_purchase_at", None))),
        "mobile_last4": mobile[-4:] if len(mobile) >= 4 else "",
        "festival": "",
        "expiring_points": "",
        "expires_on": "",
    }
    for key, value in (extra or {}).items():
        # Extra values fill known placeholders only: never the mobile, never a new name.
        if key in PLACEHOLDERS and key != "mobile_last4":
            values[key] = _full_date(value) if isinstance(value, datetime.date) else str(value)
    return values


def render_script(
    body: str,
    *,
    member: Any,
    store: Any = None,
    guide: Any = None,
    coupon: str = "",
    extra: dict | None = None,
) -> str:
    """``body`` with each known placeholder replaced; unknown ones stay visible as typed."""
    values = script_context(member=member, store=store, guide=guide, coupon=coupon, extra=extra)
    replace: Callable[[re.Match[str]], str] = lambda match: values.get(match.group(1), match.group(0))  # noqa: E731
    return PLACEHOLDER_RE.sub(replace, body or "")


SAMPLE_COUPON = "COUPON-DEMO"


def preview_script(body: str, *, member: Any, coupon: str = "", extra: dict | None = None) -> dict[str, Any]:
    """What a guide would see for ``member``: the text, the placeholders used and any unknown ones."""
    sample_extra = {
        "festival": gettext("Mid-Autumn Festival"),
        "expiring_points": "200",
        "expires_on": timezone.localdate() + datetime.timedelta(days=30),
    }
    sample_extra.update(extra or {})
    return {
        "text": render_script(body, member=member, coupon=coupon or SAMPLE_COUPON, extra=sample_extra),
        "used": placeholders_in(body),
        "unknown": unknown_placeholders(body),
    }
