"""Revealing a member's full mobile on the store-staff member page: a reason, a permission, the scope,
an audit event, a rate limit, and the number in that one response only."""

import types
import uuid

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from members.models import Member
from members.privacy import RevealReason
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.factories import GuideFactory, MemberFactory
from tests.guides.world import STAFF_USERS, build_world

MOBILE = "+8613912345678"
NATIONAL = "13912345678"
SPACED = "139 1234 5678"


@pytest.fixture(autouse=True)
def own_rate_limit_counters(settings, monkeypatch):
    """Counters of this test only (a fresh cache key prefix), and a clock that stands still.

    The rate-limit window is fixed in time; a frozen clock keeps a count from crossing its edge.
    """
    settings.CACHES = {
        "default": {**django_settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    }
    import django_ratelimit.core

    monkeypatch.setattr(django_ratelimit.core, "time", types.SimpleNamespace(time=lambda: 1_800_000_000.0))


@pytest.fixture
def member(guide):
    return MemberFactory(home_store=guide.store, guide=guide, mobile=MOBILE, name="林晓")


def reveal(client, member, **data):
    return client.post(reverse("guides:reveal", args=[member.pk]), data)


def full_number_shown(html: str, mobile: str = MOBILE) -> bool:
    national = mobile.removeprefix("+86")
    spaced = f"{national[:3]} {national[3:7]} {national[7:]}"
    return any(form in html for form in (mobile, national, spaced))


def reveals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action__startswith="member.mobile_reveal").order_by("id"))


# The reveal itself ------------------------------------------------------------------------------


def test_a_reveal_shows_the_number_once_and_records_who_why_and_which_store(client, guide, member):
    # given the member's guide
    client.force_login(guide.user)

    # when they ask for the number because they are about to call
    response = reveal(client, member, reason=RevealReason.ABOUT_TO_CALL)

    # then the page shows the full number, ready to dial, and nothing may keep the page
    html = response.content.decode()
    assert response.status_code == 200
    assert f'href="tel:{MOBILE}"' in html
    assert NATIONAL in html
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]
    # and the look is on the audit trail with the reason
    [event] = reveals()
    assert (event.action, event.target_type, event.target_id) == (
        "member.mobile_revealed",
        "members.member",
        str(member.pk),
    )
    assert (event.actor_id, event.actor_kind, event.store_id) == (guide.user.pk, "user", guide.store_id)
    assert event.changes == {"reason": "about_to_call"}
    assert NATIONAL not in event.target_label
    # and the session holds nothing of it
    assert not any(full_number_shown(str(value)) for value in client.session.values())


def test_other_needs_words_and_they_are_recorded(client, guide, member):
    client.force_login(guide.user)

    refused = reveal(client, member, reason=RevealReason.OTHER, note="  ")
    shown = reveal(client, member, reason=RevealReason.OTHER, note="会员要求核对订单联系人")

    assert refused.status_code == 400
    assert not full_number_shown(refused.content.decode())
    assert shown.status_code == 200
    [event] = reveals()
    assert event.changes == {"reason": "other", "note": "会员要求核对订单联系人"}


@pytest.mark.parametrize("data", [{}, {"reason": ""}, {"reason": "curious"}])
def test_without_a_valid_reason_nothing_is_revealed_or_recorded(client, guide, member, data):
    client.force_login(guide.user)

    response = reveal(client, member, **data)

    assert response.status_code == 400
    assert not full_number_shown(response.content.decode())
    assert reveals() == []


def test_a_get_never_reveals(client, guide, member):
    client.force_login(guide.user)

    response = client.get(reverse("guides:reveal", args=[member.pk]), {"reason": "about_to_call"})

    assert response.status_code == 405
    assert not full_number_shown(response.content.decode())
    assert reveals() == []


def test_without_the_permission_the_reveal_is_forbidden(client, guide, member):
    # given guides lose the reveal permission
    permission = Permission.objects.get(content_type__app_label="members", codename="reveal_mobile")
    Group.objects.get(name=Role.GUIDE).permissions.remove(permission)
    client.force_login(guide.user)

    # when the guide tries anyway
    response = reveal(client, member, reason=RevealReason.ABOUT_TO_CALL)

    # then it is refused and nothing is shown or recorded as a reveal
    assert response.status_code == 403
    assert not full_number_shown(response.content.decode())
    assert reveals() == []


@pytest.fixture
def world(db):
    return build_world()


@pytest.mark.parametrize("user_key", STAFF_USERS)
def test_a_reveal_outside_the_scope_is_the_same_404_as_a_missing_member(client, world, user_key):
    # given a guide or a store manager
    client.force_login(world.users[user_key])
    visible = world.member_ids_for(user_key)

    # when they try to reveal every member of both stores
    statuses = {
        key: reveal(client, member, reason=RevealReason.CALL_BACK).status_code
        for key, member in world.members.items()
    }

    # then only their own members are revealed, each recorded once; the rest are 404
    assert statuses == {key: 200 if m.pk in visible else 404 for key, m in world.members.items()}
    revealed = {int(e.target_id) for e in reveals() if e.action == "member.mobile_revealed"}
    assert revealed == visible


def test_an_erased_member_cannot_be_revealed(client, guide, member):
    Member.objects.filter(pk=member.pk).update(status=Member.Status.ERASED)
    client.force_login(guide.user)

    assert reveal(client, member, reason=RevealReason.ABOUT_TO_CALL).status_code == 404
    assert reveals() == []


# Rate limit --------------------------------------------------------------------------------------


def test_past_twenty_reveals_an_hour_the_guide_is_refused_and_the_refusal_recorded(client, guide, member):
    # given a guide who reads in English and has revealed twenty numbers this hour
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "en"
    client.force_login(guide.user)
    assert {reveal(client, member, reason=RevealReason.ABOUT_TO_CALL).status_code for _ in range(20)} == {200}

    # when they ask for a twenty-first
    response = reveal(client, member, reason=RevealReason.ABOUT_TO_CALL)

    # then nothing is revealed, they are told why, and the refusal is on the trail
    html = response.content.decode()
    assert response.status_code == 429
    assert not full_number_shown(html)
    assert "You have revealed too many numbers in the last hour. Try again later." in html
    events = reveals()
    assert [e.action for e in events].count("member.mobile_revealed") == 20
    assert events[-1].action == "member.mobile_reveal_refused"
    assert events[-1].changes == {"why": "rate_limited", "reason": "about_to_call", "note": ""}
    assert events[-1].actor_id == guide.user.pk


def test_the_limit_is_per_user(client, guide, member):
    # given one guide at the limit
    client.force_login(guide.user)
    for _ in range(21):
        reveal(client, member, reason=RevealReason.ABOUT_TO_CALL)
    # when a colleague of the same store, serving the same member now, reveals
    colleague = GuideFactory(store=guide.store)
    Member.objects.filter(pk=member.pk).update(guide=colleague)
    client.force_login(colleague.user)

    # then the colleague is not limited by the first guide's count
    assert reveal(client, member, reason=RevealReason.ABOUT_TO_CALL).status_code == 200


# Nowhere else ------------------------------------------------------------------------------------


def test_the_member_page_offers_the_reveal_form_and_shows_only_the_masked_number(client, guide, member):
    client.force_login(guide.user)

    html = client.get(reverse("guides:member", args=[member.pk])).content.decode()

    assert f'action="{reverse("guides:reveal", args=[member.pk])}"' in html
    assert 'name="reason"' in html
    assert "139****5678" in html
    assert not full_number_shown(html)


def test_after_a_reveal_the_other_pages_still_show_only_the_masked_number(client, guide, member):
    client.force_login(guide.user)
    assert reveal(client, member, reason=RevealReason.ABOUT_TO_CALL).status_code == 200

    pages = [
        client.get(reverse("guides:member", args=[member.pk])),
        client.get(reverse("guides:members")),
        client.get(reverse("guides:members"), {"q": "5678"}),
    ]

    assert [p.status_code for p in pages] == [200, 200, 200]
    assert [full_number_shown(p.content.decode()) for p in pages] == [False, False, False]


@pytest.mark.parametrize("user_key", STAFF_USERS)
def test_a_crawl_of_the_staff_pages_finds_no_full_number(client, world, user_key):
    # given a guide or store manager who revealed one of their members
    client.force_login(world.users[user_key])
    visible = [m for m in world.members.values() if m.pk in world.member_ids_for(user_key)]
    assert reveal(client, visible[0], reason=RevealReason.ABOUT_TO_CALL).status_code == 200

    # when they open their list and every member page they can reach
    pages = [client.get(reverse("guides:members"))]
    pages += [client.get(reverse("guides:member", args=[m.pk])) for m in visible]

    # then no page holds any member's full number, in the E.164 or the national form
    assert {p.status_code for p in pages} == {200}
    for page in pages:
        html = page.content.decode()
        assert [m.mobile for m in world.members.values() if full_number_shown(html, m.mobile)] == []
