"""The consent importer: evidence into the ledger by the ledger's rules, flags projected, idempotent."""

import datetime

import pytest
from django.utils import timezone, translation

from members import consent
from members.models import ConsentRecord, Member, PrivacyNotice
from members.services import record_consent
from scrm.audit import Actor
from scrm.imports import ImportNotAllowed, run_import
from scrm.roles import Role
from tests.data import write_xlsx
from tests.factories import MemberFactory, UserFactory

pytestmark = pytest.mark.django_db
HEADERS = ["手机号", "渠道", "用途", "操作", "来源", "方式", "隐私政策版本", "时间", "凭证"]
T1 = datetime.datetime(2026, 3, 1, 10, 0)
T2 = datetime.datetime(2026, 3, 2, 10, 0)


@pytest.fixture
def members(db):
    PrivacyNotice.objects.create(
        version="v1",
        purposes=["marketing", "service"],
        published_at=timezone.make_aware(datetime.datetime(2026, 1, 1)),
    )
    return [MemberFactory(mobile="+8613812345678"), MemberFactory(mobile="+8613812345679")]


def row(**values):
    defaults = {
        "手机号": "13812345678",
        "渠道": "短信",
        "用途": "营销",
        "操作": "同意",
        "来源": "门店POS",
        "方式": "纸质表单",
        "隐私政策版本": "",
        "时间": T1,
        "凭证": "F-0001",
    }
    defaults.update(values)
    return [defaults[h] for h in HEADERS]


def run(path, *, dry_run=False, actor=None):
    with translation.override("en"):
        return run_import("consent", path, actor=actor or Actor.system("tests"), dry_run=dry_run)


def counts(result):
    return {k: result.counts[k] for k in ("new", "updated", "unchanged", "invalid")}


def test_events_go_into_the_ledger_and_the_flags_follow(members, tmp_path):
    path = write_xlsx(
        tmp_path / "c.xlsx",
        [HEADERS, row(), row(渠道="企业微信"), row(渠道="企业微信", 操作="撤回", 时间=T2, 方式="")],
    )

    result = run(path)

    assert counts(result) == {"new": 3, "updated": 0, "unchanged": 0, "invalid": 0}
    member = Member.objects.get(pk=members[0].pk)
    assert (member.consent_sms, member.consent_wecom) == (True, False)
    record = ConsentRecord.objects.get(channel="sms")
    assert (record.purpose, record.action, record.source, record.method, record.policy_version) == (
        "marketing",
        "grant",
        "store_pos",
        "paper",
        "v1",
    )
    assert record.at == timezone.make_aware(T1)
    assert record.evidence["note"] == "F-0001" and record.evidence["row"] == 2

    again = run(path)
    assert counts(again) == {"new": 0, "updated": 0, "unchanged": 3, "invalid": 0}
    assert ConsentRecord.objects.count() == 3


def test_the_same_ledger_and_flags_as_record_consent(members, tmp_path):
    events = [("sms", "grant", T1), ("sms", "withdraw", T2), ("wecom", "grant", T2), ("call", "grant", T1)]
    actor = Actor.system("tests")
    for channel, action, at in events:
        record_consent(
            members[1],
            channel=channel,
            action=action,
            source="import",
            actor=actor,
            policy_version="v1",
            at=timezone.make_aware(at),
        )
    labels = {"sms": "短信", "wecom": "企业微信", "call": "电话", "grant": "同意", "withdraw": "撤回"}
    rows = [
        row(渠道=labels[c], 操作=labels[a], 时间=at, 来源="", 方式="", 隐私政策版本="v1")
        for c, a, at in events
    ]
    run(write_xlsx(tmp_path / "c.xlsx", [HEADERS, *rows]))

    def ledger(member):
        return sorted(
            ConsentRecord.objects.filter(member=member).values_list(
                "channel", "purpose", "action", "source", "method", "policy_version", "at"
            )
        )

    imported, recorded = (Member.objects.get(pk=m.pk) for m in members)
    assert ledger(imported) == ledger(recorded)
    assert [getattr(imported, f) for f in consent.FLAG_COLUMNS] == [
        getattr(recorded, f) for f in consent.FLAG_COLUMNS
    ]
    assert consent.check_consent_flags().ok


def test_withdrawals_run_the_handlers(members, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(consent, "WITHDRAWAL_HANDLERS", [lambda m, ch, a: calls.append((m.pk, ch))])
    path = write_xlsx(
        tmp_path / "c.xlsx",
        [HEADERS, row(), row(操作="撤回", 时间=T2), row(手机号="13812345679", 操作="拒绝")],
    )

    run(path)
    assert sorted(calls) == sorted([(members[0].pk, "sms"), (members[1].pk, "sms")])

    run(path)  # nothing new, no handler called again
    assert len(calls) == 2


def test_the_ledger_rules_refuse_bad_events(members, tmp_path):
    Member.objects.filter(pk=members[1].pk).update(
        birthday=datetime.date.today() - datetime.timedelta(days=3650)
    )
    future = timezone.localtime().replace(tzinfo=None) + datetime.timedelta(days=2)
    path = write_xlsx(
        tmp_path / "c.xlsx",
        [
            HEADERS,
            row(隐私政策版本="v9"),
            row(用途="服务通知", 隐私政策版本="v1", 时间=T2),
            row(用途="个性化推荐", 时间=T2),
            row(时间=future),
            row(手机号="13812345679"),
            row(手机号="13812345679", 操作="监护人同意", 渠道="电话"),
            row(时间=datetime.datetime(2021, 1, 1)),
            row(渠道="飞鸽"),
            row(手机号="13900000000"),
            row(操作="撤回", 隐私政策版本="v9", 时间=T2, 渠道="邮件"),
            row(操作="撤回", 隐私政策版本="v9", 时间=T2, 渠道="邮件"),
        ],
    )

    result = run(path)

    found = {(p.row, p.column): p.reason for p in result.problems}
    assert found[(2, "隐私政策版本")] == "Privacy notice version v9 does not exist."
    assert "does not ask consent for" in found[(4, "隐私政策版本")]
    assert found[(5, "时间")] == "Consent cannot be recorded with a time in the future."
    assert found[(6, "操作")] == "A guardian must grant consent for members under 14."
    assert "No privacy notice was published at that time" in found[(8, "隐私政策版本")]
    assert "飞鸽" in found[(9, "渠道")]
    assert "No member has the mobile" in found[(10, "手机号")]
    assert "also appears in row 11" in found[(12, "时间")]
    # the service-notice grant, the guardian grant are taken
    assert counts(result) == {"new": 2, "updated": 0, "unchanged": 0, "invalid": 9}
    assert Member.objects.get(pk=members[1].pk).consent_call is True


def test_a_different_event_at_the_same_moment_is_refused(members, tmp_path):
    run(write_xlsx(tmp_path / "a.xlsx", [HEADERS, row()]))

    result = run(write_xlsx(tmp_path / "b.xlsx", [HEADERS, row(操作="撤回")]))

    assert counts(result)["invalid"] == 1
    assert "already recorded" in result.problems[0].reason
    assert ConsentRecord.objects.count() == 1


def test_rights(members, tmp_path):
    path = write_xlsx(tmp_path / "c.xlsx", [HEADERS, row()])
    with pytest.raises(ImportNotAllowed):
        run(path, actor=Actor.for_user(UserFactory(role=Role.AUDITOR)))
    assert counts(run(path, actor=Actor.for_user(UserFactory(role=Role.HQ_OPERATOR))))["new"] == 1
