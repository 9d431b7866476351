"""HTTP adapters of the API: parse, call a service, render. Every call is audited with its client."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import JsonResponse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.models import Member

from . import serializers as s
from . import services
from .auth import ApiKeyAuthentication, ClientPrincipal, ClientRateThrottle, HasScope
from .errors import ApiError, django_validation_error, error_body, first_error, not_found
from .fastpath import plain_order
from .models import Scope

ERRORS = {
    code: OpenApiResponse(s.ErrorSerializer, description=text)
    for code, text in {
        400: "Invalid input",
        401: "Missing or invalid API key",
        403: "The key lacks the scope",
        404: "Not found, or outside the client's stores",
        409: "Conflict",
        415: "Not JSON",
        429: "Rate limit exceeded",
    }.items()
}


def responses(ok: dict[int, Any]) -> dict[int, Any]:
    return {**ok, **ERRORS}


def _language(request: Request) -> str | None:
    """Chinese by default; a client that sends ``Accept-Language: en`` gets English messages."""
    header = request.META.get("HTTP_ACCEPT_LANGUAGE", "")
    first = header.split(",")[0].split(";")[0].strip().lower()
    return "en" if first.startswith("en") else None


class ClientApiView(APIView):
    """Base of every endpoint called with an API key."""

    parser_classes = [JSONParser]  # integrations send JSON; the schema documents only that
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ClientRateThrottle]
    required_scopes: dict[str, str] = {}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        language = _language(request)
        if language:
            translation.activate(language)
        super().initial(request, *args, **kwargs)

    @property
    def principal(self) -> ClientPrincipal:
        return self.request.user  # type: ignore[return-value]

    @property
    def actor(self) -> Any:
        return self.principal.actor(self.request)

    @property
    def scope(self) -> services.CallerScope:
        return services.CallerScope(store_ids=self.principal.store_ids)

    def audited_items(self) -> int | None:
        return getattr(self, "_items", None)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        principal = getattr(request, "_user", None)
        if isinstance(principal, ClientPrincipal):
            services.record_api_call(
                principal.actor(request),
                principal.client,
                method=request.method or "",
                path=request.path,
                status=response.status_code,
                items=self.audited_items(),
            )
        # The call is audited above with the client as actor; the session-oriented denial audit of
        # the middleware would record it again with the wrong kind of actor.
        request._request.user = AnonymousUser()
        return response

    def valid(self, serializer_class: type[serializers.Serializer], data: Any = None) -> dict[str, Any]:
        serializer = serializer_class(data=self.request.data if data is None else data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def member_or_404(self, **lookup: Any) -> Member:
        try:
            member = services.find_member(self.scope, **lookup)
        except DjangoValidationError:
            member = None
        if member is None:
            raise not_found()
        return member


@csrf_exempt  # no session, no form: a POST to a wrong URL must get the JSON 404, not the CSRF page
def unknown_endpoint(request: Any, *args: Any, **kwargs: Any) -> JsonResponse:
    return JsonResponse(error_body("not_found", _("Not found.")), status=status.HTTP_404_NOT_FOUND)


def member_queryset() -> QuerySet[Member]:
    return Member.objects.select_related("home_store", "guide", "tier")


def render_member(member: Member) -> dict[str, Any]:
    member = member_queryset().get(pk=member.pk)
    return s.MemberSerializer(member).data


# --------------------------------------------------------------------------------------------------
# Members


class MemberUpsertApi(ClientApiView):
    required_scopes = {"POST": Scope.MEMBERS_WRITE}

    @extend_schema(
        operation_id="members_upsert",
        request=s.MemberUpsertSerializer,
        responses=responses({200: s.MemberUpsertResultSerializer, 201: s.MemberUpsertResultSerializer}),
        summary="Create or update a member by mobile and/or platform identity",
    )
    def post(self, request: Request) -> Response:
        data = self.valid(s.MemberUpsertSerializer)
        result = services.upsert_member(
            data, scope=self.scope, actor=self.actor, client=self.principal.client
        )
        body = {
            "created": result.created,
            "merge_proposal": result.merge_proposal.pk if result.merge_proposal else None,
            "member": render_member(result.member),
        }
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class MemberLookupApi(ClientApiView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(
        operation_id="members_lookup",
        parameters=[
            OpenApiParameter("mobile", str, required=False),
            OpenApiParameter(
                "platform", str, required=False, enum=[c for c, _l in s.ExternalIdentity.Platform.choices]
            ),
            OpenApiParameter("external_id", str, required=False),
        ],
        responses=responses({200: s.MemberSerializer}),
        summary="Find a member by mobile or platform identity",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        mobile = params.get("mobile") or None
        platform, external_id = params.get("platform") or None, params.get("external_id") or None
        if not mobile and not (platform and external_id):
            raise ApiError(_("Give a mobile number or a platform identity."), code="required", field="mobile")
        member = self.member_or_404(mobile=mobile, platform=platform, external_id=external_id)
        return Response(render_member(member))


class MemberDetailApi(ClientApiView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="members_retrieve", responses=responses({200: s.MemberSerializer}))
    def get(self, request: Request, pk: int) -> Response:
        return Response(render_member(self.member_or_404(member_id=pk)))


class MemberConsentApi(ClientApiView):
    required_scopes = {"POST": Scope.CONSENT_WRITE}

    @extend_schema(
        operation_id="members_consent_create",
        request=s.ConsentSerializer,
        responses=responses({201: s.ConsentOutSerializer}),
        summary="Record a consent grant, withdrawal or refusal with its evidence",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = self.valid(s.ConsentSerializer)
        member = self.member_or_404(member_id=pk)
        record = services.record_member_consent(member, data, scope=self.scope, actor=self.actor)
        member.refresh_from_db()
        flag = f"consent_{record.channel}"
        body = {
            "id": record.pk,
            "member_id": member.pk,
            "channel": record.channel,
            "purpose": record.purpose,
            "action": record.action,
            "policy_version": record.policy_version,
            "at": record.at,
            "consent_granted": bool(getattr(member, flag, False)),
        }
        return Response(s.ConsentOutSerializer(body).data, status=status.HTTP_201_CREATED)


# --------------------------------------------------------------------------------------------------
# Orders


def _batch_body(results: list[services.OrderResult]) -> dict[str, Any]:
    return {
        "created": sum(r.status == "created" for r in results),
        "existing": sum(r.status == "exists" for r in results),
        "failed": sum(r.status == "error" for r in results),
        "results": [
            {
                "index": r.index,
                "channel": r.channel,
                "order_no": r.order_no,
                "status": r.status,
                "order_id": r.order_id,
                "error": r.error,
            }
            for r in results
        ],
    }


class OrderCreateApi(ClientApiView):
    required_scopes = {"POST": Scope.ORDERS_WRITE}

    @extend_schema(
        operation_id="orders_create",
        request=s.OrderSerializer,
        responses=responses({200: s.OrderItemResultSerializer, 201: s.OrderItemResultSerializer}),
        summary="Record one order (a repeat of a known channel + order number changes nothing)",
    )
    def post(self, request: Request) -> Response:
        data = self.valid(s.OrderSerializer)
        result = services.record_order_batch([data], scope=self.scope, actor=self.actor)[0]
        if result.error is not None:
            error = result.error
            code = status.HTTP_404_NOT_FOUND if error["code"] in ("unknown_store", "unknown_guide") else 400
            raise ApiError(error["message"], code=error["code"], field=error["field"], status_code=code)
        body = _batch_body([result])["results"][0]
        return Response(
            body, status=status.HTTP_201_CREATED if result.status == "created" else status.HTTP_200_OK
        )


class OrderBatchApi(ClientApiView):
    required_scopes = {"POST": Scope.ORDERS_WRITE}

    @extend_schema(
        operation_id="orders_batch",
        request=s.OrderBatchSerializer,
        responses=responses({200: s.OrderBatchResultSerializer}),
        summary="Record up to 1,000 orders; one result per order, in the order sent",
    )
    def post(self, request: Request) -> Response:
        orders = request.data.get("orders") if isinstance(request.data, dict) else None
        if not isinstance(orders, list) or not orders:
            raise ApiError(_("Send a non-empty list of orders."), code="required", field="orders")
        if len(orders) > s.MAX_BATCH:
            raise ApiError(
                _("At most %(limit)s orders per call.") % {"limit": s.MAX_BATCH},
                code="too_many",
                field="orders",
            )
        self._items = len(orders)
        valid: list[dict[str, Any]] = []
        positions: list[int] = []
        failed: list[services.OrderResult] = []
        # One serializer for every order: DRF deep-copies a serializer's fields per instance, which
        # would cost more than recording the order.
        serializer = s.OrderSerializer()
        for index, raw in enumerate(orders):
            plain = plain_order(raw)
            if plain is not None:
                valid.append(plain)
                positions.append(index)
                continue
            try:
                valid.append(serializer.run_validation(raw))
                positions.append(index)
            except serializers.ValidationError as error:
                field, message, code = first_error(error.detail)
                item = raw if isinstance(raw, dict) else {}
                failed.append(
                    services.OrderResult(
                        index,
                        str(item.get("channel", ""))[:16],
                        str(item.get("order_no", ""))[:64],
                        "error",
                        error={"code": code, "message": message, "field": field},
                    )
                )
        results = services.record_order_batch(valid, scope=self.scope, actor=self.actor) if valid else []
        for result in results:
            result.index = positions[result.index]
        everything = sorted([*results, *failed], key=lambda r: r.index)
        return Response(_batch_body(everything))


class OrderDetailApi(ClientApiView):
    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="orders_retrieve", responses=responses({200: s.OrderOutSerializer}))
    def get(self, request: Request, channel: str, order_no: str) -> Response:
        order = services.order_in_scope(channel, order_no, self.scope)
        return Response(s.OrderOutSerializer(order).data)


class OrderRefundApi(ClientApiView):
    required_scopes = {"POST": Scope.ORDERS_WRITE}

    @extend_schema(
        operation_id="orders_refund",
        request=s.RefundSerializer,
        responses=responses({200: s.OrderOutSerializer}),
        summary="Set the total refunded on an order",
    )
    def post(self, request: Request, channel: str, order_no: str) -> Response:
        data = self.valid(s.RefundSerializer)
        order = services.order_in_scope(channel, order_no, self.scope)
        order = services.refund_order(order, refunded_amount=data["refunded_amount"], actor=self.actor)
        return Response(s.OrderOutSerializer(order).data)


class OrderCancelApi(ClientApiView):
    required_scopes = {"POST": Scope.ORDERS_WRITE}

    @extend_schema(
        operation_id="orders_cancel",
        request=None,
        responses=responses({200: s.OrderOutSerializer}),
        summary="Cancel an order",
    )
    def post(self, request: Request, channel: str, order_no: str) -> Response:
        order = services.order_in_scope(channel, order_no, self.scope)
        order = services.cancel_order(order, actor=self.actor)
        return Response(s.OrderOutSerializer(order).data)


# --------------------------------------------------------------------------------------------------
# Guide bindings (WeCom bridge)


class GuideBindingApi(ClientApiView):
    required_scopes = {"POST": Scope.MEMBERS_WRITE}

    @extend_schema(
        operation_id="guide_bindings_create",
        request=s.GuideBindingSerializer,
        responses=responses({200: s.GuideBindingResultSerializer}),
        summary="A WeCom external contact added (bind) or deleted (unbind)",
    )
    def post(self, request: Request) -> Response:
        data = self.valid(s.GuideBindingSerializer)
        ref = data["member"]
        member = self.member_or_404(
            member_id=ref.get("id"),
            mobile=ref.get("mobile"),
            platform=ref.get("platform"),
            external_id=ref.get("external_id"),
        )
        guide = services.guide_by_employee_no(data["guide"])
        if guide is None or not self.scope.allows(guide.store_id):
            raise not_found()
        try:
            member = services.bind_guide(
                member,
                guide,
                bound=data["action"] == "bind",
                actor=self.actor,
                external_userid=data.get("external_userid") or "",
            )
        except DjangoValidationError as error:
            field, message, code = django_validation_error(error, "guide")
            return Response(error_body(code, message, field or "guide"), status=status.HTTP_409_CONFLICT)
        member.refresh_from_db()
        employee_no = member.guide.employee_no if member.guide_id else None
        return Response({"member_id": member.pk, "guide": employee_no})
