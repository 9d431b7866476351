"""``manage.py import_file``: the same pipeline from the command line, one JSON line at the end."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import translation

from members.models import Member
from scrm.roles import Role
from tests.data import MEMBER_HEADERS_ZH, write_xlsx
from tests.factories import StoreFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def store(db):
    return StoreFactory(code="SH001")


def import_file(*args):
    out, err = StringIO(), StringIO()
    with translation.override("en"):
        try:
            call_command("import_file", *args, stdout=out, stderr=err)
            error = None
        except CommandError as raised:
            error = raised
    return json.loads(out.getvalue().strip().splitlines()[-1]), error, err.getvalue()


def test_the_last_line_is_the_counts_and_the_error_workbook(store, tmp_path):
    path = write_xlsx(
        tmp_path / "members.xlsx",
        [
            MEMBER_HEADERS_ZH[:5],
            ["13812345678", "林晓", "女", "1990-01-02", "SH001"],
            ["123", "", "", "", "SH001"],
        ],
    )

    summary, error, stderr = import_file("members", str(path))

    assert error is None
    assert summary == {
        "resource": "members",
        "dry_run": False,
        "new": 1,
        "updated": 0,
        "unchanged": 0,
        "invalid": 1,
        "total": 2,
        "error_workbook": str(tmp_path / "members.errors.xlsx"),
    }
    assert (tmp_path / "members.errors.xlsx").is_file()
    assert "Row 3, column 手机号" in stderr
    assert Member.objects.count() == 1


def test_a_dry_run_writes_nothing_and_says_so(store, tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [["手机号", "门店编码"], ["13812345678", "sh001"]])

    summary, error, _stderr = import_file("members", str(path), "--dry-run")

    assert error is None
    assert (summary["dry_run"], summary["new"], summary["error_workbook"]) == (True, 1, None)
    assert not Member.objects.exists()


def test_it_exits_non_zero_when_no_row_could_be_imported(store, tmp_path):
    path = write_xlsx(
        tmp_path / "bad.xlsx", [["手机号", "门店编码"], ["1", "SH001"], ["13812345678", "NOPE"]]
    )

    summary, error, _stderr = import_file("members", str(path))

    assert error is not None
    assert (summary["new"], summary["invalid"]) == (0, 2)


def test_a_refused_file_and_a_user_without_rights_exit_non_zero(store, tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [["手机号", "门店编码"], ["13812345678", "SH001"]])
    UserFactory(username="auditor_cli", role=Role.AUDITOR)
    wrong = tmp_path / "wrong.xlsx"
    wrong.write_bytes(b"not a workbook at all")

    no_rights, error_rights, _ = import_file("members", str(path), "--user", "auditor_cli")
    refused, error_refused, _ = import_file("members", str(wrong))

    assert error_rights is not None and "may not import" in no_rights["error"]
    assert error_refused is not None and "not an Excel workbook" in refused["error"]
    assert not Member.objects.exists()
