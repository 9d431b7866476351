"""Security events on the audit trail: logins, failed logins, logouts, lockouts; session lifetimes."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from . import audit, security
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


# --------------------------------------------------------------------------------------------------
# Session lifetime and sign-in lockout, connected here with @receiver when ScrmConfig.ready imports
# this module.


@receiver(user_logged_in, dispatch_uid="scrm.session_lifetime")
def on_login_start_session(sender: Any, request: Any, user: Any, **_: Any) -> None:
    if request is not None and hasattr(request, "session"):
        security.start_session(request, user)


@receiver(user_locked_out, dispatch_uid="scrm.audit_locked_out")
def on_locked_out(sender: Any, request: Any, username: str | None, ip_address: str | None, **_: Any) -> None:
    """Each lockout, and each try while locked out, as ``auth.locked_out``.

    axes counts failures only until the lockout starts; a try during it has no count (``None``).
    """
    name = str(username or "")[:150]
    user = get_user_model().objects.filter(username=name).first() if name else None
    failures = getattr(request, "axes_failures_since_start", None) if request is not None else None
    audit.record(
        _request_actor(request),
        "auth.locked_out",
        target=user,
        target_type=None if user else "auth.user",
        target_id=None if user else "",
        changes={"username": name, "ip": ip_address, "failures": failures, "while_locked": failures is None},
    )
