"""What HQ can export about members and the rows hung on them: column specs for ``scrm.exports``.

Headers are the models' verbose names (Chinese by default, in the requester's language). Mobile
numbers are personal data: masked (``138****5678``) unless the requester may see them in full, then
written as people type them (``13812345678``; other regions keep their country code).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model
from django.utils.translation import gettext_lazy as _

from scrm.exports import Column, Kind, json_text, yes_no
from scrm.masking import mask_mobile
from stores.models import Guide, Store

from .models import Channel, ConsentRecord, ContactChannel, Member, Order, PointsEntry


def header(model: type[Model], field: str) -> Any:
    return model._meta.get_field(field).verbose_name


def mobile_as_typed(mobile: str) -> str:
    return mobile[3:] if mobile.startswith("+86") else mobile


def withheld(value: Any) -> str:
    return "****"


def mobile_column(path: str, heading: Any) -> Column:
    return Column(path, heading, mask=mask_mobile, show=mobile_as_typed)


MEMBER_COLUMNS: tuple[Column, ...] = (
    mobile_column("mobile", header(Member, "mobile")),
    Column("name", header(Member, "name")),
    Column("gender", header(Member, "gender"), labels=Member.Gender.choices),
    Column("birthday", header(Member, "birthday"), Kind.DATE),
    Column("home_store__code", header(Store, "code")),
    Column("home_store__name", header(Member, "home_store")),
    Column("home_store__region__name", header(Store, "region")),
    Column("guide__employee_no", header(Guide, "employee_no")),
    Column("guide__name", header(Member, "guide")),
    Column("tier__name", header(Member, "tier")),
    Column("points_balance", header(Member, "points_balance"), Kind.NUMBER),
    Column("joined_at", header(Member, "joined_at"), Kind.DATETIME),
    Column("join_channel", header(Member, "join_channel"), labels=Channel.choices),
    Column("status", header(Member, "status"), labels=Member.Status.choices),
    Column("lifecycle_stage", header(Member, "lifecycle_stage"), labels=Member.Lifecycle.choices),
    Column("rfm_cell", header(Member, "rfm_cell")),
    Column("first_purchase_at", header(Member, "first_purchase_at"), Kind.DATETIME),
    Column("last_purchase_at", header(Member, "last_purchase_at"), Kind.DATETIME),
    Column("order_count", header(Member, "order_count"), Kind.NUMBER),
    Column("spend_12m", header(Member, "spend_12m"), Kind.NUMBER),
    Column("avg_order_value", header(Member, "avg_order_value"), Kind.NUMBER),
    Column("consent_sms", header(Member, "consent_sms"), labels=yes_no()),
    Column("consent_call", header(Member, "consent_call"), labels=yes_no()),
    Column("consent_wecom", header(Member, "consent_wecom"), labels=yes_no()),
    Column("consent_email", header(Member, "consent_email"), labels=yes_no()),
)

# Rows hung on a member name the member by mobile (the natural key) and name.
MEMBER_MOBILE = mobile_column("member__mobile", _("member mobile"))
MEMBER_NAME = Column("member__name", _("member name"))

ORDER_COLUMNS: tuple[Column, ...] = (
    Column("external_no", header(Order, "external_no")),
    Column("channel", header(Order, "channel"), labels=Channel.choices),
    Column("status", header(Order, "status"), labels=Order.Status.choices),
    Column("paid_at", header(Order, "paid_at"), Kind.DATETIME),
    MEMBER_MOBILE,
    MEMBER_NAME,
    Column("store__code", header(Store, "code")),
    Column("store__name", header(Order, "store")),
    Column("guide__employee_no", header(Guide, "employee_no")),
    Column("guide__name", header(Order, "guide")),
    Column("amount", header(Order, "amount"), Kind.NUMBER),
    Column("refunded_amount", header(Order, "refunded_amount"), Kind.NUMBER),
    Column("item_count", header(Order, "item_count"), Kind.NUMBER),
    Column("created_at", header(Order, "created_at"), Kind.DATETIME),
)

POINTS_ENTRY_COLUMNS: tuple[Column, ...] = (
    Column("created_at", header(PointsEntry, "created_at"), Kind.DATETIME),
    MEMBER_MOBILE,
    MEMBER_NAME,
    Column("kind", header(PointsEntry, "kind"), labels=PointsEntry.Kind.choices),
    Column("delta", header(PointsEntry, "delta"), Kind.NUMBER),
    Column("reason", header(PointsEntry, "reason")),
    Column("ref", header(PointsEntry, "ref")),
    Column("expires_at", header(PointsEntry, "expires_at"), Kind.DATETIME),
    Column("actor__username", header(PointsEntry, "actor")),
)

CONSENT_RECORD_COLUMNS: tuple[Column, ...] = (
    Column("at", header(ConsentRecord, "at"), Kind.DATETIME),
    MEMBER_MOBILE,
    MEMBER_NAME,
    Column("channel", header(ConsentRecord, "channel"), labels=ContactChannel.choices),
    Column("purpose", header(ConsentRecord, "purpose"), labels=ConsentRecord.Purpose.choices),
    Column("action", header(ConsentRecord, "action"), labels=ConsentRecord.Action.choices),
    Column("source", header(ConsentRecord, "source"), labels=ConsentRecord.Source.choices),
    Column("method", header(ConsentRecord, "method"), labels=ConsentRecord.Method.choices),
    Column("policy_version", header(ConsentRecord, "policy_version")),
    Column("store__code", header(Store, "code")),
    Column("actor__username", header(ConsentRecord, "actor")),
    # Evidence can hold what identifies a person (a device, an IP); it is the proof consent exists.
    Column("evidence", header(ConsentRecord, "evidence"), mask=withheld, show=json_text),
)
