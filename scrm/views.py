from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from .roles import is_hq


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """HQ works in the admin; store staff on the mobile workbench."""
    return redirect("admin:index" if is_hq(request.user) else "guides:members")


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
