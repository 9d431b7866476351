"""Request and response shapes of the API (plain serializers: validation and the OpenAPI schema)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from members.models import Channel, ConsentRecord, ContactChannel, ExternalIdentity, Member, Order
from scrm.masking import mask_mobile

MAX_BATCH = 1000
MAX_LINES = 200
MONEY = {"max_digits": 12, "decimal_places": 2, "min_value": Decimal("0")}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class IdentitySerializer(serializers.Serializer):
    platform = serializers.ChoiceField(choices=ExternalIdentity.Platform.choices)
    external_id = serializers.CharField(max_length=128)


class MemberUpsertSerializer(serializers.Serializer):
    mobile = serializers.CharField(
        max_length=32, required=False, help_text=_("Any usual spelling; stored as E.164.")
    )
    identity = IdentitySerializer(required=False)
    name = serializers.CharField(max_length=64, required=False, allow_blank=True)
    gender = serializers.ChoiceField(choices=Member.Gender.choices, required=False)
    birthday = serializers.DateField(required=False)
    home_store = serializers.CharField(max_length=32, required=False, help_text=_("Store code."))
    guide = serializers.CharField(max_length=32, required=False, help_text=_("Guide employee number."))
    join_channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    joined_at = serializers.DateTimeField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("mobile") and not attrs.get("identity"):
            raise serializers.ValidationError(
                {"mobile": [_("Give a mobile number or a platform identity.")]}, code="required"
            )
        return attrs


class IdentityOutSerializer(serializers.Serializer):
    platform = serializers.CharField()
    external_id = serializers.CharField()


class MemberSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    mobile = serializers.SerializerMethodField(help_text=_("Masked."))
    name = serializers.CharField()
    gender = serializers.CharField()
    birthday = serializers.DateField(allow_null=True)
    home_store = serializers.CharField(source="home_store.code")
    guide = serializers.SerializerMethodField()
    tier = serializers.SerializerMethodField()
    status = serializers.CharField()
    points_balance = serializers.IntegerField()
    joined_at = serializers.DateTimeField()
    join_channel = serializers.CharField()
    consent_sms = serializers.BooleanField()
    consent_call = serializers.BooleanField()
    consent_wecom = serializers.BooleanField()
    consent_email = serializers.BooleanField()
    order_count = serializers.IntegerField()
    total_spend = serializers.DecimalField(max_digits=14, decimal_places=2)
    last_purchase_at = serializers.DateTimeField(allow_null=True)
    lifecycle_stage = serializers.CharField()
    identities = serializers.SerializerMethodField()

    def get_mobile(self, member: Member) -> str:
        return mask_mobile(member.mobile)

    def get_guide(self, member: Member) -> str | None:
        return member.guide.employee_no if member.guide_id else None

    def get_tier(self, member: Member) -> str | None:
        return member.tier.code if member.tier_id else None

    def get_identities(self, member: Member) -> list[dict[str, str]]:
        return [
            {"platform": i.platform, "external_id": i.external_id}
            for i in member.identities.all().order_by("platform", "external_id")
        ]


class MemberUpsertResultSerializer(serializers.Serializer):
    created = serializers.BooleanField()
    merge_proposal = serializers.IntegerField(allow_null=True)
    member = MemberSerializer()


class BuyerSerializer(serializers.Serializer):
    mobile = serializers.CharField(max_length=32, required=False)
    platform = serializers.ChoiceField(choices=ExternalIdentity.Platform.choices, required=False)
    external_id = serializers.CharField(max_length=128, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("platform")) != bool(attrs.get("external_id")):
            raise serializers.ValidationError(
                {"external_id": [_("A platform identity needs both the platform and the id.")]},
                code="required",
            )
        return attrs


class OrderLineSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=128, required=False, allow_blank=True)
    category = serializers.CharField(max_length=64, required=False, allow_blank=True)
    quantity = serializers.IntegerField(min_value=1, max_value=1_000_000)
    amount = serializers.DecimalField(**MONEY)


class OrderSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    order_no = serializers.CharField(max_length=64)
    paid_at = serializers.DateTimeField()
    amount = serializers.DecimalField(**MONEY)
    store = serializers.CharField(max_length=32, required=False, help_text=_("Store code."))
    guide = serializers.CharField(max_length=32, required=False, help_text=_("Guide employee number."))
    member = BuyerSerializer(required=False, help_text=_("Omit for a buyer who is not a member."))
    items = OrderLineSerializer(many=True, required=False, max_length=MAX_LINES)


class OrderBatchSerializer(serializers.Serializer):
    orders = serializers.ListField(child=OrderSerializer(), min_length=1, max_length=MAX_BATCH)


class OrderItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    channel = serializers.CharField()
    order_no = serializers.CharField()
    status = serializers.ChoiceField(
        choices=[("created", "created"), ("exists", "exists"), ("error", "error")]
    )
    order_id = serializers.IntegerField(allow_null=True)
    error = ErrorDetailSerializer(allow_null=True)


class OrderBatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    existing = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = OrderItemResultSerializer(many=True)


class OrderOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    channel = serializers.CharField()
    order_no = serializers.CharField(source="external_no")
    status = serializers.ChoiceField(choices=Order.Status.choices)
    paid_at = serializers.DateTimeField()
    amount = serializers.DecimalField(max_digits=12, decimal_places=2)
    refunded_amount = serializers.DecimalField(max_digits=12, decimal_places=2)
    item_count = serializers.IntegerField()
    member_id = serializers.IntegerField(allow_null=True)
    store = serializers.SerializerMethodField()

    def get_store(self, order: Order) -> str | None:
        return order.store.code if order.store_id else None


class RefundSerializer(serializers.Serializer):
    refunded_amount = serializers.DecimalField(
        **MONEY, help_text=_("The total refunded so far (not this refund alone): repeating it is harmless.")
    )


class ConsentSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=ContactChannel.choices)
    action = serializers.ChoiceField(choices=ConsentRecord.Action.choices)
    purpose = serializers.ChoiceField(choices=ConsentRecord.Purpose.choices, required=False)
    method = serializers.ChoiceField(choices=ConsentRecord.Method.choices, required=False)
    policy_version = serializers.CharField(max_length=32)
    evidence = serializers.DictField(
        required=False, help_text=_("e.g. a screenshot reference or the SMS reply.")
    )
    store = serializers.CharField(max_length=32, required=False)
    at = serializers.DateTimeField(required=False)


class ConsentOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    member_id = serializers.IntegerField()
    channel = serializers.CharField()
    purpose = serializers.CharField()
    action = serializers.CharField()
    policy_version = serializers.CharField()
    at = serializers.DateTimeField()
    consent_granted = serializers.BooleanField()


class MemberRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    mobile = serializers.CharField(max_length=32, required=False)
    platform = serializers.ChoiceField(choices=ExternalIdentity.Platform.choices, required=False)
    external_id = serializers.CharField(max_length=128, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (
            attrs.get("id") or attrs.get("mobile") or (attrs.get("platform") and attrs.get("external_id"))
        ):
            raise serializers.ValidationError(
                {"id": [_("Name the member by id, mobile or platform identity.")]}, code="required"
            )
        return attrs


class GuideBindingSerializer(serializers.Serializer):
    member = MemberRefSerializer()
    guide = serializers.CharField(max_length=32, help_text=_("Guide employee number."))
    action = serializers.ChoiceField(choices=[("bind", "bind"), ("unbind", "unbind")])
    external_userid = serializers.CharField(
        max_length=128, required=False, allow_blank=True, help_text=_("WeCom external contact id.")
    )


class GuideBindingResultSerializer(serializers.Serializer):
    member_id = serializers.IntegerField()
    guide = serializers.CharField(allow_null=True)
