"""The axes backend for tests: the test client's ``login()`` authenticates without a request."""

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class ClientLoginAxesBackend(AxesStandaloneBackend):
    """``AxesStandaloneBackend`` that lends a request from 127.0.0.1 when the caller gave none.

    Only ``Client.login()`` calls ``authenticate()`` without a request here; every view passes its own,
    so sign-ins through the pages are checked exactly as in production.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            request = HttpRequest()
            request.META["REMOTE_ADDR"] = "127.0.0.1"
        return super().authenticate(request, username, password, **kwargs)
