"""The member-tag importer: tags added by mobile, optionally removed, nothing twice."""

import pytest
from django.utils import translation

from members.models import MemberTag, Tag
from scrm.audit import Actor
from scrm.imports import ImportNotAllowed, run_import
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.data import write_xlsx
from tests.factories import MemberFactory, TagFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(db):
    return MemberFactory(mobile="+8613812345678")


def run(path, *, dry_run=False, actor=None):
    with translation.override("en"):
        return run_import("member_tags", path, actor=actor or Actor.system("tests"), dry_run=dry_run)


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


def tags_of(member):
    return sorted(member.member_tags.values_list("tag__name", flat=True))


def test_tags_are_split_and_added_with_source_import(member, tmp_path):
    path = write_xlsx(
        tmp_path / "t.xlsx", [["手机号", "标签"], ["+86 138-1234-5678", "护肤，彩妆、香水;高客单,护肤"]]
    )

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 1, "unchanged": 0, "invalid": 0}
    assert tags_of(member) == ["彩妆", "护肤", "香水", "高客单"]
    assert set(MemberTag.objects.values_list("source", flat=True)) == {"import"}
    assert AuditEvent.objects.filter(action="import.completed").count() == 1

    again = run(path)
    assert counts(again) == {"new": 0, "updated": 0, "unchanged": 1, "invalid": 0}
    assert Tag.objects.count() == 4


def test_tags_already_on_the_member_stay(member, tmp_path):
    MemberTag.objects.create(member=member, tag=TagFactory(name="VIP"), source="guide")

    run(write_xlsx(tmp_path / "t.xlsx", [["Mobile", "Tags"], ["13812345678", "护肤"]]))

    assert tags_of(member) == ["VIP", "护肤"]
    assert member.member_tags.get(tag__name="VIP").source == "guide"


def test_the_remove_column_takes_tags_off(member, tmp_path):
    MemberTag.objects.create(member=member, tag=TagFactory(name="VIP"), source="guide")
    path = write_xlsx(
        tmp_path / "t.xlsx", [["手机号", "标签", "移除标签"], ["13812345678", "护肤", "VIP，不存在"]]
    )

    result = run(path)

    assert counts(result)["updated"] == 1
    assert tags_of(member) == ["护肤"]
    assert counts(run(path))["unchanged"] == 1


def test_bad_rows_and_duplicates_are_reported(member, tmp_path):
    path = write_xlsx(
        tmp_path / "t.xlsx",
        [
            ["手机号", "标签", "移除标签"],
            ["13812345678", "护肤", ""],
            ["12345", "护肤", ""],
            ["13900000000", "护肤", ""],
            ["13812345678", "彩妆", ""],
            ["13812345679", "", ""],
            ["13812345679", "a", "a"],
            ["13812345679", "x" * 65, ""],
        ],
    )

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 7}
    found = {(p.row, p.column): p.reason for p in result.problems}
    assert found[(4, "手机号")] == "No member has the mobile +8613900000000."
    assert "also appears in row 2" in found[(5, "手机号")]
    assert "appears again" in found[(2, "手机号")]
    assert found[(6, "标签")] == "Enter at least one tag."
    assert "both added and removed" in found[(7, "移除标签")]
    assert "longer than 64" in found[(8, "标签")]
    assert not MemberTag.objects.exists()


def test_removing_needs_the_delete_right(member, tmp_path):
    operator = UserFactory(role=Role.HQ_OPERATOR)  # add and change, no delete
    adding = write_xlsx(tmp_path / "a.xlsx", [["手机号", "标签"], ["13812345678", "护肤"]])
    removing = write_xlsx(tmp_path / "r.xlsx", [["手机号", "移除标签"], ["13812345678", "护肤"]])

    assert counts(run(adding, actor=Actor.for_user(operator)))["updated"] == 1
    with pytest.raises(ImportNotAllowed):
        run(removing, actor=Actor.for_user(operator))
    assert tags_of(member) == ["护肤"]
    with pytest.raises(ImportNotAllowed):
        run(adding, actor=Actor.for_user(UserFactory(role=Role.AUDITOR)))
    assert counts(run(removing, actor=Actor.for_user(UserFactory(role=Role.HQ_ADMIN))))["updated"] == 1
