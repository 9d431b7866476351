"""Security events on the audit trail: logins, failed logins, logouts."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from . import audit
from .audit import Actor


def _request_actor(request: Any, user: Any = None) -> Actor:
    if request is None:
        return Actor.system("auth")
    request_id = getattr(request, "request_id", None)
    ip = request.META.get("REMOTE_ADDR")
    if user is not None and user.is_authenticated:
        return Actor.for_user(user, request_id=request_id, ip=ip)
    return Actor(kind="user", label="anonymous", request_id=request_id or Actor().request_id, ip=ip)


def on_login(sender: Any, request: Any, user: Any, **_: Any) -> None:
    audit.record(_request_actor(request, user), "auth.login", target=user)


def on_logout(sender: Any, request: Any, user: Any, **_: Any) -> None:
    if user is not None:
        audit.record(_request_actor(request, user), "auth.logout", target=user)


def on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    user = get_user_model().objects.filter(username=username).first()
    audit.record(
        _request_actor(request),
        "auth.login_failed",
        target=user,
        target_type=None if user else "auth.user",
        target_id=None if user else "",
        changes={"username": username},
    )
