"""URLs for tests only: the project's routes plus one view that fails, to see the 500 page."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom: SECRET_KEY=not-for-your-eyes")


urlpatterns = [
    path("fail/", fail),
    path("", include("scrm.urls")),
]
