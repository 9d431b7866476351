"""The order importer: one row per line, orders whole or not at all, metrics current afterwards."""

import datetime
import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone, translation

from members.models import Member, Order, OrderLine
from scrm.audit import Actor
from scrm.imports import ImportNotAllowed, run_import, template_workbook
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.data import write_xlsx
from tests.factories import GuideFactory, MemberFactory, StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

HEADERS_ZH = ["渠道", "订单号", "支付时间", "会员手机号", "门店编码", "导购工号", "订单金额", "退款金额"]
HEADERS_ZH += ["订单状态", "商品编码", "商品名称", "品类", "数量", "商品金额"]
HEADERS_EN = ["Channel", "Order number", "Paid at", "Member mobile", "Store code", "Guide employee number"]
HEADERS_EN += ["Order amount", "Refunded amount", "Order status", "SKU", "Product name", "Category"]
HEADERS_EN += ["Quantity", "Line amount"]
PAID = datetime.datetime(2026, 3, 1, 14, 30)


@pytest.fixture
def setup(db):
    store = StoreFactory(code="SH001")
    guide = GuideFactory(store=store, employee_no="E00001")
    member = MemberFactory(mobile="+8613812345678", home_store=store)
    return {"store": store, "guide": guide, "member": member}


def line(**values):
    defaults = {
        "渠道": "门店",
        "订单号": "P0001",
        "支付时间": PAID,
        "会员手机号": "138 1234 5678",
        "门店编码": " sh001 ",
        "导购工号": "E00001",
        "订单金额": "",
        "退款金额": "",
        "订单状态": "",
        "商品编码": "SKU-1",
        "商品名称": "精华",
        "品类": "护肤",
        "数量": 1,
        "商品金额": 100,
    }
    defaults.update(values)
    return [defaults[h] for h in HEADERS_ZH]


def run(path, *, dry_run=False, actor=None):
    with translation.override("en"):
        return run_import("orders", path, actor=actor or Actor.system("tests"), dry_run=dry_run)


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


def reasons(result):
    return [(p.row, p.column, p.reason) for p in result.problems]


def test_an_order_with_two_lines_is_stored_and_the_member_metrics_are_current(setup, tmp_path):
    path = write_xlsx(
        tmp_path / "o.xlsx",
        [
            HEADERS_ZH,
            line(订单金额=250.5),
            line(商品编码="SKU-2", 数量=2, 商品金额=150.5, 订单金额="250.50"),
        ],
    )

    result = run(path)

    assert counts(result) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 0}
    order = Order.objects.get()
    assert (order.channel, order.external_no, order.member, order.store, order.guide) == (
        "store",
        "P0001",
        setup["member"],
        setup["store"],
        setup["guide"],
    )
    assert (order.amount, order.refunded_amount, order.item_count, order.status) == (
        Decimal("250.50"),
        0,
        3,
        "paid",
    )
    assert order.paid_at == timezone.make_aware(PAID)
    assert list(order.lines.values_list("line_no", "sku", "quantity", "amount")) == [
        (1, "SKU-1", 1, Decimal("100.00")),
        (2, "SKU-2", 2, Decimal("150.50")),
    ]
    member = Member.objects.get(pk=setup["member"].pk)
    assert (member.order_count, member.total_spend, member.last_purchase_at) == (
        1,
        Decimal("250.50"),
        order.paid_at,
    )
    assert AuditEvent.objects.filter(action="import.completed").count() == 1


def test_the_same_file_twice_changes_nothing(setup, tmp_path):
    path = write_xlsx(tmp_path / "o.xlsx", [HEADERS_ZH, line(), line(商品编码="SKU-2")])
    run(path)
    before = list(OrderLine.objects.values_list("id", flat=True))

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 2, "invalid": 0}
    assert list(OrderLine.objects.values_list("id", flat=True)) == before


def test_a_refund_updates_the_order_and_the_metrics(setup, tmp_path):
    run(write_xlsx(tmp_path / "a.xlsx", [HEADERS_ZH, line(商品金额=300)]))

    result = run(write_xlsx(tmp_path / "b.xlsx", [HEADERS_ZH, line(商品金额=300, 退款金额=100)]))

    assert counts(result) == {"new": 0, "updated": 1, "unchanged": 0, "invalid": 0}
    order = Order.objects.get()
    assert (order.refunded_amount, order.status) == (Decimal("100.00"), "partially_refunded")
    assert Member.objects.get(pk=setup["member"].pk).total_spend == Decimal("200.00")

    run(write_xlsx(tmp_path / "c.xlsx", [HEADERS_ZH, line(商品金额=300, 订单状态="已退款")]))
    order.refresh_from_db()
    assert (order.refunded_amount, order.status) == (Decimal("300.00"), "refunded")
    assert Member.objects.get(pk=setup["member"].pk).order_count == 0


def test_changed_lines_replace_the_stored_ones(setup, tmp_path):
    run(write_xlsx(tmp_path / "a.xlsx", [HEADERS_ZH, line(), line(商品编码="SKU-2")]))

    result = run(write_xlsx(tmp_path / "b.xlsx", [HEADERS_ZH, line(数量=3)]))

    assert counts(result)["updated"] == 1
    assert list(OrderLine.objects.values_list("sku", "quantity")) == [("SKU-1", 3)]
    assert Order.objects.get().item_count == 3


def test_a_buyer_who_is_not_a_member(setup, tmp_path):
    result = run(write_xlsx(tmp_path / "o.xlsx", [HEADERS_ZH, line(会员手机号="", 渠道="天猫")]))

    assert counts(result)["new"] == 1
    assert Order.objects.get().member is None


def test_english_headers(setup, tmp_path):
    row = line(渠道="tmall", 订单状态="paid")
    path = write_xlsx(tmp_path / "o.xlsx", [HEADERS_EN, row])

    assert counts(run(path))["new"] == 1
    assert Order.objects.get().channel == "tmall"


def test_bad_values_are_reported_per_row_and_refuse_the_whole_order(setup, tmp_path):
    path = write_xlsx(
        tmp_path / "o.xlsx",
        [
            HEADERS_ZH,
            line(订单号="A1"),
            line(订单号="A1", 商品编码="SKU-2", 数量=0),
            line(订单号="B1", 渠道="火星"),
            line(订单号="C1", 会员手机号="13900000000"),
            line(订单号="D1", 订单金额=99),
            line(订单号="E1", 退款金额=101),
            line(订单号="F1", 订单状态="已支付", 退款金额=10),
            line(订单号="G1", 门店编码="NOPE", 导购工号="E99999"),
            line(订单号="H1", 支付时间="明天", 商品金额=-1),
            line(订单号="I1", 门店编码=""),
            line(订单号="I1", 商品编码="SKU-2"),
            line(订单号="OK"),
        ],
    )

    result = run(path)

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 11}
    found = reasons(result)
    assert (3, "数量", "The quantity must be a positive whole number.") in found
    assert any(r[0] == 2 and "row 3" in r[2] and "whole or not at all" in r[2] for r in found)
    assert any(r[:2] == (4, "渠道") and "火星" in r[2] for r in found)
    assert any(r[:2] == (5, "会员手机号") and "No member has the mobile" in r[2] for r in found)
    assert any(r[:2] == (6, "订单金额") and "not the sum of its line amounts" in r[2] for r in found)
    assert any(r[:2] == (7, "退款金额") and "more than the order amount" in r[2] for r in found)
    assert any(r[:2] == (8, "订单状态") for r in found)
    assert any(r[:2] == (9, "门店编码") for r in found) and any(r[:2] == (9, "导购工号") for r in found)
    assert any(r[:2] == (10, "支付时间") for r in found) and any(r[:2] == (10, "商品金额") for r in found)
    assert any(r[0] == 12 and "differ from its line in row 11" in r[2] for r in found)
    assert list(Order.objects.values_list("external_no", flat=True)) == ["OK"]
    assert result.error_workbook


def test_a_line_twice_in_the_file_is_reported(setup, tmp_path):
    path = write_xlsx(tmp_path / "o.xlsx", [HEADERS_ZH, line(), line(商品编码="SKU-2"), line()])

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 3}
    assert any(p.row == 4 and "also appears in row 2" in p.reason for p in result.problems)
    assert not Order.objects.exists()


def test_a_dry_run_counts_and_writes_nothing(setup, tmp_path):
    result = run(write_xlsx(tmp_path / "o.xlsx", [HEADERS_ZH, line()]), dry_run=True)

    assert counts(result)["new"] == 1
    assert not Order.objects.exists()


def test_rights_are_per_resource(setup, tmp_path):
    path = write_xlsx(tmp_path / "o.xlsx", [HEADERS_ZH, line()])
    auditor = UserFactory(role=Role.AUDITOR)
    operator = UserFactory(role=Role.HQ_OPERATOR)

    with pytest.raises(ImportNotAllowed):
        run(path, actor=Actor.for_user(auditor))
    assert not Order.objects.exists()
    assert counts(run(path, actor=Actor.for_user(operator)))["new"] == 1


def test_the_template_has_the_headers_and_drop_downs(db):
    import io

    import openpyxl

    with translation.override("en"):
        data = template_workbook("orders")
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    headers = [c.value for c in sheet[1]]
    assert headers[:3] == ["Channel *", "Order number *", "Paid at *"]
    validations = {str(v.sqref).split(":")[0]: v.formula1 for v in sheet.data_validations.dataValidation}
    assert "天猫" in validations["A2"]


def test_the_command_line_prints_the_counts_last(setup, tmp_path):
    path = write_xlsx(tmp_path / "orders.xlsx", [HEADERS_ZH, line(), line(订单号="X", 数量="many")])
    out, err = StringIO(), StringIO()
    with translation.override("en"):
        call_command("import_file", "orders", str(path), stdout=out, stderr=err)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary == {
        "resource": "orders",
        "dry_run": False,
        "new": 1,
        "updated": 0,
        "unchanged": 0,
        "invalid": 1,
        "total": 2,
        "error_workbook": str(tmp_path / "orders.errors.xlsx"),
    }

    # again: nothing new, still exit 0 (rows were valid and unchanged)
    out = StringIO()
    with translation.override("en"):
        call_command("import_file", "orders", str(path), stdout=out, stderr=StringIO())
    assert json.loads(out.getvalue().strip().splitlines()[-1])["unchanged"] == 1

    bad = write_xlsx(tmp_path / "bad.xlsx", [HEADERS_ZH, line(数量="many")])
    with translation.override("en"), pytest.raises(CommandError):
        call_command("import_file", "orders", str(bad), stdout=StringIO(), stderr=StringIO())
