"""The access matrix: every page and route that exists × every role, one test id per cell.

Roles: a guide of store A, a guide of store B, the manager of store A, an HQ operator, the audit
officer, and an anonymous visitor. For each cell the test asserts the status (and where a redirect
goes), that lists and exports hold exactly the rows of the user's scope (parsed from the HTML and the
xlsx/csv, compared by id and by masked number), and that every refusal left exactly one
``access.denied`` event, while nothing else did.

Store staff never reach the admin: the fence answers every admin URL with the same redirect to their
start page, before any lookup, so an order or a member of another store is never told apart from one
that does not exist. On their own pages another store's member is a 404, exactly like a missing id.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.db.models import Model
from django.urls import NoReverseMatch, reverse
from openpyxl import load_workbook

from members.models import ConsentRecord, GuideAssignment, Member, Order, PointsEntry
from scrm.masking import mask_mobile
from scrm.models import AuditEvent
from tests.guides.world import World, build_world

ROLES = ("guide_A", "guide_B", "manager_A", "hq_operator", "auditor", "anonymous")
# The world's user keys; the member and scope labels in tests/guides/world.py use these.
USER_KEYS = {
    "guide_A": "guide_A1",
    "guide_B": "guide_B1",
    "manager_A": "manager_A",
    "hq_operator": "hq_operator",
    "auditor": "auditor",
}
STAFF = frozenset({"guide_A", "guide_B", "manager_A"})
HQ = frozenset({"hq_operator", "auditor"})
MISSING_PK = 987_654_321
MASKED = re.compile(r"\d{3}\*{4}\d{4}")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def route_exists(name: str, *args: Any) -> bool:
    try:
        reverse(name, args=args)
    except NoReverseMatch:
        return False
    return True


@pytest.fixture(scope="module")
def shared_world(django_db_setup, django_db_blocker):
    """One world for the whole module, inside a transaction rolled back at its end.

    Each test runs in a savepoint of it (the ``db`` fixture nests), so what a test writes (sessions,
    audit events) is gone before the next one, and the world is built once instead of ~200 times.
    """
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield build_world()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


@pytest.fixture
def world(shared_world, db, settings):
    # The matrix is about scope; the reveal's rate limit has its own tests.
    settings.RATELIMIT_ENABLE = False
    return shared_world


# --------------------------------------------------------------------------------------------------
# What a cell expects


@dataclass(frozen=True)
class Expect:
    status: int
    location: str | None = None  # the start of the redirect target
    denied: str = ""  # the reason of the one access.denied event this request must leave, if any
    target: tuple[str, str] | None = None  # the denied event's (target_type, target_id)
    check: Callable[[Any, World, str], None] | None = None  # the content, for 200s


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    name: str
    call: Callable[[World], Call]
    expect: Callable[[World, str, Call], Expect]
    skip_reason: str = ""


def user_key(role: str) -> str:
    return USER_KEYS[role]


def visible_member_ids(world: World, role: str) -> set[int]:
    return world.member_ids_for(user_key(role)) if role in STAFF else {m.pk for m in world.members.values()}


def national(member: Member) -> str:
    return member.mobile.removeprefix("+86")


# --------------------------------------------------------------------------------------------------
# Content checks


def listed_member_ids(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'href="/m/members/(\d+)/"', html)}


def check_member_list(expected: Callable[[World, str], set[int]]) -> Callable[[Any, World, str], None]:
    def check(response: Any, world: World, role: str) -> None:
        # The search box shows back what was typed; only what the page added counts.
        html = response.content.decode()
        if typed := response.wsgi_request.GET.get("q"):
            html = re.sub(r'(value="|q=)' + re.escape(typed), r"\1", html)
        wanted = expected(world, role)
        members = {m.pk: m for m in world.members.values()}
        assert listed_member_ids(html) == wanted
        assert set(MASKED.findall(html)) == {mask_mobile(members[pk].mobile) for pk in wanted}
        for member in members.values():
            assert national(member) not in html  # never a full number on a staff page
            if member.pk not in wanted:
                assert member.name not in html

    return check


def admin_result_ids(html: str, model: type[Model]) -> set[int]:
    table = html.split('id="result_list"', 1)[1].split("</table>", 1)[0]
    opts = model._meta
    return {int(pk) for pk in re.findall(rf"/admin/{opts.app_label}/{opts.model_name}/(\d+)/change/", table)}


def check_admin_list(model: type[Model]) -> Callable[[Any, World, str], None]:
    def check(response: Any, world: World, role: str) -> None:
        # HQ sees every store: the list holds every row the world has (under one page of 50).
        assert admin_result_ids(response.content.decode(), model) == {row.obj.pk for row in world.rows[model]}

    return check


def workbook_rows(response: Any) -> list[tuple[Any, ...]]:
    assert response["Content-Type"] == XLSX
    body = b"".join(response.streaming_content)
    sheet = load_workbook(io.BytesIO(body), read_only=True).active
    return list(sheet.iter_rows(values_only=True))


def check_store_export(response: Any, world: World, role: str) -> None:
    rows = workbook_rows(response)[1:]
    wanted = [m for m in world.members.values() if m.pk in visible_member_ids(world, role)]
    assert sorted(row[1] for row in rows) == sorted(mask_mobile(m.mobile) for m in wanted)
    assert sorted(row[0] for row in rows) == sorted(m.name for m in wanted)


def check_member_csv(response: Any, world: World, role: str) -> None:
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))[1:]
    assert sorted(row[0] for row in rows) == sorted(national(m) for m in world.members.values())


def check_audit_export(response: Any, world: World, role: str) -> None:
    rows = workbook_rows(response)[1:]
    exported = AuditEvent.objects.get(action="audit.exported")
    # Every event up to the export's own, which is written once the file is complete.
    assert sorted(row[0] for row in rows) == list(
        AuditEvent.objects.filter(pk__lt=exported.pk).order_by("pk").values_list("pk", flat=True)
    )


# --------------------------------------------------------------------------------------------------
# The workbench (/m/)


def workbench(
    staff: Callable[[World, str, Call], Expect],
) -> Callable[[World, str, Call], Expect]:
    """Anonymous → sign in; HQ → the admin (not a refusal: HQ simply works there); staff → ``staff``."""

    def expect(world: World, role: str, call: Call) -> Expect:
        if role == "anonymous":
            return Expect(302, location=f"{reverse('login')}?next=")
        if role in HQ:
            return Expect(302, location=reverse("admin:index"))
        return staff(world, role, call)

    return expect


def list_of(expected: Callable[[World, str], set[int]]) -> Callable[[World, str, Call], Expect]:
    return workbench(lambda world, role, call: Expect(200, check=check_member_list(expected)))


def member_page(member_key: str | None) -> Callable[[World, str, Call], Expect]:
    def staff(world: World, role: str, call: Call) -> Expect:
        pk = world.members[member_key].pk if member_key else MISSING_PK
        if pk in visible_member_ids(world, role):
            return Expect(200)
        return Expect(404, denied="not_found", target=("members.member", str(pk)))

    return workbench(staff)


def member_pk(world: World, member_key: str | None) -> int:
    return world.members[member_key].pk if member_key else MISSING_PK


def last_four_matches(world: World, role: str) -> set[int]:
    return {m.pk for m in world.members.values() if m.mobile.endswith("0001")} & visible_member_ids(
        world, role
    )


def store_b_number_matches(world: World, role: str) -> set[int]:
    return {world.members["B1a"].pk} & visible_member_ids(world, role)


def store_export(world: World, role: str, call: Call) -> Expect:
    if role == "manager_A":
        return Expect(200, check=check_store_export)
    return Expect(403, denied="permission_denied")  # guides do not export


# Whose member each member-page row opens: a guide's own, a colleague's, another store's, none.
MEMBER_KEYS: tuple[tuple[str, str | None], ...] = (
    ("store_A_guide_A1s", "A1a"),
    ("store_A_guide_A2s", "A2a"),
    ("store_B", "B1a"),
    ("missing", None),
)
REVEAL_SKIP = "" if route_exists("guides:reveal", 1) else "guides:reveal is not built yet (no such route)"

WORKBENCH_ROUTES: list[Route] = [
    Route(
        "m_list",
        lambda w: Call("get", reverse("guides:members")),
        list_of(lambda w, r: visible_member_ids(w, r)),
    ),
    Route(
        "m_search_last_four",
        lambda w: Call("get", reverse("guides:members"), {"q": "0001"}),
        list_of(last_four_matches),
    ),
    Route(
        "m_search_store_B_number",
        lambda w: Call("get", reverse("guides:members"), {"q": national(w.members["B1a"])}),
        list_of(store_b_number_matches),
    ),
    *[
        Route(
            f"m_member_{label}",
            lambda w, key=key: Call("get", reverse("guides:member", args=[member_pk(w, key)])),
            member_page(key),
        )
        for label, key in MEMBER_KEYS
    ],
    *[
        Route(
            f"m_reveal_{label}",
            lambda w, key=key: Call(
                "post",
                reverse("guides:reveal", args=[member_pk(w, key)]),
                {"reason": "about_to_call", "note": ""},
            ),
            member_page(key),
            skip_reason=REVEAL_SKIP,
        )
        for label, key in MEMBER_KEYS
    ],
    Route("m_export", lambda w: Call("post", reverse("guides:export")), workbench(store_export)),
]


# --------------------------------------------------------------------------------------------------
# The admin (/admin/)


def admin_route(
    hq: Callable[[World, str, Call], Expect], *, target: Callable[[World], tuple[str, str]] | None = None
) -> Callable[[World, str, Call], Expect]:
    """Anonymous → the admin's sign-in; staff → the fence (a refusal); HQ → ``hq``."""

    def expect(world: World, role: str, call: Call) -> Expect:
        if role == "anonymous":
            return Expect(302, location=f"{reverse('admin:login')}?next=")
        if role in STAFF:
            fence = Expect(302, location=reverse("home"), denied="admin_is_for_hq")
            return fence if target is None else Expect(**{**fence.__dict__, "target": target(world)})
        return hq(world, role, call)

    return expect


def store_b_object(model: type[Model]) -> Callable[[World], Model]:
    def pick(world: World) -> Model:
        if model is AuditEvent:
            return AuditEvent.objects.order_by("pk").first()
        if model is Member:
            return world.members["B1a"]
        return model._default_manager.filter(member=world.members["B1a"]).order_by("pk").first()

    return pick


ADMIN_MODELS: tuple[type[Model], ...] = (
    Member,
    Order,
    ConsentRecord,
    PointsEntry,
    GuideAssignment,
    AuditEvent,
)


def admin_url(model: type[Model], view: str, *args: Any) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def for_hq(**by_role: Expect) -> Callable[[World, str, Call], Expect]:
    return lambda world, role, call: by_role[role]


def changelist_expect(model: type[Model]) -> Callable[[World, str, Call], Expect]:
    ok = Expect(200, check=None if model is AuditEvent else check_admin_list(model))
    return admin_route(for_hq(hq_operator=ok, auditor=ok))


def change_expect(model: type[Model]) -> Callable[[World, str, Call], Expect]:
    def target(world: World) -> tuple[str, str]:
        return model._meta.label_lower, str(store_b_object(model)(world).pk)

    return admin_route(for_hq(hq_operator=Expect(200), auditor=Expect(200)), target=target)


MEMBER_EXPORT_FORM = {"format": "1", "resource": "0", "memberresource_mobile": "on"}  # 1: CSV
BACKGROUND_EXPORT_SKIP = (
    "" if route_exists("admin:members_member_export_background") else "no background export route yet"
)

ADMIN_ROUTES: list[Route] = [
    *[
        Route(
            f"admin_{m._meta.model_name}_list",
            lambda w, m=m: Call("get", admin_url(m, "changelist")),
            changelist_expect(m),
        )
        for m in ADMIN_MODELS
    ],
    *[
        Route(
            f"admin_{m._meta.model_name}_change_store_B",
            lambda w, m=m: Call("get", admin_url(m, "change", store_b_object(m)(w).pk)),
            change_expect(m),
        )
        for m in ADMIN_MODELS
    ],
    Route(
        "admin_member_export_form",
        lambda w: Call("get", admin_url(Member, "export")),
        admin_route(for_hq(hq_operator=Expect(200), auditor=Expect(403, denied="permission_denied"))),
    ),
    Route(
        "admin_member_export_csv",
        lambda w: Call("post", admin_url(Member, "export"), MEMBER_EXPORT_FORM),
        admin_route(
            for_hq(
                hq_operator=Expect(200, check=check_member_csv),
                auditor=Expect(403, denied="permission_denied"),
            )
        ),
    ),
    Route(
        "admin_member_export_background",
        lambda w: Call("post", admin_url(Member, "export_background"), {"format": "xlsx"}),
        admin_route(
            for_hq(
                hq_operator=Expect(302, location=admin_url(Member, "changelist")),
                auditor=Expect(403, denied="permission_denied"),
            )
        ),
        skip_reason=BACKGROUND_EXPORT_SKIP,
    ),
    Route(
        "admin_audit_export_xlsx",
        lambda w: Call("post", reverse("admin:scrm_auditevent_export"), {"format": "xlsx"}),
        admin_route(
            for_hq(
                hq_operator=Expect(403, denied="permission_denied"),
                auditor=Expect(200, check=check_audit_export),
            )
        ),
    ),
]

ROUTES = WORKBENCH_ROUTES + ADMIN_ROUTES
CASES = [
    pytest.param(route, role, id=f"{route.name}-{role}", marks=[pytest.mark.skip(reason=route.skip_reason)])
    if route.skip_reason
    else pytest.param(route, role, id=f"{route.name}-{role}")
    for route in ROUTES
    for role in ROLES
]


@pytest.mark.parametrize(("route", "role"), CASES)
def test_access_matrix(client, world, route, role):
    # given the user of this role, signed in (or nobody)
    if role != "anonymous":
        client.force_login(world.users[user_key(role)])
    call = route.call(world)
    expected = route.expect(world, role, call)

    # when they make the request
    response = client.post(call.url, call.data) if call.method == "post" else client.get(call.url, call.data)

    # then the status, the redirect, the content and the audit trail are exactly as expected
    assert response.status_code == expected.status, response.content[:300]
    if expected.location is not None:
        assert response["Location"].startswith(expected.location)
    if expected.check is not None:
        expected.check(response, world, role)
    denials = list(AuditEvent.objects.filter(action="access.denied"))
    if not expected.denied:
        assert denials == []
        return
    assert len(denials) == 1
    event = denials[0]
    assert event.actor == world.users[user_key(role)]
    assert event.changes == {
        "path": call.url,
        "method": call.method.upper(),
        "status": expected.status,
        "reason": expected.denied,
    }
    if expected.target is not None:
        assert (event.target_type, event.target_id) == expected.target
    if role in STAFF:
        assert event.store_id == world.users[user_key(role)].staff_profile.store_id


def page_body(response: Any) -> bytes:
    """The page without its CSRF token (masked afresh on every response) and its own address."""
    html = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
    return html.replace(response.wsgi_request.path.encode(), b"")


def test_a_member_of_another_store_looks_exactly_like_a_missing_one(client, world):
    """Same status, same page: the 404 says nothing about whether the member exists."""
    client.force_login(world.users["guide_A1"])

    foreign = client.get(reverse("guides:member", args=[world.members["B1a"].pk]))
    missing = client.get(reverse("guides:member", args=[MISSING_PK]))

    assert foreign.status_code == missing.status_code == 404
    assert page_body(foreign) == page_body(missing)


def test_the_admin_fence_answers_staff_the_same_for_any_object(client, world):
    client.force_login(world.users["manager_A"])

    foreign = client.get(admin_url(Order, "change", store_b_object(Order)(world).pk))
    missing = client.get(admin_url(Order, "change", MISSING_PK))

    assert (foreign.status_code, foreign["Location"]) == (missing.status_code, missing["Location"])
