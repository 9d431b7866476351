"""The guide importer: a row makes the guide and their login (no password, the role of the position)."""

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.utils import translation
from django.utils.translation import gettext

from scrm.audit import Actor
from scrm.imports import run_import
from scrm.models import AuditEvent
from scrm.roles import Role
from stores.models import Guide
from tests.data import write_xlsx
from tests.factories import StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

HEADERS_ZH = ["工号", "姓名", "门店编码", "手机号", "岗位", "入职日期"]
HEADERS_EN = ["Employee number", "Full name", "Store code", "Mobile", "Position", "Joined on"]


@pytest.fixture
def stores(db):
    return {"sh": StoreFactory(code="SH001"), "bj": StoreFactory(code="BJ002")}


def row(**values):
    defaults = {
        "工号": "E10001",
        "姓名": "王芳",
        "门店编码": "SH001",
        "手机号": "138 1234 5678",
        "岗位": "导购",
        "入职日期": datetime.date(2022, 3, 1),
    }
    defaults.update(values)
    return [defaults[h] for h in HEADERS_ZH]


def run(path, *, dry_run=False, language="en"):
    with translation.override(language):
        return run_import("guides", path, actor=Actor.system("tests"), dry_run=dry_run)


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


def trigger_events() -> int:
    return AuditEvent.objects.filter(action__startswith="db.").count()


def groups(user):
    return sorted(user.groups.values_list("name", flat=True))


def test_a_row_creates_the_guide_and_a_login_without_password(stores, tmp_path):
    path = write_xlsx(tmp_path / "g.xlsx", [HEADERS_ZH, row(工号=" e10001 ")])
    triggered = trigger_events()

    result = run(path)

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 0}
    guide = Guide.objects.get()
    assert (guide.employee_no, guide.name, guide.store, guide.mobile, guide.position, guide.status) == (
        "E10001",
        "王芳",
        stores["sh"],
        "+8613812345678",
        "guide",
        "active",
    )
    assert guide.joined_on == datetime.date(2022, 3, 1)
    assert guide.user.username == "e10001"
    assert not guide.user.has_usable_password()
    assert groups(guide.user) == [Role.GUIDE]
    assert AuditEvent.objects.filter(action="import.completed").count() == 1
    assert trigger_events() == triggered


def test_english_headers_and_a_manager(stores, tmp_path):
    path = write_xlsx(tmp_path / "g.xlsx", [HEADERS_EN, row(岗位="Manager", 手机号="")])

    run(path)

    guide = Guide.objects.get()
    assert (guide.position, guide.mobile) == ("manager", "")
    assert groups(guide.user) == [Role.STORE_MANAGER]


@pytest.mark.parametrize(
    ("values", "column", "reason"),
    [
        ({"门店编码": "XX9"}, "门店编码", "No store has the code “XX9”."),
        ({"工号": ""}, "工号", "Enter the employee number."),
        ({"姓名": ""}, "姓名", "Enter the full name."),
        ({"岗位": "保安"}, "岗位", "“保安” is not one of: 导购 / 店长."),
    ],
)
def test_each_bad_value_makes_its_row_invalid(stores, tmp_path, values, column, reason):
    path = write_xlsx(tmp_path / "bad.xlsx", [HEADERS_ZH, row(**values)])

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 1}
    [problem] = result.problems
    assert (problem.row, problem.column, problem.reason) == (2, column, reason)
    assert not Guide.objects.exists()


def test_a_missing_store_is_explained_in_the_active_language(stores, tmp_path):
    path = write_xlsx(tmp_path / "bad.xlsx", [HEADERS_ZH, row(门店编码="XX9")])

    result = run(path, language="zh-hans")

    with translation.override("zh-hans"):
        expected = gettext("No store has the code “%(code)s”.") % {"code": "XX9"}
    assert [(p.column, p.reason) for p in result.problems] == [("门店编码", expected)]


def test_a_login_name_taken_by_someone_else_makes_the_row_invalid(stores, tmp_path):
    UserFactory(username="e10001")
    path = write_xlsx(tmp_path / "g.xlsx", [HEADERS_ZH, row(), row(工号="E10002", 手机号="")])

    result = run(path)

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 1}
    assert [(p.row, p.column) for p in result.problems] == [(2, "工号")]
    assert list(Guide.objects.values_list("employee_no", flat=True)) == ["E10002"]


def test_re_import_is_a_no_op_and_a_change_moves_the_role(stores, tmp_path):
    path = write_xlsx(
        tmp_path / "g.xlsx", [HEADERS_ZH, row(), row(工号="E10002", 门店编码="BJ002", 手机号="")]
    )
    first = run(path)
    before = list(Guide.objects.order_by("id").values())
    users = get_user_model().objects.count()

    second = run(path)

    assert counts(first) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 0}
    assert counts(second) == {"new": 0, "updated": 0, "unchanged": 2, "invalid": 0}
    assert list(Guide.objects.order_by("id").values()) == before
    assert get_user_model().objects.count() == users

    third = run(write_xlsx(tmp_path / "h.xlsx", [HEADERS_ZH, row(岗位="店长", 门店编码="BJ002", 手机号="")]))

    guide = Guide.objects.get(employee_no="E10001")
    assert counts(third) == {"new": 0, "updated": 1, "unchanged": 0, "invalid": 0}
    assert (guide.position, guide.store, guide.mobile) == ("manager", stores["bj"], "+8613812345678")
    assert groups(guide.user) == [Role.STORE_MANAGER]


def test_a_dry_run_creates_no_login(stores, tmp_path):
    users = get_user_model().objects.count()

    result = run(write_xlsx(tmp_path / "g.xlsx", [HEADERS_ZH, row()]), dry_run=True)

    assert counts(result)["new"] == 1
    assert not Guide.objects.exists()
    assert get_user_model().objects.count() == users


def test_importing_guides_needs_the_right_to_manage_logins(stores, tmp_path):
    from scrm.imports import ImportNotAllowed, importers_for

    path = write_xlsx(tmp_path / "g.xlsx", [HEADERS_ZH, row()])
    operator = UserFactory(role=Role.HQ_OPERATOR)  # may add and change guides, not users
    admin = UserFactory(role=Role.HQ_ADMIN)
    assert operator.has_perms(["stores.add_guide", "stores.change_guide"])

    with translation.override("en"), pytest.raises(ImportNotAllowed) as refused:
        run_import("guides", path, actor=Actor.for_user(operator), dry_run=True)
    assert "creates their logins" in refused.value.message
    assert "guides" not in [i.name for i in importers_for(operator)]
    assert "stores" in [i.name for i in importers_for(operator)]
    assert not Guide.objects.exists() and not get_user_model().objects.filter(username="e10001").exists()

    with translation.override("en"):
        result = run_import("guides", path, actor=Actor.for_user(admin), dry_run=False)
    assert result.counts["new"] == 1
