"""The security baseline: sign-in lockout, short sessions, ending a leaver's sessions, CSRF, error pages
without details, and every refusal on the audit trail."""

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.db.models import F
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import Role
from scrm.security import SESSION_ENDS_AT
from stores.models import Guide
from stores.services import mark_guide_left
from tests.factories import GuideFactory, ManagerFactory, MemberFactory, StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
PASSWORD = "pw-for-tests"  # tests/factories.py
HERE = "10.0.0.7"
ELSEWHERE = "10.0.0.8"


def sign_in(client, username, password=PASSWORD, *, ip=HERE, url=None):
    return client.post(url or reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def fail_sign_ins(client, username, times, *, ip=HERE, url=None):
    return [sign_in(client, username, "wrong", ip=ip, url=url).status_code for _ in range(times)]


def signed_in_user_id(client):
    return client.session.get("_auth_user_id")


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def run_settings(module, code, **environment):
    """Print what ``code`` evaluates to under settings ``module`` with ``environment``, in a new process."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": module, **environment}
    script = f"import django; django.setup(); from django.conf import settings; print({code})"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


PRODUCTION = {
    "DJANGO_SECRET_KEY": "x7#" + "q" * 30 + "long-random-production-secret-Z9!",
    "DJANGO_ALLOWED_HOSTS": "scrm.example.com",
}


# --------------------------------------------------------------------------------------------------
# Sign-in lockout


def test_the_fifth_failure_locks_the_username_from_that_address(client, guide):
    # given four failed sign-ins
    assert fail_sign_ins(client, guide.user.username, 4) == [200, 200, 200, 200]

    # when the fifth fails too, and then the right password is tried
    fifth = sign_in(client, guide.user.username, "wrong")
    right = sign_in(client, guide.user.username)

    # then both get the lockout page, nobody is signed in, and both are on the trail
    assert fifth.status_code == right.status_code == 429
    assert "registration/locked.html" in [t.name for t in right.templates]
    assert signed_in_user_id(client) is None
    assert events("auth.login") == []
    assert [(e.target_id, e.ip, e.changes) for e in events("auth.locked_out")] == [
        (
            str(guide.user.pk),
            HERE,
            {"username": guide.user.username, "ip": HERE, "failures": 5, "while_locked": False},
        ),
        (
            str(guide.user.pk),
            HERE,
            {"username": guide.user.username, "ip": HERE, "failures": None, "while_locked": True},
        ),
    ]


def test_the_lockout_holds_that_username_from_that_address_only(client, guide, hq_operator):
    fail_sign_ins(client, guide.user.username, 5)

    from_elsewhere = sign_in(Client(), guide.user.username, ip=ELSEWHERE)
    other_user_here = sign_in(Client(), hq_operator.username, ip=HERE)

    assert from_elsewhere.status_code == 302
    assert other_user_here.status_code == 302


def test_the_admin_sign_in_counts_and_is_locked_too(client, hq_operator):
    statuses = fail_sign_ins(client, hq_operator.username, 5, url=reverse("admin:login"))

    assert statuses == [200, 200, 200, 200, 429]
    assert sign_in(client, hq_operator.username).status_code == 429  # the same lock on /login/
    assert len(events("auth.locked_out")) == 2


@pytest.mark.parametrize(("minutes_ago", "status"), [(29, 429), (31, 302)])
def test_the_lockout_lasts_thirty_minutes(client, guide, minutes_ago, status):
    fail_sign_ins(client, guide.user.username, 5)
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - datetime.timedelta(minutes=minutes_ago))

    assert sign_in(client, guide.user.username).status_code == status


def test_the_limit_and_the_pause_are_settings(client, guide, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = datetime.timedelta(minutes=45)
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "en"

    statuses = fail_sign_ins(client, guide.user.username, 2)
    page = sign_in(client, guide.user.username).content.decode()

    assert statuses == [200, 429]
    assert "Sign-in paused" in page
    assert "There were 2 failed sign-ins for this account from this device" in page
    assert "paused for 45 minutes" in page


def test_the_limits_are_read_from_the_environment():
    printed = run_settings(
        "scrm.settings.test",
        "settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME, settings.AXES_LOCKOUT_PARAMETERS,"
        " settings.SCRM_STAFF_SESSION_HOURS, settings.SCRM_HQ_SESSION_HOURS",
        SCRM_LOGIN_FAILURE_LIMIT="3",
        SCRM_LOGIN_LOCKOUT_MINUTES="10",
        SCRM_STAFF_SESSION_HOURS="6",
        SCRM_HQ_SESSION_HOURS="10",
    )
    assert printed == "3 0:10:00 [['username', 'ip_address']] 6 10"


def test_the_test_client_can_sign_in_and_is_locked_out_like_anyone(client, guide):
    assert client.login(username=guide.user.username, password=PASSWORD) is True
    client.logout()

    fail_sign_ins(client, guide.user.username, 5, ip="127.0.0.1")  # the test client's address

    assert client.login(username=guide.user.username, password=PASSWORD) is False


def test_axes_own_admin_pages_are_off(client, hq_admin):
    """They are English-only and would delete lockouts outside the audit trail."""
    client.force_login(hq_admin)

    assert client.get("/admin/axes/accessattempt/").status_code == 404


# --------------------------------------------------------------------------------------------------
# Sessions


def session_cookie(response):
    return response.cookies[django_settings.SESSION_COOKIE_NAME]


def test_store_staff_sessions_end_with_the_browser_and_after_eight_hours(client, guide):
    before = int(timezone.now().timestamp())
    response = sign_in(client, guide.user.username)
    after = int(timezone.now().timestamp())

    cookie = session_cookie(response)
    assert response.status_code == 302
    assert (cookie["max-age"], cookie["expires"]) == ("", "")  # a browser-session cookie
    assert (cookie["samesite"], cookie["httponly"]) == ("Lax", True)
    assert before + 8 * 3600 <= client.session[SESSION_ENDS_AT] <= after + 8 * 3600


def test_hq_sessions_last_twelve_hours(client, hq_operator):
    before = int(timezone.now().timestamp())
    response = sign_in(client, hq_operator.username)

    assert session_cookie(response)["max-age"] == 12 * 3600
    assert before + 12 * 3600 <= client.session[SESSION_ENDS_AT] <= before + 12 * 3600 + 60


def test_a_session_past_its_end_signs_the_person_out_and_is_audited(client, guide):
    client.force_login(guide.user)
    session = client.session
    session[SESSION_ENDS_AT] = int(timezone.now().timestamp()) - 1
    session.save()

    first = client.get(reverse("guides:members"))
    second = client.get(reverse("guides:members"))

    assert first.status_code == second.status_code == 302
    assert first["Location"] == f"{reverse('login')}?next={reverse('guides:members')}"
    [ended] = events("auth.session_ended")
    assert (ended.actor, ended.target_id, ended.store_id) == (guide.user, str(guide.user.pk), guide.store_id)
    assert ended.changes == {"reason": "expired"}
    assert events("auth.logout") == []  # the person did not sign out; the session ended


def test_a_form_sent_after_the_end_is_not_replayed_after_signing_in(client, manager):
    client.force_login(manager.user)
    session = client.session
    session[SESSION_ENDS_AT] = int(timezone.now().timestamp()) - 1
    session.save()

    response = client.post(reverse("guides:export"))

    assert (response.status_code, response["Location"]) == (302, reverse("login"))
    assert events("member.exported") == []


def test_a_session_without_an_end_gets_one(client, guide):
    """Sessions from before lifetimes existed are not left open for ever."""
    client.force_login(guide.user)
    session = client.session
    del session[SESSION_ENDS_AT]
    session.save()

    assert client.get(reverse("guides:members")).status_code == 200
    assert client.session[SESSION_ENDS_AT] > timezone.now().timestamp()


def test_a_guide_marked_as_left_is_signed_out_on_every_device_at_once(guide, hq_admin):
    # given the guide signed in on two phones, and a colleague signed in too
    phones = [Client(), Client()]
    for phone in phones:
        phone.force_login(guide.user)
    colleague = Client()
    colleague.force_login(GuideFactory(store=guide.store).user)

    # when HQ records that the guide left
    left = mark_guide_left(guide, actor=Actor.for_user(hq_admin), left_on=datetime.date(2025, 6, 30))

    # then both phones are signed out, the colleague is not, and the departure is on the trail
    assert (left.status, left.left_on) == (Guide.Status.LEFT, datetime.date(2025, 6, 30))
    assert [phone.get(reverse("guides:members")).status_code for phone in phones] == [302, 302]
    assert colleague.get(reverse("guides:members")).status_code == 200
    [event] = events("guide.left")
    assert (event.actor, event.target_id, event.store_id) == (hq_admin, str(guide.pk), guide.store_id)
    assert event.changes == {
        "status": ["active", "left"],
        "left_on": [None, "2025-06-30"],
        "sessions_ended": 2,
    }


def test_marking_a_guide_as_left_twice_records_it_once(guide, system_actor):
    mark_guide_left(guide, actor=system_actor, left_on=datetime.date(2025, 6, 30))
    Client().force_login(guide.user)  # signed in again since (the pages would refuse them)

    again = mark_guide_left(guide, actor=system_actor, left_on=datetime.date(2025, 7, 1))

    assert again.left_on == datetime.date(2025, 6, 30)
    assert len(events("guide.left")) == 1
    assert [e.changes for e in events("auth.sessions_ended")] == [{"sessions_ended": 1}]
    assert not Session.objects.exists()


def test_a_store_staff_login_whose_profile_left_is_signed_out_on_its_next_request(client, manager):
    client.force_login(manager.user)
    # Left by a write that did not end the sessions (a raw update, an import): the request ends it.
    Guide.objects.filter(pk=manager.pk).update(status=Guide.Status.LEFT, left_on=datetime.date(2025, 6, 30))

    response = client.get(reverse("guides:members"))

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")
    [ended] = events("auth.session_ended")
    assert (ended.target_id, ended.store_id, ended.changes) == (
        str(manager.user.pk),
        manager.store_id,
        {"reason": "staff_left"},
    )
    assert signed_in_user_id(client) is None


def test_hq_sessions_are_left_alone(client, hq_operator):
    client.force_login(hq_operator)

    assert client.get(reverse("admin:index")).status_code == 200
    assert events("auth.session_ended") == []


def test_ending_sessions_leaves_other_peoples_sessions(guide, hq_operator, system_actor):
    other = Client()
    other.force_login(hq_operator)
    Client().force_login(guide.user)

    mark_guide_left(guide, actor=system_actor, left_on=datetime.date(2025, 6, 30))

    assert Session.objects.count() == 1
    assert other.get(reverse("admin:index")).status_code == 200


# --------------------------------------------------------------------------------------------------
# CSRF and cookies


def test_a_post_without_the_csrf_token_is_refused_and_audited(manager):
    client = Client(enforce_csrf_checks=True)
    client.force_login(manager.user)

    response = client.post(reverse("guides:export"))

    assert response.status_code == 403
    assert events("member.exported") == []
    [denied] = events("access.denied")
    assert denied.changes == {
        "path": reverse("guides:export"),
        "method": "POST",
        "status": 403,
        "reason": "forbidden",
    }


def test_signing_in_needs_the_csrf_token_too(guide):
    client = Client(enforce_csrf_checks=True)

    assert sign_in(client, guide.user.username).status_code == 403
    assert signed_in_user_id(client) is None


def test_cookie_and_csrf_settings():
    assert "django.middleware.csrf.CsrfViewMiddleware" in django_settings.MIDDLEWARE
    assert (django_settings.SESSION_COOKIE_SAMESITE, django_settings.CSRF_COOKIE_SAMESITE) == ("Lax", "Lax")
    assert django_settings.SESSION_COOKIE_HTTPONLY is True
    assert django_settings.AUTHENTICATION_BACKENDS[-1] == "django.contrib.auth.backends.ModelBackend"


def test_production_keeps_debug_off_and_cookies_secure_whatever_the_environment_says():
    printed = run_settings(
        "scrm.settings.production",
        "settings.DEBUG, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE,"
        " settings.SESSION_COOKIE_SAMESITE, settings.AUTHENTICATION_BACKENDS[0]",
        DJANGO_DEBUG="true",
        **PRODUCTION,
    )
    assert printed == "False True True Lax axes.backends.AxesStandaloneBackend"


# --------------------------------------------------------------------------------------------------
# Error pages


@pytest.mark.parametrize("signed_in", [False, True])
@override_settings(ROOT_URLCONF="tests.scrm.error_urls")
def test_a_server_error_shows_a_generic_page_without_any_detail(signed_in, guide):
    client = Client(raise_request_exception=False)
    if signed_in:
        client.force_login(guide.user)

    response = client.get("/fail/")

    body = response.content.decode()
    assert response.status_code == 500
    assert "出错了" in body
    assert "Something went wrong" in body
    for detail in ("Traceback", "RuntimeError", "SECRET_KEY", "not-for-your-eyes", "error_urls"):
        assert detail not in body


# --------------------------------------------------------------------------------------------------
# Refusals on the audit trail


def test_opening_another_stores_member_is_a_404_on_the_trail(client, guide):
    foreign = MemberFactory(home_store=StoreFactory())
    client.force_login(guide.user)

    response = client.get(reverse("guides:member", args=[foreign.pk]), {"q": "13812345678"}, REMOTE_ADDR=HERE)

    assert response.status_code == 404
    [event] = events("access.denied")
    assert (event.actor, event.actor_kind, event.ip, event.request_id) == (
        guide.user,
        "user",
        HERE,
        response["X-Request-Id"],
    )
    assert (event.target_type, event.target_id, event.store_id) == (
        "members.member",
        str(foreign.pk),
        guide.store_id,
    )
    # The path without the query string: a search may carry a mobile number.
    assert event.changes == {
        "path": reverse("guides:member", args=[foreign.pk]),
        "method": "GET",
        "status": 404,
        "reason": "not_found",
    }


def test_a_refusal_raised_by_a_view_is_recorded_once(client, guide):
    client.force_login(guide.user)

    response = client.post(reverse("guides:export"))  # guides do not export

    assert response.status_code == 403
    assert [(e.changes["reason"], e.changes["status"]) for e in events("access.denied")] == [
        ("permission_denied", 403)
    ]


def test_the_admin_fence_is_a_refusal_on_the_trail(client, guide):
    member = MemberFactory(home_store=guide.store)
    client.force_login(guide.user)

    response = client.get(reverse("admin:members_member_change", args=[member.pk]))

    assert response.status_code == 302
    [event] = events("access.denied")
    assert (event.target_type, event.target_id) == ("members.member", str(member.pk))
    assert event.changes["reason"] == "admin_is_for_hq"


def test_an_admin_permission_refusal_is_on_the_trail(client, auditor):
    client.force_login(auditor)

    response = client.get(reverse("admin:members_member_add"))

    assert response.status_code == 403
    [event] = events("access.denied")
    assert (event.actor, event.changes["reason"]) == (auditor, "permission_denied")


@pytest.mark.parametrize("signed_in", [False, True])
def test_an_address_that_matches_no_page_is_not_a_refusal(client, guide, signed_in):
    if signed_in:
        client.force_login(guide.user)

    assert client.get("/favicon.ico").status_code == 404
    assert events("access.denied") == []


def test_refusals_of_anonymous_visitors_are_not_recorded(client):
    """They carry no identity; failed sign-ins and lockouts are recorded instead."""
    assert client.post(reverse("guides:export")).status_code == 302
    assert client.get(reverse("admin:members_member_changelist")).status_code == 302
    assert events("access.denied") == []


def test_a_user_without_a_role_is_refused_and_recorded(client):
    nobody = UserFactory()
    client.force_login(nobody)

    assert client.get(reverse("guides:members")).status_code == 403
    [event] = events("access.denied")
    assert (event.actor, event.store_id) == (nobody, None)


def test_store_managers_are_store_staff_for_session_length(client):
    manager = ManagerFactory(user=UserFactory(role=Role.STORE_MANAGER))

    sign_in(client, manager.user.username)

    assert client.session.get_expire_at_browser_close() is True
