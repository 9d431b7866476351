"""Background exports: the streaming writers, the job services, the download page and a real worker."""

import csv
import datetime
import io
from decimal import Decimal

import openpyxl
import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import translation

from members.models import Member
from scrm import exports
from scrm.audit import Actor
from scrm.export_tasks import ExportJobTask
from scrm.exports import (
    Column,
    ExportSource,
    Kind,
    get_source,
    request_export,
    run_export,
    write_table,
    write_xlsx,
)
from scrm.models import AuditEvent, ExportJob
from scrm.roles import Role, sync_role_groups
from tests.factories import GuideFactory, ManagerFactory, MemberFactory, StoreFactory, UserFactory
from tests.worker import celery_worker, wait_for

FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]
MEMBERS = "members.member"
BUTTON = reverse("admin:members_member_export_background")
LIST = reverse("exports:list")


@pytest.fixture(scope="session", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """The role groups with every app's permissions (see tests/members/test_admin.py)."""
    with django_db_blocker.unblock():
        sync_role_groups()


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def export_for(user, *, source: str = MEMBERS, file_format: str = "xlsx", params=None) -> ExportJob:
    """Request an export as ``user`` and run it here, as the worker would (the enqueue never commits)."""
    job = request_export(
        get_source(source),
        params=params or {"filters": {}, "pks": None},
        file_format=file_format,
        actor=Actor.for_user(user),
    )
    return run_export(job.pk)


def xlsx_rows(job: ExportJob) -> list[tuple]:
    with job.file.open("rb") as handle:
        sheet = openpyxl.load_workbook(handle).active
        return list(sheet.iter_rows(values_only=True))


def remove_permission(role: str, codename: str) -> None:
    app_label, name = codename.split(".")
    Group.objects.get(name=role).permissions.remove(
        Permission.objects.get(content_type__app_label=app_label, codename=name)
    )


# --------------------------------------------------------------------------------------------------
# The writers


TEXT = (Column("name", "name"),)


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_xlsx_text_that_starts_like_a_formula_is_written_as_a_string(start):
    value = f'{start}HYPERLINK("http://x","y")'
    handle = io.BytesIO()

    write_table(handle, "xlsx", TEXT, [[value]], title="t")

    handle.seek(0)
    cell = openpyxl.load_workbook(handle).active["A2"]
    assert cell.data_type == "s"
    # XlsxWriter stores a carriage return as Excel's own escape, which Excel turns back into CR.
    assert cell.value == value.replace("\r", "_x000D_")


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_csv_text_that_starts_like_a_formula_gets_an_apostrophe(start):
    value = f"{start}1+2"
    handle = io.BytesIO()

    write_table(handle, "csv", TEXT, [[value], ["plain"]], title="t")

    rows = list(csv.reader(io.StringIO(handle.getvalue().decode("utf-8-sig"), newline="")))
    assert rows == [["name"], ["'" + value], ["plain"]]


def test_csv_starts_with_a_bom_and_keeps_numbers_and_dates_as_they_are():
    columns = (
        Column("name", "姓名"),
        Column("delta", "积分", Kind.NUMBER),
        Column("at", "时间", Kind.DATETIME),
        Column("day", "日期", Kind.DATE),
    )
    handle = io.BytesIO()

    count = write_table(
        handle,
        "csv",
        columns,
        [["王小明", -20, datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(1990, 1, 2)], [None] * 4],
        title="t",
    )

    data = handle.getvalue()
    assert count == 2
    assert data.startswith(b"\xef\xbb\xbf")
    assert (
        data.decode("utf-8-sig")
        == "姓名,积分,时间,日期\r\n王小明,-20,2024-01-02 03:04:05,1990-01-02\r\n,,,\r\n"
    )


def test_xlsx_cells_are_typed_by_column_kind():
    columns = (
        Column("name", "name"),
        Column("n", "n", Kind.NUMBER),
        Column("at", "at", Kind.DATETIME),
        Column("day", "day", Kind.DATE),
        Column("code", "code"),
    )
    handle = io.BytesIO()

    write_table(
        handle,
        "xlsx",
        columns,
        [["a", Decimal("12.50"), datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(1990, 1, 2), 42]],
        title="会员",
    )

    handle.seek(0)
    sheet = openpyxl.load_workbook(handle).active
    assert sheet.title == "会员"
    row = list(next(sheet.iter_rows(min_row=2)))
    assert [cell.value for cell in row] == [
        "a",
        12.5,
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        datetime.datetime(1990, 1, 2),
        "42",
    ]
    assert [cell.data_type for cell in row] == ["s", "n", "d", "d", "s"]


def test_xlsx_rows_past_a_sheets_limit_go_on_the_next_sheet_under_the_header_again():
    handle = io.BytesIO()

    count = write_xlsx(
        handle, ["姓名"], [Kind.TEXT], [["a"], ["b"], ["c"], ["d"], ["e"]], title="会员", sheet_rows=2
    )

    handle.seek(0)
    workbook = openpyxl.load_workbook(handle)
    assert count == 5
    assert workbook.sheetnames == ["会员", "会员 (2)", "会员 (3)"]
    assert [list(sheet.values) for sheet in workbook] == [
        [("姓名",), ("a",), ("b",)],
        [("姓名",), ("c",), ("d",)],
        [("姓名",), ("e",)],
    ]


# --------------------------------------------------------------------------------------------------
# Requesting and running a job


@pytest.mark.django_db
def test_requesting_an_export_stores_the_decisions_audits_and_enqueues_once(
    hq_operator, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks, translation.override("en"):
        job = request_export(
            get_source(MEMBERS),
            params={"filters": {"tier__id__exact": ["3"]}, "pks": None},
            file_format="csv",
            actor=Actor.for_user(hq_operator, request_id="r" * 32),
        )

    assert len(callbacks) == 1
    job.refresh_from_db()
    assert (job.state, job.resource, job.file_format, job.created_by) == (
        "queued",
        MEMBERS,
        "csv",
        hq_operator,
    )
    assert job.params == {
        "filters": {"tier__id__exact": ["3"]},
        "pks": None,
        "language": "en",
        "full_personal_data": True,
        "request_id": "r" * 32,
    }
    event = AuditEvent.objects.get(action="export.requested")
    assert (event.actor, event.target_id, event.request_id) == (hq_operator, str(job.pk), "r" * 32)
    assert event.changes == {
        "resource": MEMBERS,
        "format": "csv",
        "filters": {"filters": {"tier__id__exact": ["3"]}, "pks": None},
        "masked": False,
    }


@pytest.mark.django_db
def test_a_user_who_may_not_export_cannot_request_one_and_nothing_is_written(auditor):
    with pytest.raises(PermissionDenied):
        request_export(get_source(MEMBERS), params={}, file_format="xlsx", actor=Actor.for_user(auditor))

    assert not ExportJob.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="export.").exists()


@pytest.mark.django_db
def test_running_an_export_writes_the_file_and_audits_rows_and_masking(hq_operator):
    MemberFactory.create_batch(3)

    job = export_for(hq_operator)

    assert (job.state, job.rows, job.error) == ("done", 3, "")
    assert job.finished_at is not None
    assert len(xlsx_rows(job)) == 4
    event = AuditEvent.objects.get(action="export.completed")
    assert (event.actor_kind, event.actor_label, event.target_id) == ("system", "export", str(job.pk))
    assert event.request_id == job.params["request_id"]
    assert {k: event.changes[k] for k in ("rows", "masked", "format")} == {
        "rows": 3,
        "masked": False,
        "format": "xlsx",
    }


@pytest.mark.django_db
def test_headers_and_labels_come_out_in_the_requesters_language(hq_operator):
    MemberFactory()

    with translation.override("en"):
        job = request_export(
            get_source(MEMBERS), params={}, file_format="xlsx", actor=Actor.for_user(hq_operator)
        )
    run_export(job.pk)  # the worker runs under another language; the job's own is used
    job.refresh_from_db()

    header, row = xlsx_rows(job)
    assert header[:3] == ("mobile", "full name", "gender")
    assert row[2] == "Unknown"


@pytest.mark.django_db
def test_running_a_finished_job_again_changes_nothing(hq_operator):
    MemberFactory()
    job = export_for(hq_operator)

    assert run_export(job.pk) is None

    assert ExportJob.objects.get(pk=job.pk).file.name == job.file.name
    assert AuditEvent.objects.filter(action="export.completed").count() == 1


@pytest.mark.django_db
def test_the_worker_masks_when_the_full_number_permission_was_withdrawn_meanwhile(hq_operator):
    MemberFactory(mobile="+8613812345678")
    job = request_export(
        get_source(MEMBERS), params={}, file_format="xlsx", actor=Actor.for_user(hq_operator)
    )
    assert job.params["full_personal_data"] is True

    remove_permission(Role.HQ_OPERATOR, "members.view_full_mobile")
    run_export(job.pk)

    job.refresh_from_db()
    assert xlsx_rows(job)[1][0] == "138****5678"
    assert AuditEvent.objects.get(action="export.completed").changes["masked"] is True
    assert job.params["masked"] is True


@pytest.mark.django_db
def test_the_worker_refuses_a_user_who_lost_the_export_permission_meanwhile(hq_operator):
    MemberFactory()
    with translation.override("en"):  # the reason is written in the requester's language
        job = request_export(
            get_source(MEMBERS), params={}, file_format="xlsx", actor=Actor.for_user(hq_operator)
        )

    remove_permission(Role.HQ_OPERATOR, "members.export")
    run_export(job.pk)

    job.refresh_from_db()
    assert (job.state, job.rows, job.file.name) == ("failed", 0, "")
    assert job.error == "You are no longer allowed to export this data."
    assert AuditEvent.objects.filter(action="export.failed", target_id=str(job.pk)).count() == 1
    assert not AuditEvent.objects.filter(action="export.completed").exists()


@pytest.mark.django_db
def test_the_worker_scopes_the_rows_to_the_requesting_user(monkeypatch):
    # A source as a segment would register one: rows unscoped, no permission beyond seeing them.
    source = ExportSource(
        name="test.members",
        model=Member,
        columns=(Column("name", "name"),),
        permissions=(),
        build_queryset=lambda user, params: Member.objects.order_by("name"),
    )
    monkeypatch.setitem(exports._SOURCES, source.name, source)
    manager = ManagerFactory()
    MemberFactory(name="mine", home_store=manager.store)
    MemberFactory(name="theirs", home_store=StoreFactory())

    job = export_for(manager.user, source=source.name)

    assert job.rows == 1
    assert xlsx_rows(job) == [("name",), ("mine",)]


@pytest.mark.django_db
def test_a_task_failure_marks_the_job_failed_with_the_reason(hq_operator):
    job = request_export(
        get_source(MEMBERS), params={}, file_format="xlsx", actor=Actor.for_user(hq_operator)
    )

    ExportJobTask().on_failure(RuntimeError("disk full"), "task-id", (job.pk,), {}, None)

    job.refresh_from_db()
    assert (job.state, job.error) == ("failed", "disk full")
    assert AuditEvent.objects.get(action="export.failed").changes == {"error": "disk full"}


# --------------------------------------------------------------------------------------------------
# The exports page and the download


@pytest.mark.django_db
def test_the_requester_downloads_the_file_and_the_download_is_audited(client, hq_operator):
    MemberFactory()
    job = export_for(hq_operator, file_format="csv")
    client.force_login(hq_operator)

    response = client.get(reverse("exports:download", args=[job.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"-{job.pk}-" in response["Content-Disposition"]
    assert b"".join(response.streaming_content).startswith(b"\xef\xbb\xbf")
    event = AuditEvent.objects.get(action="export.downloaded")
    assert (event.actor, event.target_id) == (hq_operator, str(job.pk))
    assert event.changes == {"rows": 1, "masked": False, "requested_by": hq_operator.pk}


@pytest.mark.django_db
def test_an_hq_administrator_may_download_anyones_export(client, hq_operator, hq_admin):
    job = export_for(hq_operator)
    client.force_login(hq_admin)

    assert client.get(reverse("exports:download", args=[job.pk])).status_code == 200
    assert AuditEvent.objects.get(action="export.downloaded").actor == hq_admin


@pytest.mark.django_db
def test_another_hq_user_may_not_download_and_nothing_is_audited(client, hq_operator):
    job = export_for(hq_operator)
    colleague = UserFactory(username="colleague", role=Role.HQ_OPERATOR)
    client.force_login(colleague)

    assert client.get(reverse("exports:download", args=[job.pk])).status_code == 403
    assert not AuditEvent.objects.filter(action="export.downloaded").exists()


@pytest.mark.django_db
def test_the_requester_may_not_download_after_losing_the_export_permission(client, hq_operator):
    job = export_for(hq_operator)
    remove_permission(Role.HQ_OPERATOR, "members.export")
    client.force_login(hq_operator)

    assert client.get(reverse("exports:download", args=[job.pk])).status_code == 403


@pytest.mark.django_db
def test_an_unfinished_export_cannot_be_downloaded(client, hq_operator):
    job = request_export(
        get_source(MEMBERS), params={}, file_format="xlsx", actor=Actor.for_user(hq_operator)
    )
    client.force_login(hq_operator)

    assert client.get(reverse("exports:download", args=[job.pk])).status_code == 403
    assert client.get(reverse("exports:download", args=[job.pk + 1000])).status_code == 404


@pytest.mark.django_db
def test_store_staff_never_reach_the_exports_pages(client, hq_operator):
    job = export_for(hq_operator)
    guide = GuideFactory()
    client.force_login(guide.user)

    assert client.get(LIST).status_code == 302
    assert client.get(reverse("exports:download", args=[job.pk])).status_code == 302
    assert not AuditEvent.objects.filter(action="export.downloaded").exists()


@pytest.mark.django_db
def test_my_exports_lists_my_jobs_with_state_and_a_download_link_when_done(client, hq_operator):
    done = export_for(hq_operator)
    queued = request_export(
        get_source(MEMBERS), params={}, file_format="csv", actor=Actor.for_user(hq_operator)
    )
    colleague = UserFactory(username="colleague", role=Role.HQ_OPERATOR)
    theirs = export_for(colleague)
    client.force_login(hq_operator)

    response = client.get(LIST)

    page = response.content.decode()
    rows = response.context["rows"]
    assert [row["job"].pk for row in rows] == [queued.pk, done.pk]
    assert [row["can_download"] for row in rows] == [False, True]
    assert reverse("exports:download", args=[done.pk]) in page
    assert reverse("exports:download", args=[theirs.pk]) not in page
    assert response.context["refresh_seconds"] == 5  # one job is still queued


@pytest.mark.django_db
def test_an_hq_administrator_sees_everyones_exports(client, hq_operator, hq_admin):
    job = export_for(hq_operator)
    client.force_login(hq_admin)

    response = client.get(LIST)

    assert [row["job"].pk for row in response.context["rows"]] == [job.pk]
    assert response.context["shows_everyone"] is True
    assert response.context["refresh_seconds"] is None


# --------------------------------------------------------------------------------------------------
# The whole flow on a real worker


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_the_admin_button_exports_through_a_real_worker(client, monkeypatch, media):
    monkeypatch.setenv("DJANGO_MEDIA_ROOT", str(media))  # the worker writes where this process reads
    operator = UserFactory(username="operator_w", role=Role.HQ_OPERATOR)
    MemberFactory(mobile="+8613812345678", name="=cmd|' /C calc'!A0")
    client.force_login(operator)

    with celery_worker():
        response = client.post(BUTTON, {"format": "xlsx"})
        assert response.status_code == 302
        job = ExportJob.objects.get()
        assert wait_for(lambda: ExportJob.objects.get(pk=job.pk).state in ("done", "failed"))

    job.refresh_from_db()
    assert (job.state, job.error, job.rows) == ("done", "", 1)
    download = client.get(reverse("exports:download", args=[job.pk]))
    sheet = openpyxl.load_workbook(io.BytesIO(b"".join(download.streaming_content))).active
    assert [sheet["A2"].value, sheet["B2"].value, sheet["B2"].data_type] == [
        "13812345678",
        "=cmd|' /C calc'!A0",
        "s",
    ]
    assert list(
        AuditEvent.objects.filter(action__startswith="export.")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["export.requested", "export.completed", "export.downloaded"]


@pytest.mark.django_db
def test_a_job_whose_source_is_gone_fails_with_a_reason(hq_operator):
    job = ExportJob.objects.create(
        resource="gone.model", params={"language": "en"}, file_format="xlsx", created_by=hq_operator
    )

    run_export(job.pk)

    job.refresh_from_db()
    assert (job.state, job.error) == ("failed", "This kind of data can no longer be exported.")
