"""The guide app's endpoints: a guide signs in for a bearer token, lists their tasks, records outcomes.

A token, not the API key: the guide acts as themselves (their role, scope and consent checks), and a
till or shop never sees a guide's tasks. Sign-in goes through Django's ``authenticate`` so the login
lockout applies; tokens expire like a store staff session. Completing calls the workbench's own
service (``campaigns.work.complete_task``), so the rules are the same as on the mobile pages.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status, throttling
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.models import Task
from campaigns.work import complete_task
from guides.selectors import is_store_staff, own_tasks, task_to_complete
from scrm import audit
from scrm.audit import Actor
from scrm.masking import mask_mobile

from . import keys, webhooks
from .auth import GuideTokenAuthentication
from .errors import ApiError, django_validation_error, error_body, not_found
from .models import GuideToken
from .serializers import ErrorSerializer

TASK_PAGE_SIZE = 100
ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 415, 429)}


class GuideThrottle(throttling.SimpleRateThrottle):
    scope = "guide_app"
    rate = "120/min"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return f"api-guide-throttle:{request.user.pk}"
        return f"api-guide-throttle:ip:{self.get_ident(request)}"


class IsStoreStaff(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and is_store_staff(request.user))


class SignInSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text=gettext_lazy("Shown once; send as Authorization: Bearer <token>.")
    )
    expires_at = serializers.DateTimeField()


class TaskMemberSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    mobile = serializers.CharField(help_text=gettext_lazy("Masked."))


class TaskSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    channel = serializers.CharField()
    state = serializers.CharField()
    opens_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField()
    is_overdue = serializers.BooleanField()
    member = TaskMemberSerializer()


class TaskListSerializer(serializers.Serializer):
    tasks = TaskSerializer(many=True)
    has_more = serializers.BooleanField()


class CompleteSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=Task.Outcome.choices)
    note = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    follow_up_on = serializers.DateField(required=False, allow_null=True)
    token = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text=gettext_lazy("One per submission: a retried request with the same token is a repeat."),
    )


class CompletionSerializer(serializers.Serializer):
    task_id = serializers.IntegerField()
    state = serializers.CharField()
    outcome = serializers.CharField()
    recorded = serializers.BooleanField()
    repeated = serializers.BooleanField()


@audit.service
def issue_guide_token(user: Any, *, actor: Actor) -> tuple[GuideToken, str]:
    key, prefix, secret_hash = keys.new_key()
    expires_at = timezone.now() + datetime.timedelta(hours=settings.SCRM_STAFF_SESSION_HOURS)
    token = GuideToken.objects.create(
        user=user, key_prefix=prefix, secret_hash=secret_hash, expires_at=expires_at
    )
    audit.record(
        actor, "guide_token.issued", target=token, changes={"user": user.pk, "expires_at": expires_at}
    )
    return token, key


@audit.service
def revoke_guide_token(token: GuideToken, *, actor: Actor) -> None:
    GuideToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    audit.record(actor, "guide_token.revoked", target=token)


class GuideTokenApi(APIView):
    parser_classes = [JSONParser]
    authentication_classes = [GuideTokenAuthentication]
    permission_classes = [permissions.AllowAny]
    throttle_classes = [GuideThrottle]

    @extend_schema(
        operation_id="guide_token_create",
        request=SignInSerializer,
        responses={201: TokenSerializer, **ERRORS},
        auth=[],
        summary="A guide signs in and gets a bearer token for the guide app",
    )
    def post(self, request: Request) -> Response:
        data = SignInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=data.validated_data["username"],
            password=data.validated_data["password"],
        )
        if getattr(request._request, "axes_locked_out", False):
            # Answered here in the API's JSON shape instead of the lockout page axes' middleware renders.
            request._request.axes_locked_out = False
            raise ApiError(
                _("Too many failed sign-ins. Try again later."),
                code="locked_out",
                status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        if user is None or not is_store_staff(user):
            raise ApiError(
                _("Wrong username or password, or not a store staff account."),
                code="invalid_credentials",
                status_code=status.HTTP_401_UNAUTHORIZED,
            )
        token, key = issue_guide_token(
            user, actor=Actor.for_user(user, request_id=getattr(request, "request_id", None))
        )
        return Response({"token": key, "expires_at": token.expires_at}, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="guide_token_delete", request=None, responses={204: None, **ERRORS})
    def delete(self, request: Request) -> Response:
        if not isinstance(request.auth, GuideToken):
            raise ApiError(
                _("Sign in first."), code="not_authenticated", status_code=status.HTTP_401_UNAUTHORIZED
            )
        revoke_guide_token(request.auth, actor=Actor.from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class GuideApiView(APIView):
    parser_classes = [JSONParser]
    authentication_classes = [GuideTokenAuthentication]
    permission_classes = [IsStoreStaff]
    throttle_classes = [GuideThrottle]


class GuideTaskListApi(GuideApiView):
    @extend_schema(operation_id="guide_tasks_list", responses={200: TaskListSerializer, **ERRORS})
    def get(self, request: Request) -> Response:
        now = timezone.now()
        tasks = list(
            own_tasks(request.user)
            .filter(state=Task.State.OPEN, opens_at__lte=now)
            .select_related("member")
            .order_by("due_at", "priority", "pk")[: TASK_PAGE_SIZE + 1]
        )
        body = {
            "has_more": len(tasks) > TASK_PAGE_SIZE,
            "tasks": [
                {
                    "id": t.pk,
                    "title": t.title,
                    "channel": t.channel,
                    "state": t.state,
                    "opens_at": t.opens_at,
                    "due_at": t.due_at,
                    "is_overdue": t.due_at < now,
                    "member": {
                        "id": t.member_id,
                        "name": t.member.name,
                        "mobile": mask_mobile(t.member.mobile),
                    },
                }
                for t in tasks[:TASK_PAGE_SIZE]
            ],
        }
        return Response(TaskListSerializer(body).data)


class GuideTaskCompleteApi(GuideApiView):
    @extend_schema(
        operation_id="guide_tasks_complete",
        request=CompleteSerializer,
        responses={200: CompletionSerializer, **ERRORS},
        summary="Record the outcome of one of my tasks (same rules as the workbench)",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = CompleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        task = task_to_complete(request.user, pk)
        if task is None:
            raise not_found()
        try:
            with transaction.atomic():
                result = complete_task(
                    task,
                    outcome=values["outcome"],
                    note=values.get("note") or "",
                    follow_up_on=values.get("follow_up_on"),
                    token=values.get("token") or "",
                    actor=Actor.from_request(request),
                )
                if result.recorded:
                    webhooks.enqueue_event(
                        webhooks.Event.TASK_COMPLETED,
                        {
                            "task_id": task.pk,
                            "member_id": task.member_id,
                            "guide_id": task.guide_id,
                            "outcome": values["outcome"],
                            "completed_at": result.task.completed_at,
                        },
                    )
        except DjangoValidationError as error:
            field, message, code = django_validation_error(error)
            return Response(error_body(code, message, field), status=status.HTTP_400_BAD_REQUEST)
        if result.conflict:
            return Response(
                error_body("task_closed", _("This task was already closed.")), status=status.HTTP_409_CONFLICT
            )
        done = result.task
        return Response(
            {
                "task_id": done.pk,
                "state": done.state,
                "outcome": done.outcome,
                "recorded": result.recorded,
                "repeated": result.repeated,
            }
        )
