"""Store staff sign in with what they know: their employee number or their mobile, and the password.

The login form has one "account" field; this backend turns an employee number (``E00012``, any case)
or a mobile in any format people type into the staff member's login, then checks the password as
``ModelBackend`` does. A plain username still works through ``ModelBackend`` after it. django-axes
counts failures on what was typed, before any backend runs.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from members.phones import normalize_mobile
from stores.models import Guide


class StaffLoginBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if not username or password is None:
            return None
        guide = self._staff_for(username.strip())
        if guide is None:
            return None
        user = guide.user
        # Same checks as ModelBackend: the password, and an active account. A guide who left has no
        # active staff profile: the session policy ends their session on the first request anyway.
        if guide.is_active_staff and user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None

    @staticmethod
    def _staff_for(account: str) -> Guide | None:
        if not account or len(account) > 32:
            return None
        guide = Guide.objects.select_related("user").filter(employee_no__iexact=account).first()
        if guide is not None:
            return guide
        if sum(ch.isdigit() for ch in account) < 7:
            return None
        try:
            mobile = normalize_mobile(account)
        except ValidationError:
            return None
        # Several profiles with one mobile (a rehire) would be ambiguous: only the active one signs in.
        matches = list(
            Guide.objects.select_related("user").filter(mobile__in={mobile, mobile.removeprefix("+86")})[:2]
        )
        active = [g for g in matches if g.is_active_staff]
        return active[0] if len(active) == 1 else None
