"""Background exports of members, orders, points and consent from their admin lists."""

import datetime
from decimal import Decimal

import openpyxl
import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext

from members.models import ConsentRecord, Member, PointsEntry
from members.services import add_points, record_consent
from scrm.audit import Actor
from scrm.exports import run_export
from scrm.models import AuditEvent, ExportJob
from scrm.roles import Role, sync_role_groups
from tests.factories import GuideFactory, MemberFactory, OrderFactory, StoreFactory, TierFactory, UserFactory
from tests.worker import celery_worker

CHANGELIST = reverse("admin:members_member_changelist")
# Headers of their own (not a model field's name); Chinese once the catalogue has them.
MEMBER_MOBILE, MEMBER_NAME = gettext("member mobile"), gettext("member name")
BUTTON = reverse("admin:members_member_export_background")


@pytest.fixture(scope="session", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """The role groups with every app's permissions (see tests/members/test_admin.py)."""
    with django_db_blocker.unblock():
        sync_role_groups()


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def operator_client(client, hq_operator):
    client.force_login(hq_operator)
    return client


def run_only_job() -> ExportJob:
    """The one job the request queued, run here as the worker would (the test never commits)."""
    return run_export(ExportJob.objects.get().pk)


def xlsx_rows(job: ExportJob) -> list[tuple]:
    with job.file.open("rb") as handle:
        return list(openpyxl.load_workbook(handle).active.iter_rows(values_only=True))


def without_full_mobiles(role: str = Role.HQ_OPERATOR) -> None:
    """A brand that gives its operators no full numbers."""
    Group.objects.get(name=role).permissions.remove(
        Permission.objects.get(content_type__app_label="members", codename="view_full_mobile")
    )


# --------------------------------------------------------------------------------------------------
# Members


@pytest.mark.django_db
def test_member_export_has_chinese_headers_and_readable_values(operator_client):
    guide = GuideFactory(employee_no="E777", name="李导购")
    member = MemberFactory(
        mobile="+8613812345678",
        name="王小明",
        gender=Member.Gender.FEMALE,
        birthday=datetime.date(1990, 1, 2),
        home_store=guide.store,
        guide=guide,
        tier=TierFactory(name="金卡"),
        joined_at=datetime.datetime(2024, 3, 1, 1, 30, tzinfo=datetime.UTC),
    )
    Member.objects.filter(pk=member.pk).update(consent_sms=True, spend_12m=Decimal("1234.50"))

    assert operator_client.post(BUTTON, {"format": "xlsx"}).status_code == 302
    job = run_only_job()

    header, row = xlsx_rows(job)
    assert header == (
        "手机号", "姓名", "性别", "生日", "门店编码", "归属门店", "区域", "工号", "专属导购", "等级",
        "积分余额", "入会时间", "入会渠道", "状态", "生命周期阶段", "RFM 分层", "首次购买", "最近购买",
        "订单数", "近 12 个月消费", "客单价", "短信授权", "电话授权", "企业微信授权", "邮件授权",
    )  # fmt: skip
    assert row == (
        "13812345678", "王小明", "女", datetime.datetime(1990, 1, 2), guide.store.code, guide.store.name,
        guide.store.region.name, "E777", "李导购", "金卡", 0,
        datetime.datetime(2024, 3, 1, 9, 30),  # Beijing time
        "门店 POS", "正常", "未购会员", None, None, None, 0, 1234.5, 0, "是", "否", "否", "否",
    )  # fmt: skip


@pytest.mark.django_db
def test_member_export_masks_mobiles_for_a_user_without_the_permission(operator_client):
    without_full_mobiles()
    MemberFactory(mobile="+8613812345678")

    operator_client.post(BUTTON, {"format": "csv"})
    job = run_only_job()

    assert job.params["full_personal_data"] is False
    text = job.file.open("rb").read().decode("utf-8-sig")
    assert text.splitlines()[1].split(",")[0] == "138****5678"
    assert AuditEvent.objects.get(action="export.requested").changes["masked"] is True
    assert AuditEvent.objects.get(action="export.completed").changes["masked"] is True


@pytest.mark.django_db
def test_member_export_keeps_the_changelist_filters_search_and_order(operator_client):
    gold, silver = TierFactory(name="金卡"), TierFactory(name="银卡")
    now = timezone.now()
    for i, tier in enumerate([gold, silver, gold, gold]):
        MemberFactory(name=f"王{i}", tier=tier, joined_at=now - datetime.timedelta(days=i))
    MemberFactory(name="李9", tier=gold)

    operator_client.post(f"{BUTTON}?tier__id__exact={gold.pk}&q=王&p=3", {"format": "xlsx"})
    job = run_only_job()

    # The page number ("p") is how the list was shown, not which rows it holds.
    assert job.params["filters"] == {"tier__id__exact": [str(gold.pk)], "q": ["王"]}
    assert [row[1] for row in xlsx_rows(job)[1:]] == ["王0", "王2", "王3"]
    assert job.rows == 3


@pytest.mark.django_db
def test_the_action_exports_the_ticked_rows_only(operator_client):
    first, second, _third = MemberFactory.create_batch(3)

    response = operator_client.post(
        CHANGELIST,
        {
            "action": "export_csv_in_background",
            "_selected_action": [first.pk, second.pk],
            "select_across": "0",
        },
    )
    job = run_only_job()

    assert response.status_code == 302
    assert (job.file_format, sorted(job.params["pks"]), job.rows) == (
        "csv",
        sorted([str(first.pk), str(second.pk)]),
        2,
    )


@pytest.mark.django_db
def test_the_action_with_select_all_exports_every_row_the_filters_match(operator_client):
    gold = TierFactory()
    member = MemberFactory(tier=gold)
    MemberFactory.create_batch(2)

    operator_client.post(
        f"{CHANGELIST}?tier__id__exact={gold.pk}",
        {"action": "export_xlsx_in_background", "_selected_action": [member.pk], "select_across": "1"},
    )
    job = run_only_job()

    assert (job.params["pks"], job.params["filters"], job.rows) == (
        None,
        {"tier__id__exact": [str(gold.pk)]},
        1,
    )


@pytest.mark.django_db
def test_a_forged_selection_cannot_reach_rows_outside_the_filters(operator_client):
    gold = TierFactory()
    inside, outside = MemberFactory(tier=gold), MemberFactory()

    operator_client.post(
        f"{CHANGELIST}?tier__id__exact={gold.pk}",
        {
            "action": "export_xlsx_in_background",
            "_selected_action": [inside.pk, outside.pk],
            "select_across": "0",
        },
    )
    job = run_only_job()

    assert job.rows == 1


@pytest.mark.django_db
def test_unknown_filters_are_refused_and_nothing_is_queued(operator_client):
    response = operator_client.post(f"{BUTTON}?no_such_field=1", {"format": "xlsx"})

    assert response.status_code == 302
    assert not ExportJob.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="export.").exists()


@pytest.mark.django_db
def test_the_buttons_and_actions_show_only_for_users_who_may_export(client, hq_operator, auditor):
    MemberFactory()
    client.force_login(hq_operator)
    page = client.get(CHANGELIST)
    assert BUTTON in page.content.decode()
    assert "export_xlsx_in_background" in dict(page.context["action_form"].fields["action"].choices)

    client.force_login(auditor)  # reads everything, exports nothing
    page = client.get(CHANGELIST)
    assert BUTTON not in page.content.decode()
    assert page.context["action_form"] is None  # the auditor has no action at all
    assert client.post(BUTTON, {"format": "xlsx"}).status_code == 403
    assert not ExportJob.objects.exists()


@pytest.mark.django_db
def test_the_button_refuses_an_unknown_format(operator_client):
    assert operator_client.post(BUTTON, {"format": "xls"}).status_code == 400
    assert operator_client.get(BUTTON).status_code == 405
    assert not ExportJob.objects.exists()


@pytest.mark.django_db
def test_a_member_export_runs_as_many_queries_for_20_members_as_for_2(operator_client):
    store = StoreFactory()
    guide, tier = GuideFactory(store=store), TierFactory()

    def queries_of_one_export() -> int:
        operator_client.post(BUTTON, {"format": "xlsx"})
        job_id = ExportJob.objects.latest("id").pk
        with CaptureQueriesContext(connection) as queries:
            run_export(job_id)
        assert ExportJob.objects.get(pk=job_id).state == "done"
        return len(queries)

    queries_of_one_export()  # warm-up: content types and permissions get cached
    MemberFactory.create_batch(2, home_store=store, guide=guide, tier=tier)
    with_2 = queries_of_one_export()
    MemberFactory.create_batch(18, home_store=store, guide=guide, tier=tier)
    with_20 = queries_of_one_export()

    assert with_2 == with_20


# --------------------------------------------------------------------------------------------------
# Rows hung on a member


@pytest.mark.django_db
def test_order_export_names_the_member_by_masked_or_full_mobile(client, hq_operator):
    member = MemberFactory(mobile="+8613812345678", name="王小明")
    OrderFactory(member=member, external_no="NO1", amount=Decimal("199.00"))
    OrderFactory(member=None, store=StoreFactory(), external_no="NO2")
    client.force_login(hq_operator)

    client.post(reverse("admin:members_order_export_background"), {"format": "xlsx"})
    rows = xlsx_rows(run_only_job())

    assert rows[0][:7] == ("订单号", "渠道", "状态", "支付时间", MEMBER_MOBILE, MEMBER_NAME, "门店编码")
    by_number = {row[0]: row for row in rows[1:]}
    assert by_number["NO1"][4:6] == ("13812345678", "王小明")
    assert by_number["NO2"][4:6] == (None, None)  # a non-member's order
    assert by_number["NO1"][10] == 199


@pytest.mark.django_db
def test_points_export_lists_the_ledger_with_signed_amounts(client, hq_operator):
    without_full_mobiles()
    member = MemberFactory(mobile="+8613812345678")
    actor = Actor.for_user(hq_operator)
    add_points(member, delta=100, kind=PointsEntry.Kind.EARN, actor=actor, reason="=SUM(1)")
    add_points(member, delta=-30, kind=PointsEntry.Kind.REDEEM, actor=actor)
    client.force_login(hq_operator)

    client.post(reverse("admin:members_pointsentry_export_background"), {"format": "csv"})
    lines = run_only_job().file.open("rb").read().decode("utf-8-sig").splitlines()

    assert [line.split(",")[1:6] for line in lines[1:]] == [
        ["138****5678", member.name, "兑换", "-30", ""],
        ["138****5678", member.name, "获得", "100", "'=SUM(1)"],
    ]


@pytest.mark.django_db
def test_consent_export_shows_evidence_only_with_the_full_permission(client, hq_operator):
    member = MemberFactory(mobile="+8613812345678")
    record_consent(
        member,
        channel="sms",
        action=ConsentRecord.Action.GRANT,
        source=ConsentRecord.Source.HQ_ADMIN,
        actor=Actor.for_user(hq_operator, request_id="a" * 32, ip="10.0.0.1"),
        policy_version="2024-01",
    )
    client.force_login(hq_operator)
    url = reverse("admin:members_consentrecord_export_background")

    client.post(url, {"format": "xlsx"})
    full = xlsx_rows(run_only_job())
    ExportJob.objects.all().delete()
    without_full_mobiles()
    client.post(url, {"format": "xlsx"})
    masked = xlsx_rows(run_only_job())

    assert full[0][1:4] == (MEMBER_MOBILE, MEMBER_NAME, "渠道")
    assert full[1][1] == "13812345678"
    assert '"ip": "10.0.0.1"' in full[1][-1]
    assert (masked[1][1], masked[1][-1]) == ("138****5678", "****")


# --------------------------------------------------------------------------------------------------
# In a real browser, on a real worker


@pytest.mark.browser
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_hq_exports_the_member_list_in_a_browser_and_downloads_the_xlsx(
    live_server, monkeypatch, settings, tmp_path
):
    from tests.browser import browser_page, log_in, screenshot  # playwright only where it is used

    # given an operator and members (rows exist before the browser opens), one named like a formula
    monkeypatch.setenv("DJANGO_MEDIA_ROOT", str(settings.MEDIA_ROOT))  # the worker writes, we serve
    operator = UserFactory(username="operator_b", role=Role.HQ_OPERATOR)
    store = StoreFactory(code="SH001", name="上海静安嘉里中心店")
    MemberFactory(mobile="+8613912340000", name="林晓", home_store=store)
    MemberFactory(mobile="+8613912340001", name='=HYPERLINK("http://x")', home_store=store)

    # when they press the export button on the member list, open "my exports" and download the file
    with celery_worker(), browser_page() as page:
        log_in(page, live_server.url, operator.username, "pw-for-tests")
        page.goto(live_server.url + CHANGELIST)
        screenshot(page, "export-1-member-list")
        with page.expect_navigation():
            page.locator("form.scrm-export button[value=xlsx]").click()
        with page.expect_navigation():
            page.locator(".messagelist a").click()
        link = page.locator("a[href$='/download/']")
        link.wait_for(timeout=60_000)  # the page reloads itself until the worker is done
        screenshot(page, "export-2-my-exports")
        with page.expect_download() as download:
            link.click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)

    # then the file holds both members, the formula as text, and the export is audited end to end
    sheet = openpyxl.load_workbook(saved).active
    rows = {row[0].value: row for row in sheet.iter_rows(min_row=2)}
    assert set(rows) == {"13912340000", "13912340001"}
    assert (rows["13912340001"][1].value, rows["13912340001"][1].data_type) == ('=HYPERLINK("http://x")', "s")
    assert saved.suffix == ".xlsx"
    assert list(
        AuditEvent.objects.filter(action__startswith="export.")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["export.requested", "export.completed", "export.downloaded"]
