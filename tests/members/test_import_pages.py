"""The HQ import pages with the test client: upload → check → confirm, rights, refusals, progress.

The Celery tasks are captured (not run) and their job functions called directly; the real worker
path is in test_import_jobs.py.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from members.models import Member
from scrm import imports
from scrm.models import AuditEvent, ImportJob
from scrm.roles import Role
from tests.data import MEMBER_HEADERS_ZH, xlsx_bytes
from tests.factories import StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def operator(db):
    StoreFactory(code="SH001")
    return UserFactory(username="operator_imports", role=Role.HQ_OPERATOR)


def upload(client, content: bytes, name: str = "members.xlsx"):
    return client.post(
        reverse("imports:index"),
        {"resource": "members", "file": SimpleUploadedFile(name, content, content_type=XLSX)},
    )


GOOD = xlsx_bytes(
    [MEMBER_HEADERS_ZH[:5], ["13812345678", "林晓", "女", "1990-01-02", "SH001"], ["1", "", "", "", "SH001"]]
)


def test_upload_check_and_confirm(client, operator, django_capture_on_commit_callbacks):
    client.force_login(operator)

    # when a file is uploaded: the job is stored and the check is enqueued after commit
    with django_capture_on_commit_callbacks() as enqueued:
        response = upload(client, GOOD)
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("imports:job", args=[job.pk])
    assert (job.state, job.rows_total, job.created_by) == ("uploaded", 2, operator)
    assert len(enqueued) == 1

    # and the page polls progress while the check runs
    progress = client.get(reverse("imports:progress", args=[job.pk])).json()
    assert (progress["state"], progress["finished"], progress["rows_total"]) == ("uploaded", False, 2)

    # when the check has run, the page shows the counts and each invalid row; nothing is written yet
    imports.validate_import_job(job.pk)
    page = client.get(reverse("imports:job", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == "validated"
    assert {k: job.counts[k] for k in ("new", "updated", "unchanged", "invalid")} == {
        "new": 1,
        "updated": 0,
        "unchanged": 0,
        "invalid": 1,
    }
    assert b'id="confirm-import"' in page.content
    assert "手机号" in page.content.decode()
    assert not Member.objects.exists()
    errors = client.get(reverse("imports:errors", args=[job.pk]))
    assert (errors.status_code, errors["Content-Type"]) == (200, XLSX)

    # when it is confirmed, the import is enqueued once; a second click is refused
    with django_capture_on_commit_callbacks() as enqueued:
        client.post(reverse("imports:confirm", args=[job.pk]))
        client.post(reverse("imports:confirm", args=[job.pk]))
    assert len(enqueued) == 1
    imports.import_job(job.pk)

    job.refresh_from_db()
    assert (job.state, job.counts["new"]) == ("done", 1)
    assert Member.objects.get().mobile == "+8613812345678"
    actions = list(AuditEvent.objects.filter(target_type="scrm.importjob").values_list("action", flat=True))
    assert sorted(actions) == ["import.completed", "import.confirmed", "import.uploaded", "import.validated"]


def test_a_refused_file_is_reported_on_the_form_and_nothing_is_stored(client, operator):
    client.force_login(operator)

    with translation.override("en"):
        response = upload(client, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, name="photo.xlsx")

    assert response.status_code == 200
    assert "不是 Excel 工作簿" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_a_stored_file_changed_after_the_check_is_not_imported(
    client, operator, django_capture_on_commit_callbacks
):
    client.force_login(operator)
    with django_capture_on_commit_callbacks():
        upload(client, GOOD)
    job = ImportJob.objects.get()
    imports.validate_import_job(job.pk)
    with open(job.file.path, "wb") as handle:
        handle.write(xlsx_bytes([MEMBER_HEADERS_ZH[:5], ["13912345678", "", "", "", "SH001"]]))

    with django_capture_on_commit_callbacks():
        client.post(reverse("imports:confirm", args=[job.pk]))
    with translation.override("en"):
        imports.import_job(job.pk)

    job.refresh_from_db()
    assert job.state == "failed"
    assert "changed after it was checked" in job.error
    assert not Member.objects.exists()


def test_the_pages_need_import_rights(client, operator):
    auditor = UserFactory(username="auditor_imports", role=Role.AUDITOR)
    client.force_login(auditor)

    assert client.get(reverse("imports:index")).status_code == 403
    assert client.get(reverse("imports:template", args=["members"])).status_code == 404

    client.force_login(operator)
    page = client.get(reverse("imports:index"))
    assert page.status_code == 200
    assert reverse("imports:template", args=["members"]) in page.content.decode()
    template = client.get(reverse("imports:template", args=["members"]))
    assert (template.status_code, template["Content-Type"]) == (200, XLSX)


def test_another_users_job_of_a_forbidden_kind_is_not_found(
    client, operator, django_capture_on_commit_callbacks
):
    client.force_login(operator)
    with django_capture_on_commit_callbacks():
        upload(client, GOOD)
    job = ImportJob.objects.get()
    client.force_login(UserFactory(username="auditor_imports2", role=Role.AUDITOR))

    assert client.get(reverse("imports:job", args=[job.pk])).status_code == 404
    assert client.get(reverse("imports:progress", args=[job.pk])).status_code == 404
