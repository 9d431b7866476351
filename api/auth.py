"""Who is calling: an integration client by API key, or a guide by app token; scopes and rate limits."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.scoping import Scope as RowScope

from . import keys
from .models import ApiClient, GuideToken

# last_used_at is bookkeeping, not an event: written at most once a minute per client.
LAST_USED_EVERY = datetime.timedelta(minutes=1)


@dataclass
class ClientPrincipal:
    """``request.user`` for a call made with an API key: a system, not a person, with no row scope."""

    client: ApiClient
    scopes: frozenset[str]
    store_ids: frozenset[int]
    pk: None = None
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    is_anonymous: bool = False
    # Read by scrm.roles / scrm.scoping: an API client has no role and sees no rows through `scoped`.
    _scrm_role: None = None
    _scrm_scope: RowScope = field(default_factory=lambda: RowScope(role=None))

    @property
    def is_authenticated(self) -> bool:
        return True

    def get_username(self) -> str:
        return f"api:{self.client.name}"

    @property
    def limited_to_stores(self) -> bool:
        return bool(self.store_ids)

    def may_see_store(self, store_id: int | None) -> bool:
        return not self.store_ids or store_id in self.store_ids

    def actor(self, request: Any) -> Actor:
        return Actor(
            kind=AuditEvent.ActorKind.API,
            label=str(self.client)[:150],
            request_id=getattr(request, "request_id", None) or Actor().request_id,
            ip=request.META.get("REMOTE_ADDR"),
        )


def _bearer(request: Request, keyword: str) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1")
    parts = header.split()
    if not parts or parts[0].lower() != keyword.lower():
        return None
    if len(parts) != 2:
        raise exceptions.AuthenticationFailed(_("Invalid authorization header."), code="invalid_key")
    return parts[1]


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <prefix>.<secret>``; a revoked or unknown key is refused with 401."""

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[ClientPrincipal, ApiClient] | None:
        key = _bearer(request, self.keyword)
        if key is None:
            return None
        parts = keys.split_key(key)
        client = None
        if parts is not None:
            client = ApiClient.objects.filter(key_prefix=parts[0], is_active=True).first()
        if client is None or parts is None or not keys.secret_matches(parts[1], client.secret_hash):
            raise exceptions.AuthenticationFailed(_("Invalid or revoked API key."), code="invalid_key")
        store_ids = frozenset(client.stores.values_list("pk", flat=True))
        now = timezone.now()
        if client.last_used_at is None or now - client.last_used_at > LAST_USED_EVERY:
            with audit.app_audited():  # the call itself is on the audit trail (api.called)
                ApiClient.objects.filter(pk=client.pk).filter(
                    Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY)
                ).update(last_used_at=now)
        return ClientPrincipal(client=client, scopes=frozenset(client.scopes), store_ids=store_ids), client

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class GuideTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <prefix>.<secret>`` from the guide app; the user must still be active staff."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, GuideToken] | None:
        key = _bearer(request, self.keyword)
        if key is None:
            return None
        parts = keys.split_key(key)
        token = None
        if parts is not None:
            token = (
                GuideToken.objects.select_related("user")
                .filter(key_prefix=parts[0], revoked_at__isnull=True, expires_at__gt=timezone.now())
                .first()
            )
        if token is None or parts is None or not keys.secret_matches(parts[1], token.secret_hash):
            raise exceptions.AuthenticationFailed(_("Invalid or expired token."), code="invalid_token")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("Invalid or expired token."), code="invalid_token")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class HasScope(permissions.BasePermission):
    """The view's ``required_scopes`` maps HTTP methods to the scope a client needs for them."""

    message = "missing_scope"

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, ClientPrincipal):
            return False  # no key: DRF answers 401 "credentials were not provided"
        needed = getattr(view, "required_scopes", {}).get(request.method)
        if needed is None:
            needed = getattr(view, "required_scopes", {}).get("*")
        if needed and needed not in principal.scopes:
            raise exceptions.PermissionDenied(
                _("This API key does not have the scope %(scope)s.") % {"scope": needed}, code="missing_scope"
            )
        return True


class ClientRateThrottle(throttling.SimpleRateThrottle):
    """Per-client requests per minute (``ApiClient.rate_limit``), counted in the shared Redis cache."""

    cache = cache
    scope = "api_client"

    def get_rate(self) -> str | None:
        return None  # set per request from the client in allow_request

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, ClientPrincipal):
            return True
        self.num_requests, self.duration = principal.client.rate_limit, 60
        self.rate = f"{self.num_requests}/m"
        self.key = f"api-throttle:{principal.client.pk}"
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.throttle_failure()
        return self.throttle_success()

    def get_cache_key(self, request: Request, view: Any) -> str | None:  # pragma: no cover - unused
        return None
