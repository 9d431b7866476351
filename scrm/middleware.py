"""Request-scoped infrastructure: a request id for the audit trail, the HQ-only admin fence, session
lifetimes and the audit of every refusal."""

import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.locale import LocaleMiddleware
from django.shortcuts import redirect
from django.utils import translation

from . import security
from .roles import is_hq

# Set on a request that was refused without a 403 or 404 (the admin fence redirects), so the refusal
# is still audited; the value is the reason recorded.
DENIAL_REASON = "scrm_denial_reason"


class RequestIdMiddleware:
    """Give each request an id (or keep the proxy's) so audit events of one request can be grouped."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-Id", "")
        request.request_id = incoming[:64] if incoming.isascii() and incoming else uuid.uuid4().hex  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["X-Request-Id"] = request.request_id  # type: ignore[attr-defined]
        return response


class AdminOnlyForHqMiddleware:
    """Guides and store managers never reach the admin, whatever flags their account carries."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            request.path.startswith("/admin/")
            and user is not None
            and user.is_authenticated
            and not is_hq(user)
        ):
            setattr(request, DENIAL_REASON, "admin_is_for_hq")
            return redirect("home")
        return self.get_response(request)


class ChosenLanguageMiddleware(LocaleMiddleware):
    """Chinese unless the person chose another language with the switcher (a cookie).

    The browser's Accept-Language is ignored on purpose: staff use shared and imported devices whose
    system language says nothing about the language they work in.
    """

    def process_request(self, request: HttpRequest) -> None:
        chosen = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME)
        supported = {code for code, _name in settings.LANGUAGES}
        language = chosen if chosen in supported else settings.LANGUAGE_CODE
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()


class SessionPolicyMiddleware:
    """Ends a session past its fixed lifetime, or of store staff who left, before anything else runs.

    The person lands on the sign-in page; the end is on the audit trail as ``auth.session_ended``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            reason = security.session_end_reason(request, user)
            if reason is not None:
                security.end_request_session(request, reason)
                if request.method != "GET":  # a form sent after the end is not replayed after sign-in
                    return redirect(settings.LOGIN_URL)
                return redirect_to_login(request.get_full_path())
        return self.get_response(request)


class AccessDeniedAuditMiddleware:
    """One ``access.denied`` event for each request of a signed-in user that was refused.

    Refused means a 403 (``PermissionDenied`` or a CSRF failure), a 404 raised by a view that was
    found (an object outside the user's scope looks exactly like a missing one, and is recorded like
    one) or a refusal marked with ``DENIAL_REASON``. A 404 for a URL that matches no route (a typo,
    a browser asking for favicon.ico) is not a denial and is not recorded.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return response
        reason = getattr(request, DENIAL_REASON, None)
        if reason is None and response.status_code == 403:
            reason = "forbidden"
        elif reason is None and response.status_code == 404 and request.resolver_match is not None:
            reason = "not_found"
        if reason is not None:
            security.record_access_denied(request, status=response.status_code, reason=reason)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Name the refusal after the exception a view raised; Django still renders the error page."""
        if isinstance(exception, PermissionDenied):
            setattr(request, DENIAL_REASON, "permission_denied")
        elif isinstance(exception, Http404):
            setattr(request, DENIAL_REASON, "not_found")
