"""HQ imports a real xlsx in a real browser: upload → check (progress) → preview → confirm → imported."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from members.models import ConsentRecord, Member, PrivacyNotice
from scrm.models import ImportJob
from scrm.roles import Role
from tests.browser import browser_page, log_in, screenshot
from tests.data import MEMBER_HEADERS_ZH, write_xlsx
from tests.factories import GuideFactory, StoreFactory, TierFactory, UserFactory
from tests.worker import celery_worker

PASSWORD = "pw-for-tests"

pytestmark = [pytest.mark.browser, pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def test_hq_imports_members_from_excel(live_server, tmp_path):
    # given an HQ operator, a store with a guide, and a workbook of 30 members, two of them bad
    UserFactory(username="hq_importer", role=Role.HQ_OPERATOR)
    store = StoreFactory(code="SH001", name="上海静安嘉里中心店")
    GuideFactory(store=store, employee_no="E00001", name="王芳")
    TierFactory(code="gold", name="金卡", rank=3)
    # consent needs a published privacy notice (transactional tests empty the seeded ones)
    PrivacyNotice.objects.get_or_create(
        version="browser-test",
        defaults={"purposes": ["marketing"], "published_at": timezone.now() - datetime.timedelta(days=1)},
    )
    rows = [MEMBER_HEADERS_ZH]
    for i in range(30):
        rows.append(
            [
                f"138 1234 {i:04d}",
                f"会员{i}",
                "女" if i % 2 else "男",
                datetime.date(1985, 1, 1) + datetime.timedelta(days=i * 97),
                "sh001",
                "E00001" if i % 3 == 0 else "",
                "gold" if i % 5 == 0 else "",
                "护肤，敏感肌" if i % 4 == 0 else "",
                "是" if i % 2 else "否",
                "",
                datetime.datetime(2024, 3, 1, 10, 0),
                "门店",
            ]
        )
    rows[5][0] = "12345"  # not a mobile
    rows[9][4] = "XX999"  # no such store
    path = write_xlsx(tmp_path / "会员导入.xlsx", rows)

    with celery_worker(), browser_page() as page:
        log_in(page, live_server.url, "hq_importer", PASSWORD)

        # when they open the import page from the admin index
        page.locator("#scrm-import-link a.section").click()
        page.wait_for_url(live_server.url + reverse("imports:index"))
        screenshot(page, "import-upload-desktop")

        # and upload the workbook
        page.locator("select[name=resource]").select_option("members")
        page.locator("input[name=file]").set_input_files(str(path))
        page.locator("#import-upload input[type=submit]").click()

        # then the check runs (progress) and the preview shows the counts and each invalid row
        page.wait_for_selector("#confirm-import", timeout=60_000)
        assert page.locator("#count-new strong").inner_text() == "28"
        assert page.locator("#count-invalid strong").inner_text() == "2"
        problems = page.locator("#problems").inner_text()
        assert "12345" in problems and "XX999" in problems
        screenshot(page, "import-preview-desktop")

        # when they confirm, the import runs and the page shows the result
        page.locator("#confirm-import").click()
        page.wait_for_selector("#content-main[data-state=done]", timeout=60_000)
        assert page.locator("#count-new strong").inner_text() == "28"
        assert page.locator("#error-workbook").is_visible()
        screenshot(page, "import-done-desktop")

    assert Member.objects.count() == 28
    assert ConsentRecord.objects.filter(channel="sms", action="grant").count() == 15
    assert Member.objects.get(mobile="+8613812340000").guide.employee_no == "E00001"
    for job in ImportJob.objects.all():
        job.file.delete(save=False)
        job.error_file.delete(save=False)
