from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from .roles import Role, is_hq, role_of


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """HQ works in the admin; a manager starts on the store's board, a guide on today's tasks."""
    if is_hq(request.user):
        return redirect("admin:index")
    return redirect("guides:store" if role_of(request.user) == Role.STORE_MANAGER else "guides:today")


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
