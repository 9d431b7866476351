"""A fast check of one order in a batch, for the shape integrations actually send.

DRF builds and runs a field object per value: about half a millisecond per order, as much as
recording it. ``plain_order`` accepts only the plainest spelling of a valid order (canonical strings,
``"123.45"`` amounts, ISO 8601 times with an offset) and returns what ``OrderSerializer`` would; any
other input returns None and goes through the serializer, which accepts or explains. So the fast
path can only be stricter than the serializer, never looser (tests/api/test_fastpath.py holds the
two equal on generated orders).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.utils.dateparse import parse_datetime

from members.models import Channel, ExternalIdentity

from .serializers import MAX_LINES

MONEY = re.compile(r"[0-9]{1,10}(\.[0-9]{1,2})?\Z")
CHANNELS = frozenset(Channel.values)
PLATFORMS = frozenset(ExternalIdentity.Platform.values)
ORDER_KEYS = frozenset({"channel", "order_no", "paid_at", "amount", "store", "guide", "member", "items"})
LINE_KEYS = frozenset({"sku", "name", "category", "quantity", "amount"})
BUYER_KEYS = frozenset({"mobile", "platform", "external_id"})


def _text(value: Any, max_length: int, *, blank: bool = False) -> bool:
    return (
        type(value) is str
        and len(value) <= max_length
        and (blank or bool(value))
        and value == value.strip()
        and (not value or value.isprintable())
    )


def _money(value: Any) -> Decimal | None:
    if type(value) is str and MONEY.match(value):
        return Decimal(value)
    return None


def plain_order(item: Any) -> dict[str, Any] | None:
    """The validated order, or None if it is not in the plainest shape (the serializer decides then)."""
    if type(item) is not dict or not item.keys() <= ORDER_KEYS:
        return None
    channel, number, paid, amount = (
        item.get("channel"),
        item.get("order_no"),
        item.get("paid_at"),
        item.get("amount"),
    )
    if type(channel) is not str or channel not in CHANNELS or not _text(number, 64):
        return None
    money = _money(amount)
    if money is None or type(paid) is not str or "T" not in paid:
        return None
    try:
        paid_at = parse_datetime(paid)
    except ValueError:
        return None
    if paid_at is None or paid_at.tzinfo is None or not 1900 <= paid_at.year <= 2200:
        return None
    out: dict[str, Any] = {"channel": channel, "order_no": number, "paid_at": paid_at, "amount": money}
    for name in ("store", "guide"):
        if name in item:
            if not _text(item[name], 32):
                return None
            out[name] = item[name]
    if "member" in item:
        buyer = item["member"]
        if type(buyer) is not dict or not buyer.keys() <= BUYER_KEYS:
            return None
        clean: dict[str, Any] = {}
        if "mobile" in buyer:
            if not _text(buyer["mobile"], 32):
                return None
            clean["mobile"] = buyer["mobile"]
        if "platform" in buyer or "external_id" in buyer:
            platform, external_id = buyer.get("platform"), buyer.get("external_id")
            if type(platform) is not str or platform not in PLATFORMS or not _text(external_id, 128):
                return None
            clean["platform"], clean["external_id"] = platform, external_id
        out["member"] = clean
    if "items" in item:
        lines = item["items"]
        if type(lines) is not list or len(lines) > MAX_LINES:
            return None
        clean_lines = []
        for line in lines:
            if type(line) is not dict or not line.keys() <= LINE_KEYS or not _text(line.get("sku"), 64):
                return None
            quantity, line_amount = line.get("quantity"), _money(line.get("amount"))
            if type(quantity) is not int or not 1 <= quantity <= 1_000_000 or line_amount is None:
                return None
            clean_line = {"sku": line["sku"], "quantity": quantity, "amount": line_amount}
            for name, limit in (("name", 128), ("category", 64)):
                if name in line:
                    if not _text(line[name], limit, blank=True):
                        return None
                    clean_line[name] = line[name]
            clean_lines.append(clean_line)
        out["items"] = clean_lines
    return out


# A mainland mobile already in E.164, the way most systems send it. Stored members' numbers passed
# full validation, so one found by this exact string is that member; any other spelling, and a
# number no member has, goes through members.phones.normalize_mobile.
CANONICAL_CN_MOBILE = re.compile(r"\+861[3-9][0-9]{9}\Z")
