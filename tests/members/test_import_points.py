"""The points-adjustment importer: each reference credited once, balances never below zero."""

import pytest
from django.utils import translation

from members.models import Member, PointsEntry
from members.services import add_points
from scrm.audit import Actor
from scrm.imports import ImportNotAllowed, run_import
from scrm.roles import Role
from tests.data import write_xlsx
from tests.factories import MemberFactory, UserFactory

pytestmark = pytest.mark.django_db
HEADERS = ["手机号", "积分", "原因", "参考号"]


@pytest.fixture
def members(db):
    return [MemberFactory(mobile="+8613812345678"), MemberFactory(mobile="+8613812345679")]


def run(path, *, dry_run=False, actor=None):
    with translation.override("en"):
        return run_import("points", path, actor=actor or Actor.system("tests"), dry_run=dry_run)


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


def balance(member):
    return Member.objects.get(pk=member.pk).points_balance


def test_adjustments_are_credited_once(members, tmp_path):
    path = write_xlsx(
        tmp_path / "p.xlsx",
        [HEADERS, ["13812345678", 200, "客诉补偿", "ADJ-1"], ["13812345678", "-50", "", "ADJ-2"]],
    )

    assert counts(run(path, dry_run=True))["new"] == 2
    assert balance(members[0]) == 0

    assert counts(run(path)) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 0}
    assert balance(members[0]) == 150
    entry = PointsEntry.objects.get(ref="ADJ-1")
    assert (entry.kind, entry.delta, entry.reason) == ("adjust", 200, "客诉补偿")

    assert counts(run(path)) == {"new": 0, "updated": 0, "unchanged": 2, "invalid": 0}
    assert balance(members[0]) == 150
    assert PointsEntry.objects.count() == 2


def test_a_reference_used_otherwise_is_refused(members, tmp_path):
    add_points(members[1], delta=10, kind="adjust", actor=Actor.system("tests"), ref="ADJ-9")
    path = write_xlsx(tmp_path / "p.xlsx", [HEADERS, ["13812345678", 10, "", "ADJ-9"]])

    result = run(path)

    assert counts(result)["invalid"] == 1
    assert "already used for another adjustment" in result.problems[0].reason
    assert balance(members[0]) == 0


def test_the_balance_never_goes_below_zero(members, tmp_path):
    path = write_xlsx(
        tmp_path / "p.xlsx",
        [
            HEADERS,
            ["13812345678", 100, "", "A"],
            ["13812345678", -150, "", "B"],
            ["13812345678", -100, "", "C"],
            ["13812345679", -1, "", "D"],
        ],
    )

    result = run(path)

    assert counts(result) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 2}
    found = {(p.row, p.column): p.reason for p in result.problems}
    assert found[(3, "积分")] == "Not enough points: the balance is 100, the row deducts 150."
    assert found[(5, "积分")] == "Not enough points: the balance is 0, the row deducts 1."
    assert balance(members[0]) == 0
    assert sorted(PointsEntry.objects.values_list("ref", flat=True)) == ["A", "C"]


def test_bad_values_and_duplicate_references(members, tmp_path):
    path = write_xlsx(
        tmp_path / "p.xlsx",
        [
            HEADERS,
            ["13812345678", 0, "", "R1"],
            ["13812345678", "十", "", "R2"],
            ["13812345678", 5, "", ""],
            ["13900000000", 5, "", "R4"],
            ["13812345678", 5, "", "R5"],
            ["13812345679", 5, "", "R5"],
        ],
    )

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 6}
    found = {(p.row, p.column): p.reason for p in result.problems}
    assert found[(2, "积分")] == "A points movement cannot be zero."
    assert "not a whole number" in found[(3, "积分")]
    assert found[(4, "参考号")] == "Enter the reference."
    assert "No member has the mobile" in found[(5, "手机号")]
    assert "also appears in row 6" in found[(7, "参考号")]
    assert not PointsEntry.objects.exists()


def test_rights(members, tmp_path):
    path = write_xlsx(tmp_path / "p.xlsx", [HEADERS, ["13812345678", 5, "", "R1"]])
    with pytest.raises(ImportNotAllowed):
        run(path, actor=Actor.for_user(UserFactory(role=Role.AUDITOR)))
    assert counts(run(path, actor=Actor.for_user(UserFactory(role=Role.HQ_OPERATOR))))["new"] == 1
