"""The workbench pages: scope (404 outside it), flat query counts, outcomes once, filters, sign-in."""

import datetime
import json

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Task, TaskChannel
from guides.models import MemberNote
from members.models import Member
from scrm.models import AuditEvent
from stores.models import Guide
from tests.campaigns.factories import CampaignRunFactory, TaskFactory
from tests.factories import GuideFactory, MemberFactory, TierFactory

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests"


def tasks_for(guide: Guide, n: int, **kwargs) -> list[Task]:
    run = CampaignRunFactory()
    now = timezone.now()
    members = MemberFactory.create_batch(n, home_store=guide.store, guide=guide, consent_wecom=True)
    return [
        TaskFactory(
            run=run,
            store=guide.store,
            guide=guide,
            member=member,
            due_at=now + datetime.timedelta(hours=i - n // 2),
            **kwargs,
        )
        for i, member in enumerate(members)
    ]


# Access ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["guides:today", "guides:numbers", "guides:store"])
def test_anonymous_users_are_sent_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_a_guide_opens_only_their_own_tasks(client, guide):
    mine = tasks_for(guide, 1)[0]
    colleague = GuideFactory(store=guide.store)
    theirs = tasks_for(colleague, 1)[0]
    elsewhere = tasks_for(GuideFactory(), 1)[0]
    queued = TaskFactory(store=guide.store, guide=None)
    client.force_login(guide.user)
    assert client.get(reverse("guides:task", args=[mine.pk])).status_code == 200
    for other in (theirs, elsewhere, queued):
        assert client.get(reverse("guides:task", args=[other.pk])).status_code == 404
        response = client.post(reverse("guides:task_complete", args=[other.pk]), {"outcome": "reached"})
        assert response.status_code == 404
        assert Task.objects.get(pk=other.pk).state == Task.State.OPEN
    today = client.get(reverse("guides:today"))
    shown = {t.pk for group in today.context["today"].groups for t in group.tasks}
    assert shown == {mine.pk}


@pytest.mark.parametrize("name", ["guides:store", "guides:reassign_tasks", "guides:offboard"])
def test_a_guide_gets_404_on_the_managers_pages(client, guide, name):
    client.force_login(guide.user)
    assert client.get(reverse(name)).status_code == 404


def test_a_manager_sees_the_stores_tasks_but_not_another_stores(client, manager):
    guide = GuideFactory(store=manager.store)
    ours = tasks_for(guide, 1)[0]
    theirs = tasks_for(GuideFactory(), 1)[0]
    client.force_login(manager.user)
    assert client.get(reverse("guides:task", args=[ours.pk])).status_code == 200
    assert client.get(reverse("guides:task", args=[theirs.pk])).status_code == 404


# Query counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_tasks", [2, 200])
def test_today_query_count_is_flat(client, guide, n_tasks, django_assert_num_queries):
    tasks_for(guide, n_tasks)
    client.force_login(guide.user)
    # session, user, role, staff profile, counts, the page of tasks (with member, tier, run, campaign)
    with django_assert_num_queries(6):
        response = client.get(reverse("guides:today"))
    assert response.status_code == 200
    shown = sum(len(g.tasks) for g in response.context["today"].groups)
    assert shown == min(n_tasks, 30)
    assert len(response.content) < 150_000  # page weight, without images


@pytest.mark.parametrize("n_tasks", [2, 200])
def test_numbers_and_board_query_counts_are_flat(client, manager, n_tasks, django_assert_num_queries):
    guide = GuideFactory(store=manager.store)
    tasks = tasks_for(guide, n_tasks)
    for task in tasks[: n_tasks // 2]:
        Task.objects.filter(pk=task.pk).update(
            state=Task.State.DONE, outcome=Task.Outcome.REACHED, completed_at=timezone.now()
        )
    client.force_login(manager.user)
    # session, user, role, staff profile, store staff, task figures, attribution
    with django_assert_num_queries(7):
        assert client.get(reverse("guides:numbers")).status_code == 200
    # … plus the queue, the unassigned members count and the store's name in the header
    with django_assert_num_queries(10):
        response = client.get(reverse("guides:store"))
    row = next(r for r in response.context["board"].guides if r.guide == guide)
    assert row.done == n_tasks // 2
    assert row.open == n_tasks - n_tasks // 2


@pytest.mark.parametrize("n_notes", [1, 20])
def test_the_task_page_query_count_is_flat(client, guide, n_notes, django_assert_num_queries):
    task = tasks_for(guide, 1)[0]
    for i in range(n_notes):
        MemberNote.objects.create(member=task.member, author=guide, body=f"note {i}")
    client.force_login(guide.user)
    # session, user, role, profile, task (with member, run, …), tags, orders, lines, notes
    with django_assert_num_queries(9):
        response = client.get(reverse("guides:task", args=[task.pk]))
    assert response.status_code == 200


# Completing from the page ------------------------------------------------------------------------


def test_completing_twice_from_the_page_records_once(client, guide):
    task = tasks_for(guide, 1)[0]
    client.force_login(guide.user)
    page = client.get(reverse("guides:task", args=[task.pk]))
    token = page.context["form"].initial["token"]
    data = {"outcome": "reached", "note": "约了周六", "token": token}
    url = reverse("guides:task_complete", args=[task.pk])
    first = client.post(url, data)
    second = client.post(url, data)  # double tap / retry
    assert first.status_code == second.status_code == 302
    assert first.url == second.url == reverse("guides:today")
    assert AuditEvent.objects.filter(action="task.completed").count() == 1
    other_tab = client.post(url, {"outcome": "declined", "token": "another"})
    assert other_tab.url == reverse("guides:task", args=[task.pk])
    assert Task.objects.get(pk=task.pk).outcome == "reached"


def test_the_script_is_filled_in_with_the_members_values(client, guide):
    task = tasks_for(guide, 1)[0]
    client.force_login(guide.user)
    response = client.get(reverse("guides:task", args=[task.pk]))
    assert task.member.name in response.context["tc"].script
    assert "{name}" not in response.context["tc"].script


def test_without_consent_contact_actions_are_withheld(client, guide):
    member = MemberFactory(home_store=guide.store, guide=guide, consent_call=False)
    task = TaskFactory(store=guide.store, guide=guide, member=member, channel=TaskChannel.CALL)
    client.force_login(guide.user)
    response = client.get(reverse("guides:task", args=[task.pk]))
    assert response.context["tc"].contact_allowed is False
    assert response.context["can_reveal"] is False
    assert (
        client.post(reverse("guides:task_reveal", args=[task.pk]), {"reason": "about_to_call"}).status_code
        == 403
    )
    refused = client.post(reverse("guides:task_complete", args=[task.pk]), {"outcome": "reached"})
    assert refused.status_code == 400
    assert Task.objects.get(pk=task.pk).state == Task.State.OPEN


# My members --------------------------------------------------------------------------------------


def test_member_filters(client, guide):
    today = timezone.localdate()
    gold = TierFactory(code="gold", name="金卡", rank=3)
    birthday = MemberFactory(home_store=guide.store, guide=guide, birthday=today.replace(year=1990))
    dormant = MemberFactory(home_store=guide.store, guide=guide, tier=gold)
    Member.objects.filter(pk=dormant.pk).update(lifecycle_stage=Member.Lifecycle.DORMANT)
    contacted = tasks_for(guide, 1, state=Task.State.DONE, outcome="reached", completed_at=timezone.now())[0]
    client.force_login(guide.user)

    def ids(**params):
        response = client.get(reverse("guides:members"), params)
        return {row.member.pk for row in response.context["rows"]}

    assert ids(f="birthday") == {birthday.pk}
    assert ids(f="dormant") == {dormant.pk}
    assert ids(tier="gold") == {dormant.pk}
    assert ids(stage="dormant") == {dormant.pk}
    assert contacted.member_id not in ids(f="not_contacted")
    assert birthday.pk in ids(f="not_contacted")


def test_a_guide_adds_a_note_and_a_tag_from_the_task_page(client, guide):
    task = tasks_for(guide, 1)[0]
    client.force_login(guide.user)
    response = client.post(
        reverse("guides:member_note", args=[task.member_id]), {"body": "穿M码", "task": task.pk}
    )
    assert response.status_code == 302
    assert response.url == reverse("guides:task", args=[task.pk])
    assert MemberNote.objects.get(member=task.member).author == guide
    client.post(reverse("guides:member_tag", args=[task.member_id]), {"name": "周末来电"})
    assert task.member.member_tags.get().tag.name == "周末来电"
    # an empty note is refused with the page shown again
    assert client.post(reverse("guides:member_note", args=[task.member_id]), {"body": ""}).status_code == 400


def test_notes_on_another_guides_member_are_404(client, guide):
    other = MemberFactory(home_store=guide.store, guide=GuideFactory(store=guide.store))
    client.force_login(guide.user)
    assert client.post(reverse("guides:member_note", args=[other.pk]), {"body": "x"}).status_code == 404
    assert not MemberNote.objects.exists()


# Manager -----------------------------------------------------------------------------------------


def test_a_manager_offboards_a_guide_from_the_page(client, manager):
    leaver = GuideFactory(store=manager.store)
    receiver = GuideFactory(store=manager.store)
    tasks_for(leaver, 3)
    client.force_login(manager.user)
    response = client.post(
        reverse("guides:offboard"),
        {
            "guide": leaver.pk,
            "receiver": receiver.pk,
            "left_on": timezone.localdate().isoformat(),
            "confirm": "on",
        },
    )
    assert response.status_code == 302
    assert Task.objects.filter(guide=receiver, state="open").count() == 3
    assert Guide.objects.get(pk=leaver.pk).status == Guide.Status.LEFT


def test_offboarding_without_confirmation_changes_nothing(client, manager):
    leaver = GuideFactory(store=manager.store)
    client.force_login(manager.user)
    response = client.post(
        reverse("guides:offboard"),
        {"guide": leaver.pk, "receiver": "spread", "left_on": timezone.localdate().isoformat()},
    )
    assert response.status_code == 400
    assert Guide.objects.get(pk=leaver.pk).status == Guide.Status.ACTIVE


def test_a_manager_hands_out_the_queue(client, manager):
    guide = GuideFactory(store=manager.store)
    queued = TaskFactory(store=manager.store, guide=None)
    client.force_login(manager.user)
    response = client.post(reverse("guides:reassign_tasks"), {"ids": [queued.pk], "to_guide": guide.pk})
    assert response.status_code == 302
    assert Task.objects.get(pk=queued.pk).guide == guide


def test_a_manager_cannot_reassign_another_stores_task(client, manager):
    foreign = tasks_for(GuideFactory(), 1)[0]
    guide = GuideFactory(store=manager.store)
    client.force_login(manager.user)
    response = client.post(reverse("guides:reassign_tasks"), {"ids": [foreign.pk], "to_guide": guide.pk})
    assert response.status_code == 400
    assert Task.objects.get(pk=foreign.pk).guide != guide


# Sign-in and installing --------------------------------------------------------------------------


@pytest.mark.parametrize("account", ["employee_no", "employee_no_lower", "mobile"])
def test_staff_sign_in_with_employee_number_or_mobile(client, guide, account):
    Guide.objects.filter(pk=guide.pk).update(mobile="+8613900001111")
    typed = {
        "employee_no": guide.employee_no,
        "employee_no_lower": guide.employee_no.lower(),
        "mobile": "139 0000 1111",
    }
    response = client.post(reverse("login"), {"username": typed[account], "password": PASSWORD})
    assert response.status_code == 302
    assert client.session.get("_auth_user_id") == str(guide.user.pk)


def test_a_guide_who_left_cannot_sign_in_with_the_employee_number(client, guide):
    Guide.objects.filter(pk=guide.pk).update(status="left", left_on=timezone.localdate())
    response = client.post(reverse("login"), {"username": guide.employee_no, "password": PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_the_manifest_opens_on_today(client):
    response = client.get(reverse("guides:manifest"))
    manifest = json.loads(response.content)
    assert response["Content-Type"] == "application/manifest+json"
    assert manifest["start_url"] == reverse("guides:today")
    assert manifest["display"] == "standalone"
    assert {icon["sizes"] for icon in manifest["icons"]} >= {"192x192", "512x512"}
