"""HQ imports an order workbook in a real browser: one row per line, a bad line refuses its order."""

import datetime

import pytest
from django.urls import reverse

from members.models import Member, Order, OrderLine
from scrm.models import ImportJob
from scrm.roles import Role
from tests.browser import browser_page, log_in, screenshot
from tests.data import write_xlsx
from tests.factories import MemberFactory, StoreFactory, UserFactory
from tests.worker import celery_worker

PASSWORD = "pw-for-tests"

pytestmark = [pytest.mark.browser, pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

HEADERS = ["渠道", "订单号", "支付时间", "会员手机号", "门店编码", "商品编码", "品类", "数量", "商品金额"]


def test_hq_imports_orders_from_excel(live_server, tmp_path):
    UserFactory(username="hq_orders", role=Role.HQ_OPERATOR)
    store = StoreFactory(code="SH001")
    member = MemberFactory(mobile="+8613812345678", home_store=store)
    paid = datetime.datetime(2026, 3, 1, 14, 30)
    rows = [HEADERS]
    for i in range(10):
        for sku in ("SKU-1", "SKU-2"):
            rows.append(
                ["门店", f"P{i:04d}", paid, "13812345678" if i % 2 else "", "SH001", sku, "护肤", 1, 100]
            )
    rows[4][7] = 0  # order P0001's second line has no quantity: the whole order is refused
    path = write_xlsx(tmp_path / "订单导入.xlsx", rows)

    with celery_worker(), browser_page() as page:
        log_in(page, live_server.url, "hq_orders", PASSWORD)
        page.goto(live_server.url + reverse("imports:index"))
        page.locator("select[name=resource]").select_option("orders")
        page.locator("input[name=file]").set_input_files(str(path))
        page.locator("#import-upload input[type=submit]").click()

        page.wait_for_selector("#confirm-import", timeout=60_000)
        assert page.locator("#count-new strong").inner_text() == "18"
        assert page.locator("#count-invalid strong").inner_text() == "2"
        assert "数量" in page.locator("#problems").inner_text()  # the column of the bad line
        screenshot(page, "import-orders-preview-desktop")

        page.locator("#confirm-import").click()
        page.wait_for_selector("#content-main[data-state=done]", timeout=60_000)
        screenshot(page, "import-orders-done-desktop")

    assert Order.objects.count() == 9 and OrderLine.objects.count() == 18
    assert not Order.objects.filter(external_no="P0001").exists()
    assert Member.objects.get(pk=member.pk).order_count == 4
    for job in ImportJob.objects.all():
        job.file.delete(save=False)
        job.error_file.delete(save=False)
