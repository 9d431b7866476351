"""Data-subject requests (access, correction, erasure) and retention, through the services and the admin."""

import datetime
import io
import json
import zoneinfo
from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.text import capfirst
from openpyxl import load_workbook

from members import privacy
from members.models import (
    ConsentRecord,
    DataSubjectRequest,
    ExternalIdentity,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    PointsEntry,
    PrivacyNotice,
)
from members.phones import normalize_mobile
from members.services import add_points, assign_guide, record_consent, tag_member
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.factories import (
    MemberFactory,
    OrderFactory,
    OrderLineFactory,
    TagFactory,
    TierFactory,
)

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
MOBILE = "+8613912345678"
NAME = "林晓"
Kind = DataSubjectRequest.Kind
Status = DataSubjectRequest.Status


@pytest.fixture
def notices(db):
    """The notice members consented under, and a newer one that a withdrawal must name."""
    PrivacyNotice.objects.get_or_create(
        version="2024-01",
        defaults={
            "purposes": ["marketing", "personalisation", "service"],
            "published_at": datetime.datetime(2024, 1, 1, tzinfo=SHANGHAI),
        },
    )
    PrivacyNotice.objects.get_or_create(
        version="2099-01",
        defaults={
            "purposes": ["marketing", "personalisation", "service"],
            "published_at": datetime.datetime(2025, 6, 1, tzinfo=SHANGHAI),
        },
    )


@pytest.fixture
def person(notices, hq_operator, guide):
    """A member with something in every section: identities, tags, points, orders, consent, a guide."""
    actor = Actor.for_user(hq_operator)
    member = MemberFactory(
        mobile=MOBILE,
        name=NAME,
        gender=Member.Gender.FEMALE,
        birthday=datetime.date(1990, 5, 17),
        home_store=guide.store,
        tier=TierFactory(code="gold", name="金卡", rank=3),
    )
    assign_guide(member, guide, actor=actor, reason=GuideAssignment.Reason.JOINED)
    ExternalIdentity.objects.create(member=member, platform="wechat_unionid", external_id="union-linxiao")
    ExternalIdentity.objects.create(member=member, platform="tmall_ouid", external_id="ouid-linxiao")
    tag_member(member, TagFactory(name="偏好周末"), source=MemberTag.Source.GUIDE, actor=actor)
    tag_member(member, TagFactory(name="敏感肌"), source=MemberTag.Source.HQ, actor=actor)
    add_points(member, delta=300, kind=PointsEntry.Kind.EARN, actor=actor, ref="NO-1")
    add_points(member, delta=-100, kind=PointsEntry.Kind.REDEEM, actor=actor)
    order = OrderFactory(member=member, store=guide.store, external_no="NO-1", amount=Decimal("398.00"))
    OrderLineFactory(order=order, line_no=1, sku="SKU-A", name="修护精华", amount=Decimal("299.00"))
    OrderLineFactory(order=order, line_no=2, sku="SKU-B", name="洁面乳", amount=Decimal("99.00"))
    OrderFactory(member=member, store=guide.store, external_no="NO-2")
    for channel, purpose in (("sms", "marketing"), ("wecom", "marketing"), ("sms", "personalisation")):
        record_consent(
            member,
            channel=channel,
            purpose=purpose,
            action=ConsentRecord.Action.GRANT,
            source=ConsentRecord.Source.STORE_POS,
            policy_version="2024-01",
            actor=actor,
        )
    record_consent(
        member,
        channel="call",
        action=ConsentRecord.Action.GRANT,
        source=ConsentRecord.Source.STORE_POS,
        policy_version="2024-01",
        actor=actor,
    )
    record_consent(
        member,
        channel="call",
        action=ConsentRecord.Action.WITHDRAW,
        source=ConsentRecord.Source.GUIDE,
        policy_version="2024-01",
        actor=actor,
    )
    privacy.reveal_mobile(member, actor=Actor.for_user(guide.user), reason="about_to_call")
    member.refresh_from_db()
    return member


def open_request(member, kind, actor_user, **kwargs):
    return privacy.open_data_request(
        member,
        kind=kind,
        channel=ConsentRecord.Source.HQ_ADMIN,
        details=kwargs.pop("details", "电话来电要求"),
        actor=Actor.for_user(actor_user),
        **kwargs,
    )


# Opening ------------------------------------------------------------------------------------------


def test_a_request_is_due_fifteen_days_after_it_was_received_and_audited(person, hq_operator):
    received = timezone.now() - datetime.timedelta(days=2)

    request = open_request(person, Kind.ACCESS, hq_operator, received_at=received)

    assert (request.status, request.received_at, request.due_at) == (
        Status.RECEIVED,
        received,
        received + datetime.timedelta(days=15),
    )
    assert request.received_by == hq_operator
    event = AuditEvent.objects.get(action="data_request.opened")
    assert (event.target_type, event.target_id, event.store_id) == (
        "members.datasubjectrequest",
        str(request.pk),
        person.home_store_id,
    )
    assert event.changes["kind"] == "access"


def test_an_unknown_kind_is_refused_and_nothing_is_written(person, hq_operator):
    with pytest.raises(ValidationError):
        open_request(person, "forget_me", hq_operator)
    assert not DataSubjectRequest.objects.exists()


# Access -------------------------------------------------------------------------------------------


def test_the_access_package_holds_every_section(person, hq_operator, guide):
    package = privacy.build_access_package(person)

    assert set(package) == {
        "generated_at",
        "member",
        "identities",
        "tags",
        "points",
        "orders",
        "consents",
        "guide_assignments",
        "data_requests",
        "views",
    }
    assert set(package["member"]) == {f.name for f in Member._meta.concrete_fields}
    assert (package["member"]["mobile"], package["member"]["name"], package["member"]["birthday"]) == (
        MOBILE,
        NAME,
        "1990-05-17",
    )
    assert package["member"]["points_balance"] == 200
    assert package["member"]["tier"] == "金卡"
    assert sorted(i["external_id"] for i in package["identities"]) == ["ouid-linxiao", "union-linxiao"]
    assert sorted(t["tag"] for t in package["tags"]) == ["偏好周末", "敏感肌"]
    assert [p["delta"] for p in package["points"]] == [300, -100]
    orders = {o["external_no"]: o for o in package["orders"]}
    assert set(orders) == {"NO-1", "NO-2"}
    assert orders["NO-1"]["amount"] == "398.00"
    assert [(line["sku"], line["amount"]) for line in orders["NO-1"]["lines"]] == [
        ("SKU-A", "299.00"),
        ("SKU-B", "99.00"),
    ]
    assert [(c["channel"], c["purpose"], c["action"]) for c in package["consents"]] == [
        ("sms", "marketing", "grant"),
        ("wecom", "marketing", "grant"),
        ("sms", "personalisation", "grant"),
        ("call", "marketing", "grant"),
        ("call", "marketing", "withdraw"),
    ]
    assert [(a["guide"], a["ended_at"]) for a in package["guide_assignments"]] == [(str(guide), None)]
    # who looked: the guide's reveal, with its reason
    reveal = [v for v in package["views"] if v["action"] == "member.mobile_revealed"]
    assert [(v["actor_label"], v["changes"]) for v in reveal] == [
        (guide.user.username, {"reason": "about_to_call"})
    ]


def test_completing_an_access_request_closes_it_and_records_the_export(person, hq_operator):
    request = open_request(person, Kind.ACCESS, hq_operator)
    actor = Actor.for_user(hq_operator)

    package = privacy.complete_access_request(request, actor=actor)
    again = privacy.complete_access_request(request, actor=actor)  # say as JSON after the xlsx

    request.refresh_from_db()
    assert (request.status, request.handled_by) == (Status.DONE, hq_operator)
    assert request.completed_at is not None
    assert [r["status"] for r in package["data_requests"]] == ["done"]
    exports = AuditEvent.objects.filter(action="member.access_package_exported").order_by("id")
    assert [(e.target_id, e.changes["data_request"]) for e in exports] == [
        (str(person.pk), request.pk),
        (str(person.pk), request.pk),
    ]
    assert exports[0].changes["rows"]["orders"] == 2
    # the second export lists the first among the member's viewers
    assert [v["action"] for v in again["views"]].count("member.access_package_exported") == 1
    assert AuditEvent.objects.filter(action="data_request.completed").count() == 1


def test_an_access_package_is_refused_for_another_kind_of_request(person, hq_operator):
    request = open_request(person, Kind.ERASE, hq_operator)

    with pytest.raises(ValidationError):
        privacy.complete_access_request(request, actor=Actor.for_user(hq_operator))

    request.refresh_from_db()
    assert request.status == Status.RECEIVED
    assert not AuditEvent.objects.filter(action="member.access_package_exported").exists()


def test_the_xlsx_package_opens_with_a_sheet_per_section_and_chinese_headers(person):
    # given a member whose name looks like a formula
    Member.objects.filter(pk=person.pk).update(name='=HYPERLINK("http://x","y")')
    package = privacy.build_access_package(person)

    # when the package is written as xlsx and read back
    workbook = load_workbook(io.BytesIO(privacy.access_package_xlsx(package)))

    # then there is one sheet per section, named and headed in Chinese
    with translation.override("zh-hans"):
        expected = [str(capfirst(model._meta.verbose_name_plural)) for _key, model, _f in privacy.SECTIONS]
    assert workbook.sheetnames == expected
    assert workbook.sheetnames[:2] == ["会员", "外部身份"]
    member_sheet = {row[0]: row[1] for row in workbook["会员"].iter_rows(values_only=True)}
    assert member_sheet["手机号"] == MOBILE
    assert member_sheet["姓名"] == '=HYPERLINK("http://x","y")'
    assert workbook["会员"]["B3"].data_type == "s"  # text, never a formula
    orders = list(workbook["订单"].iter_rows(values_only=True))
    assert len(orders) == 3
    lines = list(workbook["订单明细"].iter_rows(values_only=True))
    assert [row[0] for row in lines[1:]] == ["NO-1", "NO-1"]
    audit_rows = list(workbook["审计事件"].iter_rows(values_only=True))
    assert audit_rows[0][:2] == ("时间", "操作")
    assert "member.mobile_revealed" in [row[1] for row in audit_rows]


def test_the_json_package_parses_back_to_the_package(person):
    package = privacy.build_access_package(person)

    assert json.loads(privacy.access_package_json(package).decode("utf-8")) == package


# Correction ---------------------------------------------------------------------------------------


def test_a_correction_goes_through_update_member_and_closes_the_request(person, hq_operator):
    request = open_request(person, Kind.CORRECT, hq_operator, details="生日登记错了，名字少一个字")

    member = privacy.correct_member(
        request, actor=Actor.for_user(hq_operator), name="林晓晓", birthday=datetime.date(1991, 5, 17)
    )

    assert (member.name, member.birthday) == ("林晓晓", datetime.date(1991, 5, 17))
    updated = AuditEvent.objects.get(action="member.updated", target_id=str(person.pk))
    assert updated.changes == {"name": [NAME, "林晓晓"], "birthday": ["1990-05-17", "1991-05-17"]}
    request.refresh_from_db()
    assert (request.status, request.handled_by) == (Status.DONE, hq_operator)
    with translation.override("en"):
        assert request.outcome != ""
    assert AuditEvent.objects.filter(action="data_request.completed", target_id=str(request.pk)).count() == 1


def test_a_correction_changes_only_personal_fields(person, hq_operator):
    request = open_request(person, Kind.CORRECT, hq_operator)

    with pytest.raises(ValueError):
        privacy.correct_member(request, actor=Actor.for_user(hq_operator), points_balance=10_000)

    request.refresh_from_db()
    assert request.status == Status.RECEIVED


def test_a_closed_request_cannot_be_closed_again(person, hq_operator):
    request = open_request(person, Kind.CORRECT, hq_operator)
    actor = Actor.for_user(hq_operator)
    privacy.correct_member(request, actor=actor, name="林晓晓")

    with pytest.raises(ValidationError):
        privacy.correct_member(request, actor=actor, name="别的名字")

    assert Member.objects.get(pk=person.pk).name == "林晓晓"


# Erasure ------------------------------------------------------------------------------------------


def erase(member, user):
    request = open_request(member, Kind.ERASE, user)
    return request, privacy.erase_member(request, actor=Actor.for_user(user))


def test_erasure_removes_the_person_and_keeps_the_business_record(person, hq_admin):
    # given what the member's orders, points and metrics are before
    orders = set(Order.objects.filter(member=person).values_list("pk", flat=True))
    points = list(PointsEntry.objects.filter(member=person).values_list("pk", "delta"))
    metrics = ("points_balance", "order_count", "total_spend", "spend_12m", "lifecycle_stage", "tier_id")
    before = {name: getattr(person, name) for name in metrics}
    started = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    # when HQ erases the member on their request
    request, member = erase(person, hq_admin)

    # then the person is gone from the row
    assert (member.name, member.birthday, member.gender) == ("", None, Member.Gender.UNKNOWN)
    assert member.mobile == f"+999{person.pk:011d}"
    assert (member.status, member.guide_id) == (Member.Status.ERASED, None)
    assert member.erased_at is not None
    assert not ExternalIdentity.objects.filter(member=person).exists()
    assert not MemberTag.objects.filter(member=person).exists()
    # and the business record stays
    assert set(Order.objects.filter(member=person).values_list("pk", flat=True)) == orders
    assert list(PointsEntry.objects.filter(member=person).values_list("pk", "delta")) == points
    assert {name: getattr(member, name) for name in metrics} == before
    # the guide binding is closed in the history, not deleted
    assert GuideAssignment.objects.get(member=person).ended_at is not None
    # every consent is withdrawn with a ledger row under the latest notice
    assert (member.consent_sms, member.consent_call, member.consent_wecom, member.consent_email) == (
        False,
        False,
        False,
        False,
    )
    withdrawals = ConsentRecord.objects.filter(member=person, evidence__data_request=request.pk)
    assert sorted(withdrawals.values_list("channel", "purpose", "action", "source", "policy_version")) == [
        ("sms", "marketing", "withdraw", "hq_admin", "2099-01"),
        ("sms", "personalisation", "withdraw", "hq_admin", "2099-01"),
        ("wecom", "marketing", "withdraw", "hq_admin", "2099-01"),
    ]
    # the request is closed, and the erasure is on the trail without what it erased
    request.refresh_from_db()
    assert (request.status, request.handled_by) == (Status.DONE, hq_admin)
    erased = AuditEvent.objects.get(action="member.erased")
    assert erased.changes["data_request"] == request.pk
    assert (erased.changes["identities_deleted"], erased.changes["tags_deleted"]) == (2, 2)
    written = AuditEvent.objects.filter(id__gt=started)
    assert written.filter(action="consent.recorded").count() == 3
    assert written.filter(action="member.guide_assigned").count() == 1
    for event in written:
        text = json.dumps([event.target_label, event.changes], ensure_ascii=False)
        assert NAME not in text and "13912345678" not in text, event.action
    # and nothing of it bypassed the services: the row triggers recorded nothing
    assert not written.filter(action__startswith="db.").exists()


def test_an_erased_member_cannot_be_erased_again(person, hq_admin):
    first = open_request(person, Kind.ERASE, hq_admin)
    second = open_request(person, Kind.ERASE, hq_admin)
    privacy.erase_member(first, actor=Actor.for_user(hq_admin))
    events = AuditEvent.objects.count()

    with translation.override("en"), pytest.raises(ValidationError) as refused:
        privacy.erase_member(second, actor=Actor.for_user(hq_admin))

    assert refused.value.messages == ["This member's personal data has already been erased."]
    second.refresh_from_db()
    assert second.status == Status.RECEIVED
    assert AuditEvent.objects.count() == events


def test_no_new_request_is_taken_for_an_erased_member(person, hq_admin):
    erase(person, hq_admin)

    with pytest.raises(ValidationError):
        open_request(person, Kind.ACCESS, hq_admin)


def test_erasure_needs_the_right_to_delete_members(person, hq_operator):
    request = open_request(person, Kind.ERASE, hq_operator)

    with pytest.raises(PermissionDenied):
        privacy.erase_member(request, actor=Actor.for_user(hq_operator))

    person.refresh_from_db()
    assert (person.name, person.status) == (NAME, Member.Status.ACTIVE)


def test_placeholders_are_unique_e164_shaped_and_never_a_real_number(db, hq_admin, notices):
    members = MemberFactory.create_batch(3)

    for member in members:
        erase(member, hq_admin)

    mobiles = [Member.objects.get(pk=m.pk).mobile for m in members]
    assert mobiles == [f"+999{m.pk:011d}" for m in members]
    assert len(set(mobiles)) == 3
    assert privacy.placeholder_mobile(42) == "+99900000000042"
    with pytest.raises(ValidationError):
        normalize_mobile(mobiles[0])


def test_an_erased_member_shows_no_personal_data_on_any_page(client, person, hq_admin, guide):
    erase(person, hq_admin)

    client.force_login(guide.user)
    assert client.get(reverse("guides:member", args=[person.pk])).status_code == 404
    assert NAME not in client.get(reverse("guides:members")).content.decode()
    client.force_login(hq_admin)
    page = client.get(reverse("admin:members_member_change", args=[person.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert NAME not in html
    assert "13912345678" not in html
    assert "union-linxiao" not in html


# Retention ----------------------------------------------------------------------------------------


@pytest.fixture
def members_by_activity(notices, store):
    now = timezone.now()
    years = datetime.timedelta(days=365)
    return {
        # joined four years ago, last bought three and a half years ago: inactive past three years
        "inactive": MemberFactory(
            home_store=store, joined_at=now - 4 * years, last_purchase_at=now - 3.5 * years, consent_sms=True
        ),
        # joined as long ago, bought last week: active
        "buyer": MemberFactory(
            home_store=store, joined_at=now - 4 * years, last_purchase_at=now - datetime.timedelta(days=7)
        ),
        # never bought, joined a year ago: still within the period
        "newcomer": MemberFactory(home_store=store, joined_at=now - years),
        # just inside the period
        "edge": MemberFactory(home_store=store, joined_at=now - 3 * years + datetime.timedelta(days=1)),
    }


def snapshot() -> dict[int, tuple]:
    return {
        m["pk"]: tuple(m.values())
        for m in Member.objects.values("pk", "name", "mobile", "status", "erased_at", "updated_at")
    }


def test_retention_anonymises_only_the_inactive_member(members_by_activity):
    before = snapshot()

    count = privacy.anonymise_inactive_members(actor=Actor.system("retention"))

    inactive = members_by_activity["inactive"]
    assert count == 1
    after = snapshot()
    assert {pk for pk in before if before[pk] != after[pk]} == {inactive.pk}
    member = Member.objects.get(pk=inactive.pk)
    assert (member.name, member.status, member.consent_sms) == ("", Member.Status.ERASED, False)
    assert member.mobile == privacy.placeholder_mobile(inactive.pk)
    event = AuditEvent.objects.get(action="member.anonymised_for_retention")
    assert (event.target_id, event.actor_kind, event.actor_label) == (str(inactive.pk), "system", "retention")
    run = AuditEvent.objects.get(action="member.retention_run")
    assert run.changes["anonymised"] == 1


def test_a_second_retention_run_changes_nothing(members_by_activity):
    privacy.anonymise_inactive_members(actor=Actor.system("retention"))
    before = snapshot()
    events = AuditEvent.objects.exclude(action="member.retention_run").count()

    count = privacy.anonymise_inactive_members(actor=Actor.system("retention"))

    assert count == 0
    assert snapshot() == before
    assert AuditEvent.objects.exclude(action="member.retention_run").count() == events


def test_retention_works_through_every_batch(notices, store):
    old = timezone.now() - datetime.timedelta(days=4 * 365)
    members = MemberFactory.create_batch(5, home_store=store, joined_at=old)

    count = privacy.anonymise_inactive_members(actor=Actor.system("retention"), batch_size=2)

    assert count == 5
    assert set(Member.objects.filter(pk__in=[m.pk for m in members]).values_list("status", flat=True)) == {
        Member.Status.ERASED
    }


def test_the_retention_period_comes_from_the_settings(members_by_activity, settings):
    settings.SCRM_RETENTION_INACTIVE_DAYS = 300

    count = privacy.anonymise_inactive_members(actor=Actor.system("retention"), dry_run=True)

    assert count == 3  # the newcomer of a year ago is now past the period too


def test_the_command_dry_run_counts_and_changes_nothing(members_by_activity):
    before = snapshot()
    out = io.StringIO()

    with translation.override("en"):
        call_command("anonymise_inactive_members", "--dry-run", stdout=out)

    assert out.getvalue().strip() == "1 members inactive for over 1095 days would be anonymised."
    assert snapshot() == before
    assert not AuditEvent.objects.filter(
        action__in=["member.anonymised_for_retention", "member.retention_run"]
    ).exists()


def test_the_command_anonymises(members_by_activity):
    out = io.StringIO()

    with translation.override("en"):
        call_command("anonymise_inactive_members", stdout=out)

    assert out.getvalue().strip() == "1 members inactive for over 1095 days anonymised."
    assert Member.objects.get(pk=members_by_activity["inactive"].pk).status == Member.Status.ERASED


def test_the_nightly_task_is_scheduled():
    from scrm.celery import app

    entry = app.conf.beat_schedule["anonymise-inactive-members"]
    assert entry["task"] == "members.tasks.anonymise_inactive_members_task"
    from members.tasks import anonymise_inactive_members_task

    assert anonymise_inactive_members_task.name == entry["task"]


# Admin --------------------------------------------------------------------------------------------

CHANGELIST = "admin:members_datasubjectrequest_changelist"


def post_action(client, action, requests, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": action, ACTION_CHECKBOX_NAME: [r.pk for r in requests], "index": 0, **extra},
    )


def confirm_action(client, action, requests, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": action, ACTION_CHECKBOX_NAME: [r.pk for r in requests], "confirm": "yes", **extra},
    )


def test_the_list_highlights_and_filters_overdue_requests(client, person, hq_operator):
    late = open_request(
        person, Kind.ACCESS, hq_operator, received_at=timezone.now() - datetime.timedelta(days=20)
    )
    on_time = open_request(person, Kind.CORRECT, hq_operator)
    client.force_login(hq_operator)

    page = client.get(reverse(CHANGELIST))
    overdue = client.get(reverse(CHANGELIST), {"overdue": "yes"})
    not_overdue = client.get(reverse(CHANGELIST), {"overdue": "no"})

    assert page.status_code == 200
    assert page.content.decode().count("scrm-overdue") == 1
    assert [r.pk for r in overdue.context["cl"].result_list] == [late.pk]
    assert [r.pk for r in not_overdue.context["cl"].result_list] == [on_time.pk]
    assert "13912345678" not in page.content.decode()


def test_the_add_form_opens_a_request_through_the_service(client, person, hq_operator):
    client.force_login(hq_operator)

    response = client.post(
        reverse("admin:members_datasubjectrequest_add"),
        {"member": person.pk, "kind": "erase", "channel": "miniprogram", "details": "小程序提交注销申请"},
    )

    assert response.status_code == 302
    request = DataSubjectRequest.objects.get()
    assert (request.kind, request.channel, request.received_by) == ("erase", "miniprogram", hq_operator)
    assert request.due_at - request.received_at == datetime.timedelta(days=15)
    assert AuditEvent.objects.filter(action="data_request.opened", target_id=str(request.pk)).count() == 1


def test_the_auditor_reads_requests_and_can_do_nothing_with_them(client, person, hq_operator, auditor):
    request = open_request(person, Kind.ERASE, hq_operator)
    client.force_login(auditor)

    page = client.get(reverse(CHANGELIST))

    assert page.status_code == 200
    assert page.context["action_form"] is None  # no action at all
    assert client.get(reverse("admin:members_datasubjectrequest_add")).status_code == 403
    confirm_action(client, "erase_selected", [request])
    assert Member.objects.get(pk=person.pk).status == Member.Status.ACTIVE


def test_the_access_package_downloads_as_xlsx_and_json(client, person, hq_operator):
    request = open_request(person, Kind.ACCESS, hq_operator)
    client.force_login(hq_operator)

    xlsx = post_action(client, "download_access_xlsx", [request])
    as_json = post_action(client, "download_access_json", [request])

    assert xlsx.status_code == 200
    assert xlsx["Content-Type"].startswith("application/vnd.openxmlformats")
    assert xlsx["Content-Disposition"].startswith("attachment")
    assert "no-store" in xlsx["Cache-Control"]
    assert load_workbook(io.BytesIO(xlsx.content)).sheetnames[0] == "会员"
    assert json.loads(as_json.content)["member"]["mobile"] == MOBILE
    assert AuditEvent.objects.filter(action="member.access_package_exported").count() == 2
    request.refresh_from_db()
    assert request.status == Status.DONE


def test_erasing_in_the_admin_asks_for_confirmation_first(client, person, hq_admin):
    request = open_request(person, Kind.ERASE, hq_admin)
    client.force_login(hq_admin)

    confirmation = post_action(client, "erase_selected", [request])

    assert confirmation.status_code == 200
    html = confirmation.content.decode()
    assert "139****5678" in html
    assert "13912345678" not in html
    assert Member.objects.get(pk=person.pk).status == Member.Status.ACTIVE

    done = confirm_action(client, "erase_selected", [request])

    assert done.status_code == 302
    assert Member.objects.get(pk=person.pk).status == Member.Status.ERASED


def test_hq_operators_cannot_erase_in_the_admin(client, person, hq_operator):
    request = open_request(person, Kind.ERASE, hq_operator)
    client.force_login(hq_operator)

    page = client.get(reverse(CHANGELIST))
    confirm_action(client, "erase_selected", [request])

    actions = [name for name, _label in page.context["action_form"].fields["action"].choices]
    assert "erase_selected" not in actions
    assert {"download_access_xlsx", "download_access_json", "correct_selected", "reject_selected"} <= set(
        actions
    )
    assert Member.objects.get(pk=person.pk).status == Member.Status.ACTIVE


def test_correcting_in_the_admin_applies_the_changed_fields(client, person, hq_operator):
    request = open_request(person, Kind.CORRECT, hq_operator)
    client.force_login(hq_operator)

    form_page = post_action(client, "correct_selected", [request])
    done = confirm_action(
        client,
        "correct_selected",
        [request],
        mobile=MOBILE,
        name="林晓晓",
        gender=Member.Gender.FEMALE,
        birthday="1990-05-17",
    )

    assert form_page.status_code == 200
    assert form_page.context["form"].initial["name"] == NAME
    assert done.status_code == 302
    member = Member.objects.get(pk=person.pk)
    assert (member.name, member.mobile) == ("林晓晓", MOBILE)
    updated = AuditEvent.objects.get(action="member.updated", target_id=str(person.pk))
    assert updated.changes == {"name": [NAME, "林晓晓"]}
    request.refresh_from_db()
    assert request.status == Status.DONE


def test_rejecting_in_the_admin_needs_a_reason(client, person, hq_operator):
    request = open_request(person, Kind.ACCESS, hq_operator)
    client.force_login(hq_operator)

    without = confirm_action(client, "reject_selected", [request], outcome="")
    request.refresh_from_db()
    assert (without.status_code, request.status) == (200, Status.RECEIVED)

    confirm_action(client, "reject_selected", [request], outcome="无法核实申请人身份")
    request.refresh_from_db()
    assert (request.status, request.outcome) == (Status.REJECTED, "无法核实申请人身份")
    assert AuditEvent.objects.filter(action="data_request.rejected").count() == 1


def test_the_request_page_opens_read_only(client, person, hq_operator):
    request = open_request(person, Kind.ACCESS, hq_operator)
    client.force_login(hq_operator)

    page = client.get(reverse("admin:members_datasubjectrequest_change", args=[request.pk]))

    assert page.status_code == 200
    assert "13912345678" not in page.content.decode()
    assert page.context["has_change_permission"] is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.celery_worker
def test_the_nightly_task_anonymises_on_a_real_worker_through_redis():
    from members.tasks import anonymise_inactive_members_task
    from tests.worker import celery_worker, wait_for

    # given one member inactive for four years and one who joined last month
    old = MemberFactory(joined_at=timezone.now() - datetime.timedelta(days=4 * 365))
    recent = MemberFactory(joined_at=timezone.now() - datetime.timedelta(days=30))

    # when the nightly task runs on a worker
    with celery_worker():
        anonymise_inactive_members_task.delay()
        assert wait_for(lambda: AuditEvent.objects.filter(action="member.retention_run").exists())

    # then only the inactive member is anonymised, by the system actor of the retention job
    assert Member.objects.get(pk=old.pk).status == Member.Status.ERASED
    assert Member.objects.get(pk=recent.pk).status == Member.Status.ACTIVE
    run = AuditEvent.objects.get(action="member.retention_run")
    assert (run.actor_kind, run.actor_label, run.changes["anonymised"]) == ("system", "retention", 1)
