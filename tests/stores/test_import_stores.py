"""The store importer through the shared pipeline: headers, normalisation, bad rows, re-import, audit."""

import datetime

import pytest
from django.utils import translation
from django.utils.translation import gettext

from scrm.audit import Actor
from scrm.imports import ImportNotAllowed, run_import
from scrm.models import AuditEvent
from scrm.roles import Role
from stores.models import Store
from tests.data import write_xlsx
from tests.factories import RegionFactory, StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

HEADERS_ZH = ["门店编码", "门店名称", "区域", "省份", "城市", "地址", "状态", "开业日期"]
HEADERS_EN = ["Store code", "Store name", "Region", "Province", "City", "Address", "Status", "Opened on"]


@pytest.fixture
def regions(db):
    return {
        "east": RegionFactory(code="EAST", name="华东"),
        "north": RegionFactory(code="NORTH", name="华北"),
    }


def row(**values):
    """A store row in HEADERS_ZH order; defaults make a valid row."""
    defaults = {
        "门店编码": "SH001",
        "门店名称": "上海静安店",
        "区域": "EAST",
        "省份": "上海市",
        "城市": "上海",
        "地址": "南京西路1266号",
        "状态": "营业中",
        "开业日期": datetime.date(2020, 5, 1),
    }
    defaults.update(values)
    return [defaults[h] for h in HEADERS_ZH]


def run(path, *, dry_run=False, actor=None, language="en"):
    with translation.override(language):
        return run_import("stores", path, actor=actor or Actor.system("tests"), dry_run=dry_run)


def trigger_events() -> int:
    """Row-level audit events the database triggers wrote (writes outside an audited service)."""
    return AuditEvent.objects.filter(action__startswith="db.").count()


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


def stored(code):
    store = Store.objects.get(code=code)
    return (
        store.name,
        store.region.code,
        store.province,
        store.city,
        store.address,
        store.status,
        store.opened_on,
    )


def test_chinese_headers_create_the_store_with_one_audit_event(regions, tmp_path):
    path = write_xlsx(tmp_path / "stores.xlsx", [HEADERS_ZH, row()])
    user = UserFactory(role=Role.HQ_OPERATOR)
    triggered = trigger_events()

    result = run(path, actor=Actor.for_user(user))

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 0}
    assert stored("SH001") == (
        "上海静安店",
        "EAST",
        "上海市",
        "上海",
        "南京西路1266号",
        "open",
        datetime.date(2020, 5, 1),
    )
    assert list(AuditEvent.objects.filter(action__startswith="import.").values_list("action", flat=True)) == [
        "import.completed"
    ]
    event = AuditEvent.objects.get(action="import.completed")
    assert (event.actor, event.changes["resource"], event.changes["counts"]["new"]) == (user, "stores", 1)
    assert trigger_events() == triggered


def test_english_headers_and_english_values_are_accepted(regions, tmp_path):
    path = write_xlsx(
        tmp_path / "en.xlsx",
        [HEADERS_EN, row(门店编码="BJ002", 区域="north", 状态="Closed", 开业日期="2019/3/4")],
    )

    result = run(path)

    assert counts(result)["new"] == 1
    assert stored("BJ002")[1:] == (
        "NORTH",
        "上海市",
        "上海",
        "南京西路1266号",
        "closed",
        datetime.date(2019, 3, 4),
    )


@pytest.mark.parametrize("typed", [" sh001 ", "sh001", "ＳＨ００１", "Sh001"])
def test_store_codes_are_trimmed_folded_and_upper_cased(regions, tmp_path, typed):
    path = write_xlsx(tmp_path / "c.xlsx", [HEADERS_ZH, row(门店编码=typed)])

    assert counts(run(path))["new"] == 1
    assert list(Store.objects.values_list("code", flat=True)) == ["SH001"]


@pytest.mark.parametrize(
    ("typed", "status"), [("营业中", "open"), ("已关闭", "closed"), ("OPEN", "open"), ("closed", "closed")]
)
def test_statuses_are_read_in_chinese_and_english(regions, tmp_path, typed, status):
    path = write_xlsx(tmp_path / "s.xlsx", [HEADERS_ZH, row(状态=typed)])

    run(path)

    assert Store.objects.get().status == status


def test_a_region_may_be_given_by_its_name(regions, tmp_path):
    path = write_xlsx(tmp_path / "r.xlsx", [HEADERS_ZH, row(区域="华北")])

    run(path)

    assert Store.objects.get().region == regions["north"]


@pytest.mark.parametrize(
    ("values", "column", "reason"),
    [
        ({"区域": "WEST"}, "区域", "No region has the code or name “WEST”."),
        ({"区域": ""}, "区域", "Enter the region code or name."),
        ({"门店编码": ""}, "门店编码", "Enter the store code."),
        ({"门店名称": ""}, "门店名称", "Enter the store name."),
        ({"状态": "装修中"}, "状态", "“装修中” is not one of: 营业中 / 已关闭."),
        ({"开业日期": "soon"}, "开业日期", "“soon” is not a date; write it as 1990-01-02."),
        ({"城市": "城" * 33}, "城市", "Longer than 32 characters."),
    ],
)
def test_each_bad_value_makes_its_row_invalid(regions, tmp_path, values, column, reason):
    path = write_xlsx(tmp_path / "bad.xlsx", [HEADERS_ZH, row(**values)])

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 1}
    [problem] = result.problems
    assert (problem.row, problem.column, problem.reason) == (2, column, reason)
    assert not Store.objects.exists()


def test_a_missing_region_is_explained_in_the_active_language(regions, tmp_path):
    # the reason goes through the catalogue (its Chinese text is checked by the catalogue tests)
    path = write_xlsx(tmp_path / "bad.xlsx", [HEADERS_ZH, row(区域="WEST")])

    result = run(path, language="zh-hans")

    [problem] = result.problems
    with translation.override("zh-hans"):
        expected = gettext("No region has the code or name “%(region)s”.") % {"region": "WEST"}
    assert (problem.column, problem.reason) == ("区域", expected)


def test_importing_the_same_file_twice_changes_nothing_the_second_time(regions, tmp_path):
    path = write_xlsx(
        tmp_path / "same.xlsx",
        [HEADERS_ZH, row(), row(门店编码="BJ002", 区域="华北", 省份="", 地址="", 状态="", 开业日期="")],
    )
    first = run(path)
    triggered = trigger_events()
    before = list(Store.objects.order_by("code").values())

    second = run(path)

    assert counts(first) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 0}
    assert counts(second) == {"new": 0, "updated": 0, "unchanged": 2, "invalid": 0}
    assert list(Store.objects.order_by("code").values()) == before
    assert AuditEvent.objects.filter(action="import.completed").count() == 2
    assert trigger_events() == triggered


def test_a_changed_row_updates_and_empty_cells_keep_stored_values(regions, tmp_path):
    StoreFactory(
        code="SH001", name="旧名", region=regions["east"], province="上海市", city="上海", address="旧地址"
    )
    path = write_xlsx(
        tmp_path / "u.xlsx",
        [HEADERS_ZH, row(门店名称="上海静安旗舰店", 区域="NORTH", 地址="", 状态="已关闭")],
    )

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 1, "unchanged": 0, "invalid": 0}
    assert stored("SH001") == (
        "上海静安旗舰店",
        "NORTH",
        "上海市",
        "上海",
        "旧地址",
        "closed",
        datetime.date(2020, 5, 1),
    )


def test_a_dry_run_counts_but_writes_nothing(regions, tmp_path):
    StoreFactory(code="SH001", region=regions["east"])
    path = write_xlsx(tmp_path / "d.xlsx", [HEADERS_ZH, row(), row(门店编码="BJ002")])

    result = run(path, dry_run=True)

    assert counts(result) == {"new": 1, "updated": 1, "unchanged": 0, "invalid": 0}
    assert list(Store.objects.values_list("code", flat=True)) == ["SH001"]
    assert AuditEvent.objects.latest("id").action == "import.validated"


def test_duplicate_codes_in_a_file_are_reported(regions, tmp_path):
    path = write_xlsx(tmp_path / "dup.xlsx", [HEADERS_ZH, row(), row(门店编码="sh001 ")])

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 2}
    assert [(p.row, p.column) for p in result.problems] == [(2, "门店编码"), (3, "门店编码")]


def test_import_needs_add_and_change_store(regions, tmp_path):
    from django.contrib.auth.models import Permission

    path = write_xlsx(tmp_path / "p.xlsx", [HEADERS_ZH, row()])
    only_add = UserFactory(is_staff=True)
    only_add.user_permissions.add(
        Permission.objects.get(content_type__app_label="stores", codename="add_store")
    )
    both = UserFactory(is_staff=True)
    both.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="stores", codename__in=["add_store", "change_store"]
        )
    )

    with pytest.raises(ImportNotAllowed):
        run(path, actor=Actor.for_user(only_add))
    assert counts(run(path, actor=Actor.for_user(both)))["new"] == 1
