"""The consent ledger's rules: default deny, latest event wins, notices cover purposes, under-14s."""

import datetime
import random

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone, translation

from members import consent, services
from members.consent import (
    CONSENT_FLAG,
    ConsentEvent,
    check_consent_flags,
    consent_granted,
    guardian_age_cutoff,
    has_consent,
    is_under_guardian_age,
    project_consent,
    projected_flags,
    publish_privacy_notice,
    purposes_added,
)
from members.demo_data import seed_demo
from members.models import ConsentRecord, Member, PrivacyNotice
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import sync_role_groups
from tests.factories import MemberFactory, StoreFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module", autouse=True)
def role_permissions(django_db_setup, django_db_blocker):
    """Give the role groups every app's permissions (the post-migrate sync runs before some exist)."""
    with django_db_blocker.unblock():
        sync_role_groups()


TODAY = datetime.date(2026, 6, 1)
NOTICES = {
    "2021-11": frozenset({"marketing", "service"}),
    "2024-01": frozenset({"marketing", "personalisation", "service"}),
}
FLAGS = list(CONSENT_FLAG.values())


def at(day: datetime.date, hour: int = 12) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time(hour)))


def event(
    pk: int,
    action: str,
    *,
    when: datetime.datetime | None = None,
    channel: str = "sms",
    purpose: str = "marketing",
    version: str = "2024-01",
) -> ConsentEvent:
    return ConsentEvent(
        pk, channel, purpose, action, version, when or at(TODAY - datetime.timedelta(days=30))
    )


def granted(events, *, birthday=None, today=TODAY, channel="sms", purpose="marketing") -> bool:
    return consent_granted(
        events, channel=channel, purpose=purpose, birthday=birthday, today=today, notices=NOTICES
    )


def record(member: Member, action: str, *, channel: str = "sms", **options) -> ConsentRecord:
    options.setdefault("source", "store_pos")
    options.setdefault("policy_version", "2024-01")
    options.setdefault("actor", Actor.system("tests"))
    return services.record_consent(member, channel=channel, action=action, **options)


def flags(member: Member) -> dict[str, bool]:
    member.refresh_from_db()
    return {flag: getattr(member, flag) for flag in FLAGS}


def years_ago(years: int, *, days: int = 0) -> datetime.date:
    """The birthday of someone who turns ``years`` today (``days`` earlier); 29 February → 28."""
    today = timezone.localdate()
    try:
        same_day = today.replace(year=today.year - years)
    except ValueError:
        same_day = today.replace(year=today.year - years, day=28)
    return same_day - datetime.timedelta(days=days)


# --------------------------------------------------------------------------------------------------
# The pure rule


def test_no_event_means_no_consent_on_any_channel():
    # given no event at all / when the rule is asked / then every channel is denied
    assert projected_flags([], birthday=None, today=TODAY, notices=NOTICES) == dict.fromkeys(FLAGS, False)
    assert granted([event(1, "grant", channel="call")], channel="sms") is False


def test_the_latest_event_decides_and_the_id_breaks_a_tie():
    early, late = at(TODAY - datetime.timedelta(days=9)), at(TODAY - datetime.timedelta(days=2))
    # given a grant then a withdrawal, and the other way round
    assert granted([event(1, "grant", when=early), event(2, "withdraw", when=late)]) is False
    assert granted([event(2, "withdraw", when=early), event(1, "grant", when=late)]) is True
    # a refusal, and a guardian grant, are events like the others
    assert granted([event(1, "grant", when=early), event(2, "refuse", when=late)]) is False
    assert granted([event(1, "guardian_grant", when=late)]) is True
    # two events at the same moment: the later row wins
    assert granted([event(7, "grant", when=late), event(8, "withdraw", when=late)]) is False
    assert granted([event(8, "grant", when=late), event(7, "withdraw", when=late)]) is True


def test_a_grant_counts_only_under_a_known_notice_version_that_covers_the_purpose():
    assert granted([event(1, "grant", version="2099-01")]) is False
    assert (
        granted([event(1, "grant", version="2021-11", purpose="personalisation")], purpose="personalisation")
        is False
    )
    assert (
        granted([event(1, "grant", version="2024-01", purpose="personalisation")], purpose="personalisation")
        is True
    )
    # purposes are separate ledgers: a service-notice grant does not open marketing
    assert granted([event(1, "grant", purpose="service")], purpose="marketing") is False


def test_the_14th_birthday_cutoff_on_the_local_date_including_29_february():
    assert guardian_age_cutoff(TODAY) == datetime.date(2012, 6, 1)
    assert is_under_guardian_age(datetime.date(2012, 6, 1), TODAY) is False  # 14 today
    assert is_under_guardian_age(datetime.date(2012, 6, 2), TODAY) is True  # 14 tomorrow
    assert is_under_guardian_age(None, TODAY) is False
    assert guardian_age_cutoff(datetime.date(2022, 2, 28)) == datetime.date(2008, 2, 28)
    assert is_under_guardian_age(datetime.date(2008, 2, 29), datetime.date(2022, 2, 28)) is True
    assert is_under_guardian_age(datetime.date(2008, 2, 29), datetime.date(2022, 3, 1)) is False
    assert guardian_age_cutoff(datetime.date(2024, 2, 29)) == datetime.date(2010, 2, 28)


def test_a_member_under_14_needs_a_guardian_grant():
    # given a member who is 13 today and turns 14 tomorrow
    birthday = datetime.date(2012, 6, 2)
    a_month_ago = at(TODAY - datetime.timedelta(days=30))
    # then a plain grant does not count and a guardian grant does
    assert granted([event(1, "grant", when=a_month_ago)], birthday=birthday) is False
    assert granted([event(1, "guardian_grant", when=a_month_ago)], birthday=birthday) is True


def test_turning_14_keeps_a_guardian_grant_and_a_birthday_is_judged_on_the_day_of_evaluation():
    birthday = datetime.date(2012, 6, 2)
    made_at_13 = at(TODAY - datetime.timedelta(days=30))
    on_the_14th_birthday = datetime.date(2026, 6, 2)
    # given a guardian grant made at 13 / when evaluated from the 14th birthday on / then it still counts
    assert granted([event(1, "guardian_grant", when=made_at_13)], birthday=birthday, today=TODAY) is True
    assert (
        granted([event(1, "guardian_grant", when=made_at_13)], birthday=birthday, today=on_the_14th_birthday)
        is True
    )
    # a plain grant (only possible around record_consent) is judged on the day of evaluation
    assert granted([event(1, "grant", when=made_at_13)], birthday=birthday, today=TODAY) is False
    assert (
        granted([event(1, "grant", when=made_at_13)], birthday=birthday, today=on_the_14th_birthday) is True
    )


# --------------------------------------------------------------------------------------------------
# record_consent


def test_a_new_member_has_no_consent_anywhere(system_actor):
    member = MemberFactory()
    assert flags(member) == dict.fromkeys(FLAGS, False)
    assert has_consent(member, channel="sms") is False
    assert check_consent_flags().ok


def test_grant_withdraw_and_refuse_project_onto_the_channel_flag_and_are_audited():
    member = MemberFactory()

    # when the member grants SMS
    record(member, "grant")
    # then SMS only is open, and the audit event says what changed
    assert flags(member) == {**dict.fromkeys(FLAGS, False), "consent_sms": True}
    grant_event = AuditEvent.objects.get(action="consent.recorded")
    assert grant_event.changes == {
        "channel": "sms",
        "purpose": "marketing",
        "action": "grant",
        "source": "store_pos",
        "policy_version": "2024-01",
        "consent_sms": [False, True],
    }

    # when they withdraw through the same service with the same fields
    record(member, "withdraw", source="guide")
    assert flags(member)["consent_sms"] is False

    # when they grant WeCom and later refuse it, and refuse e-mail never having granted it
    record(member, "grant", channel="wecom")
    record(member, "refuse", channel="wecom")
    record(member, "refuse", channel="email")
    assert flags(member) == dict.fromkeys(FLAGS, False)
    assert list(
        ConsentRecord.objects.filter(member=member).order_by("id").values_list("channel", "action")
    ) == [
        ("sms", "grant"),
        ("sms", "withdraw"),
        ("wecom", "grant"),
        ("wecom", "refuse"),
        ("email", "refuse"),
    ]
    assert AuditEvent.objects.filter(action="consent.recorded", target_id=str(member.pk)).count() == 5
    assert check_consent_flags().ok


def test_a_grant_for_a_member_under_14_must_come_from_a_guardian(system_actor):
    # given a member who is 10 (birthday relative to today's local date)
    member = MemberFactory(birthday=years_ago(10))
    events_before = AuditEvent.objects.count()

    # when a plain grant is recorded, then it is refused with a translated message and nothing is written
    with translation.override("en"), pytest.raises(ValidationError) as refused:
        record(member, "grant")
    assert refused.value.messages == ["A guardian must grant consent for members under 14."]
    assert refused.value.code == "guardian_required"
    assert not ConsentRecord.objects.filter(member=member).exists()
    assert AuditEvent.objects.count() == events_before
    assert flags(member)["consent_sms"] is False

    # when the guardian grants, then the channel opens; the minor may still withdraw alone
    record(member, "guardian_grant", method="paper")
    assert flags(member)["consent_sms"] is True
    record(member, "withdraw")
    assert flags(member)["consent_sms"] is False


def test_a_member_turning_14_today_may_grant_alone_and_one_turning_14_tomorrow_may_not():
    fourteen_today = MemberFactory(birthday=years_ago(14))
    fourteen_tomorrow = MemberFactory(birthday=years_ago(14, days=-1))
    record(fourteen_today, "grant")
    with pytest.raises(ValidationError):
        record(fourteen_tomorrow, "grant")
    assert (flags(fourteen_today)["consent_sms"], flags(fourteen_tomorrow)["consent_sms"]) == (True, False)


@pytest.mark.parametrize(
    ("version", "purpose", "code", "message"),
    [
        ("2099-01", "marketing", "unknown_notice", "Privacy notice version 2099-01 does not exist."),
        (
            "2021-11",
            "personalisation",
            "purpose_not_in_notice",
            "Privacy notice version 2021-11 does not ask consent for Personalised targeting.",
        ),
    ],
)
def test_a_grant_under_an_unknown_or_insufficient_notice_is_refused_and_writes_nothing(
    version, purpose, code, message
):
    member = MemberFactory()
    events_before = AuditEvent.objects.count()

    with translation.override("en"), pytest.raises(ValidationError) as refused:
        record(member, "grant", policy_version=version, purpose=purpose)

    assert (refused.value.code, refused.value.messages) == (code, [message])
    assert ConsentRecord.objects.count() == 0
    assert AuditEvent.objects.count() == events_before
    assert flags(member) == dict.fromkeys(FLAGS, False)


def test_a_withdrawal_is_never_refused_for_its_notice_version():
    member = MemberFactory()
    record(member, "grant")
    record(member, "withdraw", policy_version="unknown-version")
    assert flags(member)["consent_sms"] is False
    assert ConsentRecord.objects.filter(member=member, action="withdraw").count() == 1


def test_consent_dated_in_the_future_is_refused():
    member = MemberFactory()
    with pytest.raises(ValidationError) as refused:
        record(member, "grant", at=timezone.now() + datetime.timedelta(hours=1))
    assert refused.value.code == "future"
    assert not ConsentRecord.objects.exists()


def test_a_back_dated_event_takes_its_place_in_the_ledger():
    # given a grant now / when a withdrawal dated yesterday arrives late (a delayed SMS reply)
    member = MemberFactory()
    record(member, "grant")
    record(member, "withdraw", at=timezone.now() - datetime.timedelta(days=1))
    # then the grant is still the latest event, and the flag says so
    assert flags(member)["consent_sms"] is True
    assert check_consent_flags().ok


def test_a_bad_choice_is_refused_with_nothing_written():
    member = MemberFactory()
    with pytest.raises(ValidationError) as refused:
        record(member, "grant", channel="fax")
    assert "channel" in refused.value.message_dict
    assert not ConsentRecord.objects.exists()


# --------------------------------------------------------------------------------------------------
# Birthday corrections and project_consent


def test_a_birthday_corrected_to_under_14_voids_a_plain_grant_at_the_next_projection(system_actor):
    # given an adult who granted SMS
    member = MemberFactory(birthday=years_ago(30))
    record(member, "grant")
    # when the birthday is corrected to a 12-year-old's
    services.update_member(member, actor=system_actor, birthday=years_ago(12))
    assert flags(member)["consent_sms"] is True
    assert not check_consent_flags().ok
    # then the next projection closes the channel and records how many members changed
    assert project_consent() == 1
    assert flags(member)["consent_sms"] is False
    assert has_consent(member, channel="sms") is False
    projected = AuditEvent.objects.get(action="consent.projected")
    assert (projected.target_id, projected.changes["changed"], projected.changes["members"]) == (
        "*",
        1,
        "all",
    )
    assert check_consent_flags().ok
    # and running it again changes nothing
    assert project_consent() == 0


def test_project_consent_for_some_members_leaves_the_others_alone():
    first, second = MemberFactory(), MemberFactory()
    record(first, "grant")
    record(second, "grant")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE members_member SET consent_sms = false WHERE id IN (%s, %s)", [first.pk, second.pk]
        )

    assert project_consent([first.pk]) == 1

    assert (flags(first)["consent_sms"], flags(second)["consent_sms"]) == (True, False)
    assert AuditEvent.objects.get(action="consent.projected").changes["members"] == 1
    assert project_consent([]) == 0


def _random_ledger(rng: random.Random, members: list[Member], today: datetime.date) -> list[ConsentRecord]:
    # A small pool of moments makes ties (same `at`) common.
    start = at(today - datetime.timedelta(days=3 * 365))
    moments = [
        start + datetime.timedelta(days=rng.randrange(3 * 365), hours=rng.choice([0, 3, 15, 16, 17]))
        for _ in range(60)
    ]
    versions = ["2021-11", "2024-01", "service-only", "1999-01"]
    rows = []
    for member in members:
        for _ in range(rng.choice([0, 0, 1, 2, 3, 5, 8])):
            rows.append(
                ConsentRecord(
                    member=member,
                    channel=rng.choice(list(CONSENT_FLAG)),
                    purpose=rng.choices(["marketing", "personalisation", "service"], weights=[6, 1, 1])[0],
                    action=rng.choice(["grant", "grant", "guardian_grant", "withdraw", "refuse"]),
                    source="import",
                    policy_version=rng.choices(versions, weights=[4, 6, 1, 1])[0],
                    at=rng.choice(moments),
                )
            )
    return ConsentRecord.objects.bulk_create(rows)


def test_the_sql_projection_equals_the_pure_rule_on_random_ledgers(system_actor):
    # given ~200 members, a third of them around their 14th birthday, with random ledgers and random flags
    rng = random.Random(20260601)
    publish_privacy_notice("service-only", ["service"], actor=system_actor)
    store = StoreFactory()
    now = timezone.now()
    cutoff = guardian_age_cutoff(TODAY)

    def birthday() -> datetime.date | None:
        kind = rng.random()
        if kind < 0.2:
            return None
        if kind < 0.3:
            return cutoff + datetime.timedelta(days=rng.choice([-1, 0, 1]))  # 14 yesterday, today, tomorrow
        if kind < 0.55:
            return cutoff + datetime.timedelta(days=rng.randint(-800, 400))  # 12–16, many at the boundary
        return datetime.date(rng.randint(1950, 2010), rng.randint(1, 12), rng.randint(1, 28))

    members = Member.objects.bulk_create(
        Member(
            mobile=f"+86139{i:08d}",
            home_store=store,
            joined_at=now,
            birthday=birthday(),
            **{flag: rng.random() < 0.5 for flag in FLAGS},
        )
        for i in range(200)
    )
    ledger = _random_ledger(rng, members, TODAY)
    assert len(ledger) > 300
    notices = consent.notice_purposes()
    by_member: dict[int, list[ConsentEvent]] = {}
    for row in ledger:
        by_member.setdefault(row.member_id, []).append(ConsentEvent.from_record(row))
    expected = {
        m.pk: projected_flags(by_member.get(m.pk, []), birthday=m.birthday, today=TODAY, notices=notices)
        for m in members
    }
    differing = sum(1 for m in members if expected[m.pk] != {f: getattr(m, f) for f in FLAGS})

    # when the SQL projects every member
    changed = project_consent(today=TODAY)

    # then every stored flag equals the pure rule, and only the differing members were written
    stored = {
        row[0]: dict(zip(FLAGS, row[1:], strict=True))
        for row in Member.objects.filter(pk__in=[m.pk for m in members]).values_list("pk", *FLAGS)
    }
    assert stored == expected
    assert changed == differing
    assert sum(flag for member_flags in expected.values() for flag in member_flags.values()) > 20
    assert check_consent_flags(today=TODAY, batch_size=37).ok
    assert project_consent(today=TODAY) == 0


def test_the_demo_brand_flags_equal_the_ledger():
    seed_demo(members=120, seed=3, today=datetime.date(2026, 3, 15))
    assert ConsentRecord.objects.filter(policy_version__in=["2021-11", "2024-01"]).count() == (
        ConsentRecord.objects.count()
    )
    check = check_consent_flags()
    assert (check.ok, check.members_checked) == (True, 120)
    assert project_consent() == 0


# --------------------------------------------------------------------------------------------------
# verify_consent


def test_verify_consent_reports_a_ledger_that_matches(capsys):
    for member in MemberFactory.create_batch(3):
        record(member, "grant", channel="wecom")
    with translation.override("en"):
        call_command("verify_consent", "--batch-size", "2")
    assert capsys.readouterr().out.strip() == "consent flags match the ledger for 3 members"


def test_verify_consent_catches_a_flag_flipped_with_raw_sql():
    # given members whose flags equal the ledger
    members = MemberFactory.create_batch(3)
    record(members[0], "grant")
    record(members[2], "grant", channel="call")
    # when someone flips flags in the database directly
    with connection.cursor() as cursor:
        cursor.execute("UPDATE members_member SET consent_sms = true WHERE id = %s", [members[1].pk])
        cursor.execute("UPDATE members_member SET consent_call = false WHERE id = %s", [members[2].pk])
    # then the replay lists both, and the command fails
    with translation.override("en"), pytest.raises(CommandError) as failed:
        call_command("verify_consent")
    assert str(failed.value).splitlines() == [
        "2 of 3 members have consent flags that differ from the ledger:",
        f"member {members[1].pk}: consent_sms is True, the ledger gives False",
        f"member {members[2].pk}: consent_call is False, the ledger gives True",
    ]


# --------------------------------------------------------------------------------------------------
# Notices


def test_publishing_a_version_that_adds_a_purpose_needs_new_consent_for_it(system_actor):
    # given HQ's notice 2026-01 asks for marketing and service only, and a member agreed to both on WeCom
    publish_privacy_notice("2026-01", ["service", "marketing"], "营销与服务通知", actor=system_actor)
    member = MemberFactory()
    record(member, "grant", channel="wecom", policy_version="2026-01")
    record(member, "grant", channel="wecom", policy_version="2026-01", purpose="service")
    with pytest.raises(ValidationError):
        record(member, "grant", channel="wecom", policy_version="2026-01", purpose="personalisation")

    # when HQ publishes 2026-07, adding personalised targeting
    notice = publish_privacy_notice(
        "2026-07", ["marketing", "personalisation", "service"], "新增个性化推荐", actor=system_actor
    )

    # then the new purpose is announced as needing consent, and the earlier grants do not cover it
    assert purposes_added(notice) == ["personalisation"]
    published = AuditEvent.objects.get(action="privacy_notice.published", target_id=str(notice.pk))
    assert published.changes == {
        "version": "2026-07",
        "purposes": ["marketing", "personalisation", "service"],
        "previous": "2026-01",
        "added_purposes": ["personalisation"],
        "removed_purposes": [],
    }
    assert has_consent(member, channel="wecom", purpose="personalisation") is False
    assert (has_consent(member, channel="wecom"), flags(member)["consent_wecom"]) == (True, True)

    # when the member is asked again under 2026-07, then the new purpose is granted
    record(member, "grant", channel="wecom", policy_version="2026-07", purpose="personalisation")
    assert has_consent(member, channel="wecom", purpose="personalisation") is True


def test_a_personalisation_grant_imported_under_a_notice_without_it_does_not_count():
    # given rows written by an import, bypassing record_consent's checks
    member = MemberFactory()
    ConsentRecord.objects.create(
        member=member,
        channel="sms",
        purpose="personalisation",
        action="grant",
        source="import",
        policy_version="2021-11",
        at=timezone.now(),
    )
    assert has_consent(member, channel="sms", purpose="personalisation") is False
    ConsentRecord.objects.create(
        member=member,
        channel="sms",
        purpose="personalisation",
        action="grant",
        source="import",
        policy_version="2024-01",
        at=timezone.now(),
    )
    assert has_consent(member, channel="sms", purpose="personalisation") is True


@pytest.mark.parametrize(
    ("version", "purposes", "code"),
    [
        ("2024-01", ["marketing"], "duplicate"),
        ("2026-02", [], "empty"),
        ("2026-02", ["spam"], "unknown_purpose"),
        (" ", ["service"], "required"),
    ],
)
def test_a_bad_notice_is_refused_and_nothing_is_published(system_actor, version, purposes, code):
    before = PrivacyNotice.objects.count()
    with pytest.raises(ValidationError) as refused:
        publish_privacy_notice(version, purposes, actor=system_actor)
    assert refused.value.code == code
    assert PrivacyNotice.objects.count() == before
    assert not AuditEvent.objects.filter(action="privacy_notice.published").exists()


def test_hq_publishes_a_notice_in_the_admin_through_the_service_and_cannot_edit_it(client, hq_admin):
    client.force_login(hq_admin)
    publish_privacy_notice("2026-01", ["marketing", "service"], actor=Actor.for_user(hq_admin))

    client.post("/i18n/setlang/", {"language": "en", "next": "/admin/"})
    response = client.post(
        reverse("admin:members_privacynotice_add"),
        {"version": "2026-07", "purposes": ["marketing", "personalisation", "service"], "summary": "新增"},
        follow=True,
    )

    notice = PrivacyNotice.objects.get(version="2026-07")
    assert notice.purposes == ["marketing", "personalisation", "service"]
    event = AuditEvent.objects.get(action="privacy_notice.published", target_id=str(notice.pk))
    assert (event.actor, event.changes["added_purposes"]) == (hq_admin, ["personalisation"])
    assert "Consent must be asked again for: Personalised targeting." in [
        str(m) for m in response.context["messages"]
    ]
    change = client.post(
        reverse("admin:members_privacynotice_change", args=[notice.pk]),
        {"version": "x", "purposes": ["service"]},
    )
    assert change.status_code == 403
    notice.refresh_from_db()
    assert (notice.version, notice.purposes) == ("2026-07", ["marketing", "personalisation", "service"])


def test_the_two_notice_versions_exist_and_cannot_be_changed_or_deleted():
    assert dict(PrivacyNotice.objects.values_list("version", "purposes")) == {
        "2021-11": ["marketing", "service"],
        "2024-01": ["marketing", "personalisation", "service"],
    }
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        PrivacyNotice.objects.filter(version="2021-11").update(purposes=["marketing", "personalisation"])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        PrivacyNotice.objects.filter(version="2021-11").delete()


# --------------------------------------------------------------------------------------------------
# Withdrawal handlers (open tasks on the channel are cancelled through this hook)


def test_withdrawal_handlers_run_inside_the_withdrawal_transaction(monkeypatch):
    member = MemberFactory()
    actor = Actor.system("tests")
    seen = []

    def handler(who: Member, channel: str, by: Actor) -> None:
        seen.append(
            (
                who.pk,
                channel,
                by,
                connection.in_atomic_block,
                ConsentRecord.objects.filter(member=who, action="withdraw").count(),
                Member.objects.get(pk=who.pk).consent_sms,
            )
        )

    monkeypatch.setattr(consent, "WITHDRAWAL_HANDLERS", [handler])
    record(member, "grant", actor=actor)
    assert seen == []  # a grant does not call them

    record(member, "withdraw", actor=actor)
    record(member, "refuse", channel="email", actor=actor)

    assert seen == [(member.pk, "sms", actor, True, 1, False), (member.pk, "email", actor, True, 1, False)]


def test_a_failing_withdrawal_handler_rolls_the_withdrawal_back(monkeypatch):
    member = MemberFactory()
    record(member, "grant")
    events_before = AuditEvent.objects.count()

    def cancel_tasks(who: Member, channel: str, by: Actor) -> None:
        raise RuntimeError("task store unavailable")

    monkeypatch.setattr(consent, "WITHDRAWAL_HANDLERS", [cancel_tasks])
    with pytest.raises(RuntimeError):
        record(member, "withdraw")

    assert list(ConsentRecord.objects.filter(member=member).values_list("action", flat=True)) == ["grant"]
    assert flags(member)["consent_sms"] is True
    assert AuditEvent.objects.count() == events_before
