"""Admin pages for scripts (preview, validation), journeys with steps, and the festival calendar."""

import datetime

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from campaigns.models import Festival, Journey, JourneyStep, Script, TaskChannel
from scrm.models import AuditEvent
from tests.factories import GuideFactory, MemberFactory, StoreFactory

from .factories import ScriptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, hq_operator):
    client.force_login(hq_operator)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"  # the tests read English messages
    return client


def test_script_preview_renders_for_a_member_found_by_mobile(operator_client):
    store = StoreFactory(name="静安店")
    MemberFactory(
        name="王小明", mobile="+8613812345678", home_store=store, guide=GuideFactory(store=store, name="李")
    )
    response = operator_client.post(
        reverse("admin:campaigns_script_preview"),
        {"body": "{name}您好，我是{store}的{guide}。{nickname}", "member": "13812345678"},
    )
    data = response.json()
    assert response.status_code == 200
    assert data["text"] == "王小明您好，我是静安店的李。{nickname}"
    assert data["member"] == "王小明（138****5678）"
    assert data["unknown"] == "{nickname}"
    assert "13812345678" not in response.content.decode()


def test_script_preview_of_an_unknown_member_is_a_clear_error(operator_client):
    with translation.override("en"):
        response = operator_client.post(
            reverse("admin:campaigns_script_preview"), {"body": "{name}", "member": "13900000000"}
        )
    assert response.status_code == 404
    assert "No member found" in response.json()["error"]


def test_script_with_unknown_placeholders_is_refused_and_nothing_saved(operator_client):
    with translation.override("en"):
        response = operator_client.post(
            reverse("admin:campaigns_script_add"), {"title": "欢迎", "body": "{name} {nickname}"}
        )
    assert response.status_code == 200
    assert "Unknown placeholders: {nickname}" in response.content.decode()
    assert not Script.objects.exists()


def test_script_saved_through_the_service_is_audited(operator_client):
    response = operator_client.post(
        reverse("admin:campaigns_script_add"), {"title": "欢迎", "body": "{name}您好"}
    )
    assert response.status_code == 302
    script = Script.objects.get()
    assert AuditEvent.objects.filter(action="script.created", target_id=str(script.pk)).exists()
    page = operator_client.get(reverse("admin:campaigns_script_change", args=[script.pk]))
    assert "{coupon}" in page.content.decode()  # the placeholder list beside the editor


def _journey_form(script, **step):
    data = {
        "name": "新会员旅程",
        "steps-TOTAL_FORMS": "1",
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "steps-0-name": "入会第3天",
        "steps-0-event": "joined",
        "steps-0-offset_days": "3",
        "steps-0-channel": TaskChannel.WECOM,
        "steps-0-script": str(script.pk),
        "steps-0-due_days": "3",
        "steps-0-priority": "5",
    }
    data.update({f"steps-0-{key}": value for key, value in step.items()})
    return data


def test_journey_with_steps_is_created_and_audited(operator_client):
    script = ScriptFactory()
    response = operator_client.post(reverse("admin:campaigns_journey_add"), _journey_form(script))
    assert response.status_code == 302, response.content.decode()[:2000]
    step = JourneyStep.objects.get()
    assert (step.event, step.offset_days, step.journey.active) == ("joined", 3, False)
    assert AuditEvent.objects.filter(action="journeystep.created", target_id=str(step.pk)).exists()


def test_journey_step_with_a_bad_offset_is_refused(operator_client):
    script = ScriptFactory()
    with translation.override("en"):
        response = operator_client.post(
            reverse("admin:campaigns_journey_add"),
            _journey_form(script, event="points_expiring", offset_days="7"),
        )
    assert response.status_code == 200
    assert "fire before the expiry" in response.content.decode()
    assert not Journey.objects.exists()


def test_festival_steps_offer_the_calendar_names(operator_client):
    Festival.objects.create(name="中秋", date=datetime.date(2026, 9, 25))
    page = operator_client.get(reverse("admin:campaigns_journey_add"))
    assert 'value="festival:中秋"' in page.content.decode()


def test_switching_a_journey_on_through_the_action(operator_client):
    script = ScriptFactory()
    journey = Journey.objects.create(name="生日")
    JourneyStep.objects.create(
        journey=journey,
        name="生日当天",
        event="birthday",
        offset_days=0,
        channel=TaskChannel.WECOM,
        script=script,
    )
    operator_client.post(
        reverse("admin:campaigns_journey_changelist"),
        {"action": "activate_selected", "_selected_action": [journey.pk]},
    )
    journey.refresh_from_db()
    assert journey.active is True
    assert AuditEvent.objects.filter(action="journey.activated").exists()


def test_festival_calendar_seed_button_and_move(operator_client):
    response = operator_client.post(reverse("admin:campaigns_festival_seed"))
    assert response.status_code == 302
    assert Festival.objects.count() == 20
    page = operator_client.get(reverse("admin:campaigns_festival_changelist"))
    assert page.status_code == 200
    festival = Festival.objects.get(name="中秋", date__year=2026)
    response = operator_client.post(
        reverse("admin:campaigns_festival_change", args=[festival.pk]), {"name": "中秋", "date": "2026-09-26"}
    )
    assert response.status_code == 302
    festival.refresh_from_db()
    assert festival.date == datetime.date(2026, 9, 26)
    assert AuditEvent.objects.filter(action="festival.moved", target_id=str(festival.pk)).exists()
