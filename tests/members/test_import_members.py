"""The member importer through the shared pipeline: headers, every normalisation, every bad value,
duplicates, re-import, the error workbook, rights, consent and the guide history."""

import datetime
import random

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation
from python_calamine import CalamineWorkbook

from members.importers import clean_mobile
from members.models import ConsentRecord, GuideAssignment, Member, MemberTag, PrivacyNotice, Tag
from members.phones import normalize_mobile
from scrm.audit import Actor
from scrm.imports import FileRefused, ImportNotAllowed, run_import
from scrm.models import AuditEvent
from scrm.roles import Role
from stores.models import Guide
from tests.data import MEMBER_HEADERS_EN, MEMBER_HEADERS_ZH, write_csv, write_xlsx
from tests.factories import GuideFactory, MemberFactory, StoreFactory, TierFactory, UserFactory

pytestmark = pytest.mark.django_db

HEADERS = MEMBER_HEADERS_ZH


@pytest.fixture
def world(db):
    store = StoreFactory(code="SH001", name="上海静安店")
    other = StoreFactory(code="BJ002", name="北京国贸店")
    guide = GuideFactory(store=store, employee_no="E00001", name="王芳")
    GuideFactory(store=other, employee_no="E00002")
    GuideFactory(
        store=store, employee_no="E00003", status=Guide.Status.LEFT, left_on=datetime.date(2024, 1, 1)
    )
    TierFactory(code="gold", name="金卡", rank=3)
    PrivacyNotice.objects.create(
        version="imp-test",
        purposes=["marketing", "service"],
        published_at=timezone.now() - datetime.timedelta(days=3),
    )
    return {"store": store, "other": other, "guide": guide}


def row(**values):
    """A member row in HEADERS order; defaults make a valid row."""
    defaults = {
        "手机号": "13812345678",
        "姓名": "林晓",
        "性别": "女",
        "生日": datetime.date(1990, 1, 2),
        "门店编码": "SH001",
        "导购工号": "",
        "会员等级": "",
        "标签": "",
        "短信授权": "",
        "企业微信授权": "",
        "入会时间": "",
        "入会渠道": "",
    }
    defaults.update(values)
    return [defaults[h] for h in HEADERS]


def run(path, *, dry_run=False, actor=None, **kwargs):
    # In English, so the reasons checked below do not depend on the catalogue.
    with translation.override("en"):
        return run_import("members", path, actor=actor or Actor.system("tests"), dry_run=dry_run, **kwargs)


def trigger_events() -> int:
    """Row-level audit events the database triggers wrote (writes outside an audited service)."""
    return AuditEvent.objects.filter(action__startswith="db.").count()


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


# --------------------------------------------------------------------------------------------------
# The happy path


def test_a_full_row_creates_the_member_with_tags_consent_and_guide(world, tmp_path):
    # given a workbook with Chinese headers and one complete row
    path = write_xlsx(
        tmp_path / "members.xlsx",
        [
            HEADERS,
            row(
                导购工号="E00001",
                会员等级="gold",
                标签="护肤，敏感肌",
                短信授权="是",
                企业微信授权="否",
                入会时间=datetime.datetime(2024, 5, 6, 14, 30),
                入会渠道="天猫",
            ),
        ],
    )
    user = UserFactory(role=Role.HQ_OPERATOR)
    triggered = trigger_events()

    # when it is imported
    result = run(path, actor=Actor.for_user(user))

    # then the member exists with every value, normalised
    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 0}
    member = Member.objects.get()
    assert (member.mobile, member.name, member.gender, member.birthday) == (
        "+8613812345678",
        "林晓",
        "F",
        datetime.date(1990, 1, 2),
    )
    assert (member.home_store, member.guide, member.tier.code, member.join_channel) == (
        world["store"],
        world["guide"],
        "gold",
        "tmall",
    )
    assert timezone.localtime(member.joined_at).replace(tzinfo=None) == datetime.datetime(2024, 5, 6, 14, 30)
    assert (member.consent_sms, member.consent_wecom, member.points_balance) == (True, False, 0)
    # tags created and attached with source "import"
    assert sorted(MemberTag.objects.filter(member=member).values_list("tag__name", "source")) == [
        ("护肤", "import"),
        ("敏感肌", "import"),
    ]
    # one grant in the consent ledger, under the current privacy notice
    record = ConsentRecord.objects.get()
    assert (record.channel, record.action, record.source, record.policy_version, record.actor) == (
        "sms",
        "grant",
        "import",
        "imp-test",
        user,
    )
    assert record.evidence["row"] == 2
    # an open guide assignment, reason "import"
    assignment = GuideAssignment.objects.get()
    assert (assignment.guide, assignment.ended_at, assignment.reason) == (world["guide"], None, "import")
    # one audit event for the file, none from the row triggers
    event = AuditEvent.objects.get(action="import.completed")
    assert event.changes["sha256"] == result.sha256
    assert event.changes["counts"]["new"] == 1
    assert (event.actor, event.changes["resource"]) == (user, "members")
    assert trigger_events() == triggered


def test_english_headers_are_accepted(world, tmp_path):
    path = write_xlsx(tmp_path / "en.xlsx", [MEMBER_HEADERS_EN, row(性别="F", 入会渠道="store")])

    result = run(path)

    assert counts(result)["new"] == 1
    assert Member.objects.get().gender == "F"


def test_a_csv_with_template_style_headers_is_accepted(world, tmp_path):
    # "手机号 *" (the template marks required columns) and a header in other words
    path = write_csv(
        tmp_path / "members.csv",
        [["手机号 *", "门店编码 *", "会员姓名"], ["13812345678", "sh001", "林晓"]],
        encoding="gb18030",
    )

    result = run(path)

    assert counts(result)["new"] == 1
    assert Member.objects.get().name == "林晓"


def test_a_dry_run_writes_nothing_but_its_audit_event(world, tmp_path):
    path = write_xlsx(
        tmp_path / "members.xlsx", [HEADERS, row(短信授权="是", 导购工号="E00001", 标签="护肤")]
    )
    events = AuditEvent.objects.count()

    result = run(path, dry_run=True)

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 0}
    assert not Member.objects.exists()
    assert not (Tag.objects.exists() or ConsentRecord.objects.exists() or GuideAssignment.objects.exists())
    assert AuditEvent.objects.count() == events + 1
    assert AuditEvent.objects.latest("id").action == "import.validated"


# --------------------------------------------------------------------------------------------------
# Normalisation


@pytest.mark.parametrize(
    "typed",
    [
        "13812345678",
        " 138 1234 5678 ",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+8613812345678",
        "8613812345678",
        "008613812345678",
        "１３８１２３４５６７８",
        "＋８６ １３８１２３４５６７８",
        13812345678,
    ],
)
def test_mobiles_are_normalised(world, tmp_path, typed):
    path = write_xlsx(tmp_path / "m.xlsx", [HEADERS, row(手机号=typed)])

    assert counts(run(path))["new"] == 1
    assert Member.objects.get().mobile == "+8613812345678"


def test_the_mobile_fast_path_agrees_with_normalize_mobile_for_every_prefix():
    # validity is cached per 5-digit prefix: check every prefix with random subscriber numbers
    rng = random.Random(4)
    for prefix in range(10000, 20000):
        for _ in range(2):
            number = f"{prefix}{rng.randrange(10**6):06d}"
            try:
                expected = normalize_mobile(number)
            except ValidationError:
                expected = None
            try:
                got = clean_mobile(number)
            except Exception:
                got = None
            assert got == expected, number


@pytest.mark.parametrize(
    "typed",
    [
        datetime.date(1990, 1, 2),
        32875,  # the Excel serial of 1990-01-02, in a cell without a date format
        "1990/1/2",
        "1990-01-02",
        "1990.1.2",
        "1990年1月2日",
        "1990 年 1 月 2 日",
        "１９９０／１／２",
        "19900102",
        "1990-01-02 00:00:00",
    ],
)
def test_dates_are_read_in_every_common_form(world, tmp_path, typed):
    path = write_xlsx(tmp_path / "d.xlsx", [HEADERS, row(生日=typed)])

    assert counts(run(path))["new"] == 1
    assert Member.objects.get().birthday == datetime.date(1990, 1, 2)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("男", "M"), ("女", "F"), ("M", "M"), ("f", "F"), ("Female", "F"), ("男性", "M"), ("", "U")],
)
def test_genders_are_read(world, tmp_path, typed, stored):
    path = write_xlsx(tmp_path / "g.xlsx", [HEADERS, row(性别=typed)])

    run(path)

    assert Member.objects.get().gender == stored


def test_tags_are_split_on_every_separator_and_store_codes_are_case_folded(world, tmp_path):
    path = write_xlsx(
        tmp_path / "t.xlsx", [HEADERS, row(标签="护肤,彩妆，香水、高客单;抗老；护肤 ,", 门店编码=" sh001 ")]
    )

    run(path)

    member = Member.objects.get()
    assert member.home_store == world["store"]
    assert sorted(MemberTag.objects.filter(member=member).values_list("tag__name", flat=True)) == sorted(
        ["护肤", "彩妆", "香水", "高客单", "抗老"]
    )


@pytest.mark.parametrize(
    ("typed", "stored"), [("是", True), ("Y", True), ("yes", True), ("否", False), ("N", False)]
)
def test_consent_columns_read_yes_and_no(world, tmp_path, typed, stored):
    path = write_xlsx(tmp_path / "c.xlsx", [HEADERS, row(企业微信授权=typed)])

    run(path)

    assert Member.objects.get().consent_wecom is stored
    assert ConsentRecord.objects.filter(channel="wecom").count() == (1 if stored else 0)


# --------------------------------------------------------------------------------------------------
# Bad values: each refused with its column and a reason, nothing written


@pytest.mark.parametrize(
    ("values", "column", "reason"),
    [
        ({"手机号": "12345"}, "手机号", "12345"),
        ({"手机号": "02188889999"}, "手机号", "02188889999"),
        ({"手机号": "", "姓名": "没有手机号"}, "手机号", "mobile"),
        ({"生日": "1990-13-45"}, "生日", "1990-13-45"),
        ({"生日": "next tuesday"}, "生日", "next tuesday"),
        ({"生日": datetime.date(2999, 1, 1)}, "生日", "future"),
        ({"性别": "未填"}, "性别", "未填"),
        ({"门店编码": "XX999"}, "门店编码", "XX999"),
        ({"门店编码": ""}, "门店编码", "store code"),
        ({"导购工号": "E99999"}, "导购工号", "E99999"),
        ({"导购工号": "E00002"}, "导购工号", "does not work in this store"),
        ({"导购工号": "E00003"}, "导购工号", "has left"),
        ({"会员等级": "diamond"}, "会员等级", "diamond"),
        ({"短信授权": "maybe"}, "短信授权", "maybe"),
        ({"入会时间": "yesterday-ish"}, "入会时间", "yesterday-ish"),
        ({"入会渠道": "火星"}, "入会渠道", "火星"),
        ({"姓名": "名" * 65}, "姓名", "64"),
        ({"标签": "长" * 65}, "标签", "64"),
        ({"生日": datetime.date(2020, 1, 1), "短信授权": "是"}, "短信授权", "under 14"),
    ],
)
def test_each_bad_value_makes_its_row_invalid(world, tmp_path, values, column, reason):
    path = write_xlsx(tmp_path / "bad.xlsx", [HEADERS, row(**values)])

    result = run(path)

    assert counts(result) == {"new": 0, "updated": 0, "unchanged": 0, "invalid": 1}
    [problem] = result.problems
    assert (problem.row, problem.column) == (2, column)
    assert reason in problem.reason
    assert not Member.objects.exists()


def test_consent_is_refused_when_no_privacy_notice_asks_for_it(world, tmp_path):
    # the notice in force (the latest) asks for service notices only
    PrivacyNotice.objects.create(version="service-only", purposes=["service"], published_at=timezone.now())
    path = write_xlsx(tmp_path / "c.xlsx", [HEADERS, row(短信授权="是")])

    result = run(path)

    assert result.counts["invalid"] == 1
    assert "privacy notice" in result.problems[0].reason


def test_consent_for_a_known_member_under_14_is_refused_by_the_stored_birthday(world, tmp_path):
    MemberFactory(mobile="+8613812345678", home_store=world["store"], birthday=datetime.date(2020, 1, 1))
    path = write_xlsx(tmp_path / "c.xlsx", [HEADERS, row(生日="", 短信授权="是"), row(手机号="13912345678")])

    result = run(path)

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 1}
    assert (result.problems[0].row, result.problems[0].column) == (2, "短信授权")
    assert not ConsentRecord.objects.exists()


def test_a_row_with_several_bad_cells_reports_each(world, tmp_path):
    path = write_xlsx(tmp_path / "bad.xlsx", [HEADERS, row(手机号="1", 门店编码="NOPE", 性别="?")])

    result = run(path)

    assert [p.column for p in result.problems] == ["手机号", "性别", "门店编码"]


def test_wrong_headers_refuse_the_file_and_write_nothing(world, tmp_path):
    path = write_xlsx(tmp_path / "wrong.xlsx", [["电话号码", "名字"], ["13812345678", "林晓"]])

    with pytest.raises(FileRefused) as caught:
        run(path)

    assert caught.value.code == "wrong_headers"
    assert "手机号" in caught.value.message or "Mobile" in caught.value.message
    assert not Member.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="import.").exists()


def test_a_refused_file_writes_nothing(world, tmp_path):
    path = tmp_path / "photo.xlsx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    events = AuditEvent.objects.count()

    with pytest.raises(FileRefused):
        run(path)

    assert AuditEvent.objects.count() == events


def test_a_file_over_the_row_limit_discovered_while_reading_writes_nothing(
    world, tmp_path, settings, monkeypatch
):
    # given a workbook that does not declare its size (so the limit bites while reading)
    from scrm import excel

    settings.SCRM_IMPORT_MAX_ROWS = 2
    monkeypatch.setattr(excel, "_xlsx_row_estimate", lambda zf, part: None)
    path = write_xlsx(
        tmp_path / "rows.xlsx", [HEADERS, row(), row(手机号="13912345678"), row(手机号="15012345678")]
    )

    with pytest.raises(FileRefused) as caught:
        run(path)

    assert caught.value.code == "too_many_rows"
    assert not Member.objects.exists()


# --------------------------------------------------------------------------------------------------
# Duplicates, re-import, updates


def test_duplicates_in_a_file_are_reported_not_merged(world, tmp_path):
    path = write_xlsx(
        tmp_path / "dup.xlsx",
        [
            HEADERS,
            row(手机号="13812345678", 姓名="林晓"),
            row(手机号="13912345678", 姓名="陈静"),
            row(手机号="138 1234 5678", 姓名="林小晓"),
        ],
    )

    result = run(path)

    assert counts(result) == {"new": 1, "updated": 0, "unchanged": 0, "invalid": 2}
    assert [(p.row, p.column) for p in result.problems] == [(2, "手机号"), (4, "手机号")]
    assert "4" in result.problems[0].reason and "2" in result.problems[1].reason
    assert list(Member.objects.values_list("mobile", flat=True)) == ["+8613912345678"]


def test_importing_the_same_file_twice_changes_nothing_the_second_time(world, tmp_path):
    path = write_xlsx(
        tmp_path / "same.xlsx",
        [
            HEADERS,
            row(导购工号="E00001", 标签="护肤", 短信授权="是", 入会时间=datetime.datetime(2024, 1, 2, 9, 0)),
            row(手机号="13912345678", 会员等级="gold", 入会时间="2024-02-03 10:00"),
        ],
    )
    first = run(path)
    before = {m.pk: m.updated_at for m in Member.objects.all()}
    rows_before = (ConsentRecord.objects.count(), GuideAssignment.objects.count(), MemberTag.objects.count())

    second = run(path)

    assert counts(first) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 0}
    assert counts(second) == {"new": 0, "updated": 0, "unchanged": 2, "invalid": 0}
    assert {m.pk: m.updated_at for m in Member.objects.all()} == before
    assert (
        ConsentRecord.objects.count(),
        GuideAssignment.objects.count(),
        MemberTag.objects.count(),
    ) == rows_before


def test_a_changed_row_updates_the_member_and_its_guide_history(world, tmp_path):
    # given a member bound to guide E00001 by a first import
    run(write_xlsx(tmp_path / "a.xlsx", [HEADERS, row(导购工号="E00001", 短信授权="是")]))
    new_guide = GuideFactory(store=world["store"], employee_no="E00009")

    # when a second file changes the name, the guide, withdraws SMS consent and adds a tag
    result = run(
        write_xlsx(
            tmp_path / "b.xlsx", [HEADERS, row(姓名="林晓晓", 导购工号="E00009", 短信授权="否", 标签="抗老")]
        )
    )

    # then it counts as updated and every record follows
    assert counts(result) == {"new": 0, "updated": 1, "unchanged": 0, "invalid": 0}
    member = Member.objects.get()
    assert (member.name, member.guide, member.consent_sms) == ("林晓晓", new_guide, False)
    history = list(GuideAssignment.objects.order_by("id").values_list("guide__employee_no", "ended_at"))
    assert [h[0] for h in history] == ["E00001", "E00009"]
    assert history[0][1] is not None and history[1][1] is None
    assert list(ConsentRecord.objects.order_by("id").values_list("action", flat=True)) == [
        "grant",
        "withdraw",
    ]


def test_empty_cells_keep_stored_values_and_a_new_store_unbinds_the_old_guide(world, tmp_path):
    member = MemberFactory(
        mobile="+8613812345678", name="林晓", home_store=world["store"], birthday=datetime.date(1990, 1, 2)
    )
    run(write_xlsx(tmp_path / "a.xlsx", [HEADERS, row(导购工号="E00001")]))
    assert Member.objects.get(pk=member.pk).guide == world["guide"]

    result = run(write_xlsx(tmp_path / "b.xlsx", [HEADERS, row(姓名="", 生日="", 门店编码="BJ002")]))

    member.refresh_from_db()
    assert counts(result)["updated"] == 1
    assert (member.name, member.birthday, member.home_store, member.guide) == (
        "林晓",
        datetime.date(1990, 1, 2),
        world["other"],
        None,
    )
    assert not GuideAssignment.objects.filter(ended_at__isnull=True).exists()


def test_a_tag_only_change_counts_as_updated(world, tmp_path):
    run(write_xlsx(tmp_path / "a.xlsx", [HEADERS, row(标签="护肤")]))

    result = run(write_xlsx(tmp_path / "b.xlsx", [HEADERS, row(标签="护肤，彩妆")]))

    assert counts(result) == {"new": 0, "updated": 1, "unchanged": 0, "invalid": 0}
    assert MemberTag.objects.count() == 2


# --------------------------------------------------------------------------------------------------
# The error workbook, the file hash, rights


def test_the_error_workbook_holds_the_original_cells_and_the_reasons(world, tmp_path):
    path = write_xlsx(
        tmp_path / "mixed.xlsx",
        [HEADERS, row(), row(手机号="12345", 生日="1990-13-45"), row(手机号="13912345678", 门店编码="XX9")],
    )
    result = run(path)
    out = tmp_path / "errors.xlsx"
    out.write_bytes(result.error_workbook)

    rows = CalamineWorkbook.from_path(str(out)).get_sheet_by_index(0).to_python()

    assert rows[0] == [*HEADERS, "Errors"]
    assert rows[1][:5] == ["12345", "林晓", "女", "1990-13-45", "SH001"]
    assert rows[1][-1].startswith("Row 3, column 手机号:")
    assert "1990-13-45" in rows[1][-1]
    assert rows[2][0] == "13912345678"
    assert "XX9" in rows[2][-1]
    assert len(rows) == 3


def test_a_file_that_changed_since_the_check_is_refused(world, tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [HEADERS, row()])
    checked = run(path, dry_run=True)
    write_xlsx(path, [HEADERS, row(), row(手机号="13912345678")])

    with pytest.raises(FileRefused) as caught:
        run(path, expected_sha256=checked.sha256)

    assert caught.value.code == "changed"
    assert not Member.objects.exists()


def test_import_rights_are_per_resource(world, tmp_path):
    path = write_xlsx(tmp_path / "m.xlsx", [HEADERS, row()])
    operator = UserFactory(role=Role.HQ_OPERATOR)
    auditor = UserFactory(role=Role.AUDITOR)
    only_add = UserFactory(is_staff=True)
    only_add.user_permissions.add(*_perms("add_member"))

    assert counts(run(path, actor=Actor.for_user(operator)))["new"] == 1
    for user in (auditor, only_add):
        with pytest.raises(ImportNotAllowed):
            run(path, actor=Actor.for_user(user))


def _perms(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="members", codename__in=codenames)


def test_the_template_has_headers_an_example_and_drop_downs(world, tmp_path):
    import zipfile

    from scrm.imports import template_workbook

    path = tmp_path / "template.xlsx"
    path.write_bytes(template_workbook("members"))

    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    with zipfile.ZipFile(path) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml").decode()

    assert len(rows) == 2
    assert rows[1][0] == "13812345678"
    assert sheet_xml.count("<dataValidation ") == 4  # gender, two consent columns, join channel
    assert '"是,否"' in sheet_xml
    # and the template imports as it is (the example row is a valid row)
    assert counts(run(path))["new"] == 1
