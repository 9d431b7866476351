"""Recording task outcomes and moving tasks: idempotent, consent-checked, audited."""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.models import Task, TaskChannel
from campaigns.work import WRONG_NUMBER_TAG, complete_task, reassign_tasks
from members.models import ConsentRecord, MemberTag
from scrm.audit import Actor
from scrm.models import AuditEvent
from tests.campaigns.factories import TaskFactory
from tests.factories import GuideFactory, MemberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(guide):
    member = MemberFactory(home_store=guide.store, guide=guide, consent_wecom=True, consent_call=True)
    return TaskFactory(store=guide.store, guide=guide, member=member, channel=TaskChannel.WECOM)


def test_completing_records_the_outcome_once_with_its_audit_event(task, guide):
    actor = Actor.for_user(guide.user)
    result = complete_task(
        task, outcome=Task.Outcome.REACHED, note="  likes the new serum ", actor=actor, token="t1"
    )
    assert result.recorded
    task.refresh_from_db()
    assert task.state == Task.State.DONE
    assert task.outcome == Task.Outcome.REACHED
    assert task.note == "likes the new serum"
    assert task.completed_by == guide.user
    event = AuditEvent.objects.get(action="task.completed")
    assert event.target_id == str(task.pk)
    assert event.changes["outcome"] == "reached"
    assert event.changes["on_time"] is True


def test_a_double_tap_returns_the_first_result_and_writes_nothing_more(task, guide):
    actor = Actor.for_user(guide.user)
    first = complete_task(task, outcome=Task.Outcome.REACHED, actor=actor, token="same")
    second = complete_task(task, outcome=Task.Outcome.REACHED, actor=actor, token="same")
    assert first.recorded and not second.recorded
    assert second.repeated and not second.conflict
    assert second.task.outcome == Task.Outcome.REACHED
    assert AuditEvent.objects.filter(action="task.completed").count() == 1


def test_a_second_tab_with_another_outcome_does_not_overwrite_the_first(task, guide):
    actor = Actor.for_user(guide.user)
    complete_task(task, outcome=Task.Outcome.VISIT_BOOKED, actor=actor, token="tab-1")
    other = complete_task(task, outcome=Task.Outcome.NO_ANSWER, actor=actor, token="tab-2")
    assert other.conflict
    task.refresh_from_db()
    assert task.outcome == Task.Outcome.VISIT_BOOKED
    assert AuditEvent.objects.filter(action="task.completed").count() == 1


def test_a_stale_read_loses_the_compare_and_set(task, guide):
    # given the same task loaded twice (two requests racing)
    stale = Task.objects.get(pk=task.pk)
    complete_task(task, outcome=Task.Outcome.REACHED, actor=Actor.for_user(guide.user), token="a")
    # when the second request completes from its stale copy, then the first result stands
    result = complete_task(stale, outcome=Task.Outcome.DECLINED, actor=Actor.for_user(guide.user), token="b")
    assert result.conflict
    assert Task.objects.get(pk=task.pk).outcome == Task.Outcome.REACHED


def test_without_consent_only_asked_to_stop_can_be_recorded(guide):
    member = MemberFactory(home_store=guide.store, guide=guide, consent_wecom=False)
    task = TaskFactory(store=guide.store, guide=guide, member=member, channel=TaskChannel.WECOM)
    with pytest.raises(ValidationError) as error:
        complete_task(task, outcome=Task.Outcome.REACHED, actor=Actor.for_user(guide.user))
    assert error.value.code == "no_consent"
    assert Task.objects.get(pk=task.pk).state == Task.State.OPEN
    assert not AuditEvent.objects.filter(action="task.completed").exists()
    assert complete_task(task, outcome=Task.Outcome.STOP, actor=Actor.for_user(guide.user)).recorded


def test_asked_to_stop_withdraws_consent_on_the_tasks_channel(task, guide):
    complete_task(task, outcome=Task.Outcome.STOP, actor=Actor.for_user(guide.user))
    record = ConsentRecord.objects.get(member=task.member)
    assert record.action == ConsentRecord.Action.WITHDRAW
    assert record.channel == "wecom"
    assert record.source == ConsentRecord.Source.GUIDE
    task.member.refresh_from_db()
    assert task.member.consent_wecom is False
    assert task.member.consent_call is True  # other channels untouched
    assert Task.objects.get(pk=task.pk).outcome == Task.Outcome.STOP


def test_asked_to_stop_in_the_store_withdraws_every_granted_channel(guide):
    member = MemberFactory(home_store=guide.store, guide=guide, consent_sms=True, consent_call=True)
    task = TaskFactory(store=guide.store, guide=guide, member=member, channel=TaskChannel.IN_STORE)
    complete_task(task, outcome=Task.Outcome.STOP, actor=Actor.for_user(guide.user))
    assert set(ConsentRecord.objects.filter(member=member).values_list("channel", flat=True)) == {
        "sms",
        "call",
    }
    member.refresh_from_db()
    assert not (member.consent_sms or member.consent_call)


def test_wrong_number_tags_the_member(task, guide):
    complete_task(task, outcome=Task.Outcome.WRONG_NUMBER, actor=Actor.for_user(guide.user))
    assert MemberTag.objects.filter(member=task.member, tag__name=WRONG_NUMBER_TAG).exists()


@pytest.mark.parametrize(
    ("outcome", "note", "follow_up_days", "code"),
    [("bogus", "", None, "outcome"), ("reached", "x" * 1001, None, "note"), ("reached", "", -1, "follow_up")],
)
def test_bad_input_is_refused_and_changes_nothing(task, guide, outcome, note, follow_up_days, code):
    follow_up = timezone.localdate() + datetime.timedelta(days=follow_up_days) if follow_up_days else None
    with pytest.raises(ValidationError) as error:
        complete_task(
            task, outcome=outcome, note=note, follow_up_on=follow_up, actor=Actor.for_user(guide.user)
        )
    assert error.value.code == code
    assert Task.objects.get(pk=task.pk).state == Task.State.OPEN


def test_a_late_completion_is_recorded_as_late(task, guide):
    late = task.due_at + datetime.timedelta(hours=1)
    complete_task(task, outcome=Task.Outcome.NO_ANSWER, actor=Actor.for_user(guide.user), now=late)
    assert AuditEvent.objects.get(action="task.completed").changes["on_time"] is False


def test_reassigning_moves_open_tasks_only_and_audits_each(guide, manager):
    colleague = GuideFactory(store=guide.store)
    open_task = TaskFactory(store=guide.store, guide=guide)
    queued = TaskFactory(store=guide.store, guide=None)
    done = TaskFactory(
        store=guide.store,
        guide=guide,
        state=Task.State.DONE,
        outcome=Task.Outcome.REACHED,
        completed_at=timezone.now(),
    )
    moved = reassign_tasks([open_task, queued, done], colleague, actor=Actor.for_user(manager.user))
    assert moved == 2
    assert set(Task.objects.filter(guide=colleague).values_list("pk", flat=True)) == {open_task.pk, queued.pk}
    assert Task.objects.get(pk=done.pk).guide == guide  # credit stays with who did it
    events = AuditEvent.objects.filter(action="task.reassigned")
    assert {e.changes["guide"][0] for e in events} == {guide.pk, None}


def test_tasks_cannot_go_to_another_store_or_a_leaver(guide, manager):
    task = TaskFactory(store=guide.store, guide=guide)
    elsewhere = GuideFactory()
    with pytest.raises(ValidationError):
        reassign_tasks([task], elsewhere, actor=Actor.for_user(manager.user))
    left = GuideFactory(store=guide.store, status="left", left_on=timezone.localdate())
    with pytest.raises(ValidationError):
        reassign_tasks([task], left, actor=Actor.for_user(manager.user))
    assert Task.objects.get(pk=task.pk).guide == guide


def test_asked_to_stop_cancels_the_members_other_open_tasks_on_that_channel(task, guide):
    other = TaskFactory(store=guide.store, guide=guide, member=task.member, channel=TaskChannel.WECOM)
    call = TaskFactory(store=guide.store, guide=guide, member=task.member, channel=TaskChannel.CALL)
    complete_task(task, outcome=Task.Outcome.STOP, actor=Actor.for_user(guide.user))
    other.refresh_from_db()
    call.refresh_from_db()
    assert (other.state, other.cancel_reason) == (Task.State.CANCELLED, Task.CancelReason.CONSENT)
    assert call.state == Task.State.OPEN
    assert Task.objects.get(pk=task.pk).state == Task.State.DONE  # the task itself records the outcome
