from django.http import HttpRequest, HttpResponse


def member_list(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


def member_detail(request: HttpRequest, pk: int) -> HttpResponse:
    raise NotImplementedError
