"""Off-boarding a guide and handing members over: history kept, credit kept, access ended."""

import datetime

import pytest
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.models import Task
from guides.services import add_note, add_tag, offboard_guide, reassign_members
from members.models import GuideAssignment, Member, MemberTag
from scrm.audit import Actor
from scrm.models import AuditEvent
from stores.models import Guide
from tests.campaigns.factories import TaskFactory
from tests.factories import GuideFactory, MemberFactory

pytestmark = pytest.mark.django_db


def book(guide: Guide, n: int) -> list[Member]:
    now = timezone.now()
    members = MemberFactory.create_batch(n, home_store=guide.store, guide=guide)
    for member in members:
        GuideAssignment.objects.create(
            member=member, guide=guide, started_at=now - datetime.timedelta(days=60), reason="joined"
        )
    return members


def test_offboarding_spreads_members_and_open_tasks_evenly_and_keeps_history(manager):
    leaver = GuideFactory(store=manager.store)
    a, b = GuideFactory(store=manager.store), GuideFactory(store=manager.store)
    members = book(leaver, 6)
    open_tasks = [TaskFactory(store=leaver.store, guide=leaver, member=m) for m in members[:4]]
    done = TaskFactory(
        store=leaver.store,
        guide=leaver,
        member=members[5],
        state=Task.State.DONE,
        outcome=Task.Outcome.REACHED,
        completed_at=timezone.now(),
    )
    note = add_note(members[0], body="喜欢周末来店", author=leaver, actor=Actor.for_user(leaver.user))

    result = offboard_guide(leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate())

    assert (result.members, result.tasks) == (6, 4)
    # the manager serves members too: three receivers, two members each
    loads = sorted(Member.objects.filter(guide__in=[a, b, manager]).values_list("guide_id", flat=True))
    assert sorted(loads.count(g.pk) for g in (a, b, manager)) == [2, 2, 2]
    for task in open_tasks:
        task.refresh_from_db()
        assert task.guide_id == Member.objects.get(pk=task.member_id).guide_id  # tasks follow the member
    assert Task.objects.get(pk=done.pk).guide == leaver  # done work stays credited to the leaver
    history = GuideAssignment.objects.filter(member=members[0]).order_by("started_at")
    assert history[0].guide_id == leaver.pk
    assert history[0].ended_at is not None
    assert history.last().reason == GuideAssignment.Reason.GUIDE_LEFT
    assert note.member.notes.get().pk == note.pk  # the note stays with the member
    leaver.refresh_from_db()
    assert leaver.status == Guide.Status.LEFT
    assert AuditEvent.objects.filter(action="guide.offboarded", target_id=str(leaver.pk)).exists()


def test_offboarding_to_one_chosen_guide(manager):
    leaver, receiver = GuideFactory(store=manager.store), GuideFactory(store=manager.store)
    book(leaver, 3)
    offboard_guide(
        leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate(), to_guide=receiver
    )
    assert Member.objects.filter(guide=receiver).count() == 3


def test_offboarding_ends_every_session_of_the_guide(client, manager):
    leaver = GuideFactory(store=manager.store)
    client.force_login(leaver.user)
    assert Session.objects.count() == 1
    offboard_guide(leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate())
    assert Session.objects.count() == 0


def test_offboarding_twice_moves_nothing_more(manager):
    leaver = GuideFactory(store=manager.store)
    book(leaver, 2)
    offboard_guide(leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate())
    again = offboard_guide(leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate())
    assert (again.members, again.tasks) == (0, 0)


def test_members_cannot_go_to_the_leaver_or_another_store(manager):
    leaver = GuideFactory(store=manager.store)
    members = book(leaver, 1)
    with pytest.raises(ValidationError):
        offboard_guide(
            leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate(), to_guide=leaver
        )
    with pytest.raises(ValidationError):
        offboard_guide(
            leaver, actor=Actor.for_user(manager.user), left_on=timezone.localdate(), to_guide=GuideFactory()
        )
    assert Member.objects.get(pk=members[0].pk).guide == leaver
    assert Guide.objects.get(pk=leaver.pk).status == Guide.Status.ACTIVE


def test_reassigning_members_takes_their_open_tasks_along(manager):
    first, second = GuideFactory(store=manager.store), GuideFactory(store=manager.store)
    members = book(first, 2)
    task = TaskFactory(store=first.store, guide=first, member=members[0])
    moved = reassign_members(members, second, actor=Actor.for_user(manager.user))
    assert moved == 2
    assert Task.objects.get(pk=task.pk).guide == second
    assert AuditEvent.objects.filter(action="member.guide_assigned").count() == 2


def test_notes_and_tags_refuse_empty_input(guide):
    member = MemberFactory(home_store=guide.store, guide=guide)
    actor = Actor.for_user(guide.user)
    with pytest.raises(ValidationError):
        add_note(member, body="   ", author=guide, actor=actor)
    with pytest.raises(ValidationError):
        add_tag(member, name="x" * 33, actor=actor)
    add_tag(member, name=" 周末 来电 ", actor=actor)
    assert MemberTag.objects.get(member=member).tag.name == "周末 来电"
    assert AuditEvent.objects.filter(action="member.tagged").count() == 1
