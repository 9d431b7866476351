"""One JSON shape for every error of the API: ``{"error": {"code", "message", "field"}}``.

Messages are translated (Chinese unless the client asks for English with Accept-Language: en); an
unexpected exception is logged and answered with a generic 500 in the same shape, never a trace.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger("api")


class ApiError(exceptions.APIException):
    """An error with a code of our choosing, a translated message and optionally the field at fault."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, code: str, field: str | None = None, status_code: int | None = None):
        super().__init__(detail=message, code=code)
        self.code = code
        self.field = field
        if status_code is not None:
            self.status_code = status_code


def not_found() -> ApiError:
    return ApiError(_("Not found."), code="not_found", status_code=status.HTTP_404_NOT_FOUND)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": str(message), "field": field}}


def first_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """(field path, message, code) of the first leaf in a DRF error structure."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors", "__all__") else str(key)
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            return first_error(value, path)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                if value:
                    return first_error(value, f"{prefix}[{index}]" if prefix else f"[{index}]")
                continue
            return first_error(value, prefix)
        return (prefix or None, _("Invalid input."), "invalid")
    code = getattr(detail, "code", None) or "invalid"
    return (prefix or None, str(detail), str(code))


def django_validation_error(
    error: DjangoValidationError, field: str | None = None
) -> tuple[str | None, str, str]:
    if hasattr(error, "error_dict"):
        name, errors = next(iter(error.error_dict.items()))
        inner = errors[0]
        message = inner.messages[0] if inner.messages else str(inner)
        return (None if name == "__all__" else name, message, inner.code or "invalid")
    inner = error.error_list[0] if hasattr(error, "error_list") else error
    message = inner.messages[0] if getattr(inner, "messages", None) else str(inner)
    return (field, message, getattr(inner, "code", None) or "invalid")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        return Response(error_body(exc.code, exc.detail, exc.field), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(_("Not found."))
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        field, message, code = django_validation_error(exc)
        return Response(error_body(code, message, field), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        if isinstance(exc, exceptions.ValidationError):
            field, message, code = first_error(exc.detail)
        else:
            field, message, code = (
                None,
                str(exc.detail),
                exc.get_codes() if isinstance(exc.get_codes(), str) else "error",
            )
        return Response(error_body(code, message, field), status=exc.status_code, headers=headers)
    logger.exception("API error", exc_info=exc)
    return Response(
        error_body("server_error", _("Something went wrong on our side. Please try again later.")),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
