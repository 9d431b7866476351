"""Number formatting for the dashboard pages: rates as percentages, money and counts grouped."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.translation import gettext as _

register = template.Library()

DASH = "–"


def _grouped(value: Any, places: int) -> str:
    return f"{Decimal(value):,.{places}f}"


@register.filter
def pct(value: Any, places: int = 1) -> str:
    """0.1234 → 12.3%."""
    if value is None or value == "":
        return DASH
    return f"{Decimal(value) * 100:.{places}f}%"


@register.filter
def money(value: Any) -> str:
    if value is None or value == "":
        return DASH
    return "¥" + _grouped(value, 2)


@register.filter
def count(value: Any) -> str:
    if value is None or value == "":
        return DASH
    return _grouped(value, 0)


@register.filter
def number(value: Any) -> str:
    if value is None or value == "":
        return DASH
    return _grouped(value, 2)


@register.simple_tag
def figure(value: Any, kind: str) -> str:
    """A KPI value shown the way its kind asks."""
    if kind.startswith("rate"):
        return pct(value)
    if kind == "money":
        return money(value)
    if kind == "count":
        return count(value)
    return number(value)


@register.simple_tag
def change(delta: Any, relative: Any, kind: str, label: str) -> str:
    """A comparison chip: the change in points for rates, else in percent; green when good."""
    if delta is None:
        return format_html('<span class="dash-chip dash-flat">{} {}</span>', label, DASH)
    delta = Decimal(delta)
    if kind.startswith("rate"):
        text = f"{delta * 100:+.1f} " + _("pts")
    elif relative is not None:
        text = f"{Decimal(relative) * 100:+.1f}%"
    else:
        text = f"{delta:+,.0f}"
    # What rounds to zero on the chip is no change (a rate moving by 0.0002 is not news).
    flat = text.lstrip("+-").startswith(("0.0 ", "0.0%", "0"))
    flat = flat and not any(c in "123456789" for c in text)
    good = delta < 0 if kind == "rate_down" else delta > 0
    css = "dash-flat" if flat else ("dash-up" if good else "dash-down")
    arrow = "" if flat else ("▲" if delta > 0 else "▼")
    if flat:
        text = text.lstrip("+-")
    return format_html('<span class="dash-chip {}">{} {}{}</span>', css, label, arrow, text)


@register.filter
def pts(value: Any) -> str:
    """A difference of two rates in percentage points: 0.032 → +3.2 pts."""
    if value is None or value == "":
        return DASH
    return f"{Decimal(str(value)) * 100:+.1f} " + _("pts")


@register.filter
def signed_money(value: Any) -> str:
    if value is None or value == "":
        return DASH
    value = Decimal(str(value))
    return ("+" if value >= 0 else "−") + "¥" + _grouped(abs(value), 2)


@register.filter
def pvalue(value: Any) -> str:
    if value is None or value == "":
        return DASH
    """The p-value as it is written: "p = 0.032", "p < 0.001"."""
    return "p < 0.001" if float(value) < 0.001 else f"p = {float(value):.3f}"
