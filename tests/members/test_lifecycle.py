"""Lifecycle stages from purchases and HQ's thresholds; every change of stage a dated transition."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from members import services
from members.lifecycle import transition_counts
from members.metrics import refresh_member_metrics
from members.models import LifecycleSettings, LifecycleTransition, Member
from members.services import OrderInput, recompute_all_member_metrics
from scrm.models import AuditEvent
from tests.factories import MemberFactory, OrderFactory, TagFactory

pytestmark = pytest.mark.django_db

NOW = timezone.make_aware(datetime.datetime(2026, 6, 1, 12, 0))


def days_ago(n: float) -> datetime.datetime:
    return NOW - datetime.timedelta(days=n)


def stage(member: Member) -> str:
    member.refresh_from_db(fields=["lifecycle_stage"])
    return member.lifecycle_stage


def history(member: Member) -> list[tuple[str, str, datetime.datetime]]:
    return list(
        LifecycleTransition.objects.filter(member=member)
        .order_by("at", "id")
        .values_list("from_stage", "to_stage", "at")
    )


def settings_row(**values) -> LifecycleSettings:
    row = LifecycleSettings(**values)
    row.full_clean()
    row.save()
    return row


def test_defaults_come_from_the_environment_until_hq_saves_settings(settings):
    settings.SCRM_DORMANT_AFTER_DAYS, settings.SCRM_LOST_AFTER_DAYS = 45, 120
    current = LifecycleSettings.current()
    assert (current.dormant_after_days, current.lost_after_days, current.pk) == (45, 120, 1)
    assert not LifecycleSettings.objects.exists()  # reading never writes


@pytest.mark.parametrize(
    ("orders", "last_days_ago", "expected"),
    [
        (0, None, "no_purchase"),
        (1, 5, "first_purchase"),
        (2, 5, "repeat"),
        (3, 5, "advocate"),  # 3 orders and 3 × 400 = 1200 in 12 months
        (3, 31, "dormant"),
        (3, 61, "lost"),
        (1, 30, "first_purchase"),  # exactly on the threshold: still active
    ],
)
def test_stage_follows_purchases_and_hqs_thresholds(orders, last_days_ago, expected):
    settings_row(
        dormant_after_days=30, lost_after_days=60, advocate_min_orders_12m=3, advocate_min_spend_12m=1000
    )
    member = MemberFactory()
    for i in range(orders):
        OrderFactory(member=member, paid_at=days_ago(last_days_ago + i), amount=Decimal("400"))
    refresh_member_metrics([member.pk], now=NOW)
    assert stage(member) == expected


def test_advocates_need_both_conditions_or_hqs_tag():
    koc = TagFactory(name="KOC")
    settings_row(advocate_min_orders_12m=2, advocate_min_spend_12m=1000, advocate_tag=koc)
    frequent_small, tagged = MemberFactory(), MemberFactory()
    for member in (frequent_small, tagged):
        OrderFactory(member=member, paid_at=days_ago(3), amount=Decimal("100"))
        OrderFactory(member=member, paid_at=days_ago(2), amount=Decimal("100"))
    services.tag_member(tagged, koc, source="hq", actor=services.Actor.system("tests"))
    refresh_member_metrics(None, now=NOW)
    assert (stage(frequent_small), stage(tagged)) == ("repeat", "advocate")

    LifecycleSettings.objects.update(advocate_min_orders_12m=None)  # orders condition off
    LifecycleSettings.objects.update(advocate_tag=None)
    refresh_member_metrics(None, now=NOW)
    assert stage(tagged) == "repeat"
    assert history(tagged)[-1][:2] == ("advocate", "repeat")


def test_orders_coming_in_record_transitions_dated_by_the_purchase(system_actor):
    member = MemberFactory()
    first, second = timezone.now() - datetime.timedelta(days=3), timezone.now() - datetime.timedelta(days=1)
    services.record_orders(
        [OrderInput(channel="store", external_no="T1", paid_at=first, amount=Decimal("99"), member=member)],
        actor=system_actor,
    )
    services.record_orders(
        [OrderInput(channel="store", external_no="T2", paid_at=second, amount=Decimal("99"), member=member)],
        actor=system_actor,
    )
    assert history(member) == [("no_purchase", "first_purchase", first), ("first_purchase", "repeat", second)]
    assert (
        services.record_orders(  # a repeated batch changes nothing, records nothing
            [
                OrderInput(
                    channel="store", external_no="T2", paid_at=second, amount=Decimal("99"), member=member
                )
            ],
            actor=system_actor,
        )
        == []
    )
    assert len(history(member)) == 2


def test_the_nightly_run_moves_members_to_dormant_and_lost_dated_when_they_crossed(system_actor):
    settings_row(dormant_after_days=30, lost_after_days=60)
    member = MemberFactory()
    OrderFactory(member=member, paid_at=days_ago(100), amount=Decimal("10"))
    OrderFactory(member=member, paid_at=days_ago(90), amount=Decimal("10"))
    refresh_member_metrics([member.pk], now=days_ago(89))  # when the second order came in
    assert stage(member) == "repeat"

    recompute_all_member_metrics(actor=system_actor, now=days_ago(45))  # a night 45 days later
    assert stage(member) == "dormant"
    recompute_all_member_metrics(actor=system_actor, now=NOW)  # the run was skipped for a while
    assert stage(member) == "lost"
    recompute_all_member_metrics(actor=system_actor, now=NOW)  # and again: nothing new
    assert history(member) == [
        ("no_purchase", "repeat", days_ago(90)),  # both orders seen in one refresh
        ("repeat", "dormant", days_ago(60)),  # last purchase + 30 days, not the night it was seen
        ("dormant", "lost", days_ago(30)),  # last purchase + 60 days
    ]
    events = AuditEvent.objects.filter(action="member.metrics_recomputed").order_by("id")
    assert [e.changes["transitions"] for e in events] == [1, 1, 0]


def test_reactivation_and_churn_are_counted(system_actor):
    settings_row(dormant_after_days=30, lost_after_days=60)
    lost, dormant, steady = MemberFactory(), MemberFactory(), MemberFactory()
    OrderFactory(member=lost, paid_at=days_ago(200))
    OrderFactory(member=dormant, paid_at=days_ago(40))
    OrderFactory(member=steady, paid_at=days_ago(100))
    OrderFactory(member=steady, paid_at=days_ago(5))
    refresh_member_metrics(None, now=NOW)
    assert (stage(lost), stage(dormant), stage(steady)) == ("lost", "dormant", "repeat")

    back = NOW + datetime.timedelta(hours=1)
    OrderFactory(member=lost, paid_at=back)
    OrderFactory(member=dormant, paid_at=back)
    refresh_member_metrics([lost.pk, dormant.pk], now=back + datetime.timedelta(minutes=1))
    assert history(lost)[-1] == ("lost", "repeat", back)
    assert history(dormant)[-1] == ("dormant", "repeat", back)

    counts = transition_counts(days_ago(400), back + datetime.timedelta(days=1))
    # Seen first when already lost or dormant (no_purchase → lost / dormant): not first purchases.
    assert counts == {"dormant": 1, "lost": 1, "reactivated": 2, "first_purchases": 1}
    only_steady = transition_counts(days_ago(400), NOW, members=Member.objects.filter(pk=steady.pk))
    assert only_steady == {"dormant": 0, "lost": 0, "reactivated": 0, "first_purchases": 1}


def test_settings_are_validated_with_clear_errors_and_by_the_database():
    with pytest.raises(ValidationError) as error:
        settings_row(dormant_after_days=90, lost_after_days=90)
    assert "lost_after_days" in error.value.message_dict
    with pytest.raises(ValidationError):
        settings_row(advocate_min_orders_12m=1)
    assert not LifecycleSettings.objects.exists()
    with pytest.raises(IntegrityError), transaction.atomic():
        LifecycleSettings.objects.bulk_create(
            [LifecycleSettings(pk=1, dormant_after_days=90, lost_after_days=30)]
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        LifecycleSettings.objects.bulk_create([LifecycleSettings(pk=2)])


def test_hq_edits_the_settings_in_the_admin_audited_and_recomputed(
    client, hq_admin, django_capture_on_commit_callbacks
):
    client.force_login(hq_admin)
    assert client.get(reverse("admin:members_lifecyclesettings_changelist")).status_code == 200
    form = {
        "dormant_after_days": "60",
        "lost_after_days": "150",
        "advocate_min_orders_12m": "5",
        "advocate_min_spend_12m": "3000",
        "advocate_tag": "",
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("admin:members_lifecyclesettings_add"), form)
    assert response.status_code == 302
    assert len(callbacks) == 1  # the full recompute, queued after commit
    row = LifecycleSettings.current()
    assert (row.dormant_after_days, row.lost_after_days) == (60, 150)
    assert AuditEvent.objects.filter(action="lifecyclesettings.created").count() == 1
    assert "60" in client.get(reverse("admin:members_lifecyclesettings_add")).content.decode()  # the row
    refused = client.post(
        reverse("admin:members_lifecyclesettings_change", args=[1]), {**form, "lost_after_days": "30"}
    )
    assert refused.status_code == 200  # the form again, with the error
    assert LifecycleSettings.current().lost_after_days == 150


def test_admin_pages_show_the_history_and_the_edges(client, hq_admin, auditor):
    member = MemberFactory()
    LifecycleTransition.objects.create(
        member=member, from_stage="no_purchase", to_stage="first_purchase", at=NOW, recorded_at=NOW
    )
    refresh_member_metrics(None, now=NOW)
    client.force_login(hq_admin)
    page = client.get(reverse("admin:members_member_change", args=[member.pk]))
    assert page.status_code == 200
    assert "lifecycletransition" in page.content.decode()
    for name in ("lifecycletransition", "rfmbinedges", "rfmsettings"):
        assert client.get(reverse(f"admin:members_{name}_changelist"), follow=True).status_code == 200
    url = reverse("admin:members_lifecycletransition_changelist")
    assert client.get(url, {"member__id__exact": member.pk}).status_code == 200
    client.force_login(auditor)  # read-only: sees the settings, cannot add them
    assert client.get(reverse("admin:members_lifecyclesettings_add")).status_code == 403


def test_the_add_form_edits_the_settings_once_they_exist(client, hq_admin):
    settings_row(dormant_after_days=60, lost_after_days=120)
    client.force_login(hq_admin)
    form = {"dormant_after_days": "70", "lost_after_days": "140", "advocate_min_orders_12m": ""}
    form |= {"advocate_min_spend_12m": "", "advocate_tag": ""}
    assert client.post(reverse("admin:members_lifecyclesettings_add"), form).status_code == 302
    row = LifecycleSettings.objects.get()
    assert (row.pk, row.dormant_after_days, row.advocate_min_orders_12m) == (1, 70, None)
    assert AuditEvent.objects.filter(action="lifecyclesettings.updated").count() == 1
