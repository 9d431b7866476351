"""Writes made from the workbench: notes, handing members over, off-boarding a guide who leaves.

Each service is one transaction with its audit events. Members are handed over set-based (one UPDATE
of the members, one of the open bindings, one INSERT of new bindings and one of audit events), so a
guide with a thousand members leaves in a handful of statements.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import Task
from campaigns.work import reassign_tasks
from members.models import GuideAssignment, Member, MemberTag, Tag
from members.services import tag_member
from scrm import audit
from scrm.audit import Actor
from stores.models import Guide
from stores.services import mark_guide_left

from .models import MemberNote

NOTE_MAX_LENGTH = 1000
# Tags that guides create from their phones land in this group, so HQ can tidy them up.
GUIDE_TAG_GROUP = "导购"


@audit.service
def add_note(member: Member, *, body: str, author: Guide | None, actor: Actor) -> MemberNote:
    """Append a note to ``member``; an empty or over-long note is refused with a translated error."""
    body = (body or "").strip()
    if not body:
        raise ValidationError(_("Write something first."), code="empty")
    if len(body) > NOTE_MAX_LENGTH:
        raise ValidationError(
            _("The note is too long (at most %(limit)d characters).") % {"limit": NOTE_MAX_LENGTH},
            code="long",
        )
    note = MemberNote.objects.create(member=member, author=author, body=body)
    # The text itself stays out of the trail (it may hold personal details); its length says enough.
    audit.record(
        actor,
        "member.note_added",
        target=member,
        changes={"note": note.pk, "length": len(body), "author": author.pk if author else None},
    )
    return note


def _check_receivers(receivers: Iterable[Guide], *, store_id: int, leaving: Guide | None = None) -> None:
    for guide in receivers:
        if not guide.is_active_staff:
            raise ValidationError(
                _("%(guide)s has left and cannot take members.") % {"guide": guide}, code="left"
            )
        if guide.store_id != store_id:
            raise ValidationError(_("The guide must work in the member's home store."), code="wrong_store")
        if leaving is not None and guide.pk == leaving.pk:
            raise ValidationError(_("A leaving guide cannot receive their own members."), code="self")


@audit.service
def hand_over_members(
    plan: Mapping[int, Guide], *, actor: Actor, reason: str = GuideAssignment.Reason.MANAGER
) -> int:
    """Bind each member id of ``plan`` to its guide, closing the previous binding (history kept).

    Members already with that guide are left alone. Returns how many changed guide.
    """
    if not plan:
        return 0
    now = timezone.now()
    members = list(Member.objects.select_for_update().filter(pk__in=list(plan)).order_by("pk"))
    moving = [m for m in members if m.guide_id != plan[m.pk].pk]
    for member in moving:
        _check_receivers([plan[member.pk]], store_id=member.home_store_id)
    if not moving:
        return 0
    ids = [m.pk for m in moving]
    GuideAssignment.objects.filter(member_id__in=ids, ended_at__isnull=True).update(ended_at=now)
    GuideAssignment.objects.bulk_create(
        [
            GuideAssignment(
                member=m,
                guide=plan[m.pk],
                started_at=now,
                reason=reason,
                actor=actor.user if actor.user is not None and actor.user.pk else None,
            )
            for m in moving
        ],
        batch_size=2000,
    )
    # One UPDATE per receiving guide (a handful), not one per member.
    by_guide: dict[int, list[Member]] = {}
    for member in moving:
        by_guide.setdefault(plan[member.pk].pk, []).append(member)
    for guide_id, group in by_guide.items():
        previous: dict[int | None, list[Member]] = {}
        for member in group:
            previous.setdefault(member.guide_id, []).append(member)
        Member.objects.filter(pk__in=[m.pk for m in group]).update(guide_id=guide_id, updated_at=now)
        for old_guide, same in previous.items():
            audit.record_many(
                actor,
                "member.guide_assigned",
                same,
                changes={"guide": [old_guide, guide_id], "reason": reason},
            )
    return len(moving)


def spread_evenly(
    items: Sequence[int], guides: Sequence[Guide], *, load: Mapping[int, int]
) -> dict[int, Guide]:
    """Deal ``items`` out so that every guide ends with as even a load as possible (least loaded first)."""
    if not guides:
        raise ValidationError(
            _("There is no other active guide in this store to hand over to."), code="nobody"
        )
    current = {g.pk: load.get(g.pk, 0) for g in guides}
    by_id = {g.pk: g for g in guides}
    plan: dict[int, Guide] = {}
    for item in items:
        chosen = min(current, key=lambda pk: (current[pk], pk))
        plan[item] = by_id[chosen]
        current[chosen] += 1
    return plan


@dataclass(frozen=True)
class OffboardResult:
    guide: Guide
    members: int
    tasks: int


@audit.service
def offboard_guide(
    guide: Guide,
    *,
    actor: Actor,
    left_on: datetime.date,
    to_guide: Guide | None = None,
    member_plan: Mapping[int, Guide] | None = None,
) -> OffboardResult:
    """A guide leaves: members and open tasks go to colleagues, history stays, access ends.

    Members go to ``member_plan[member_id]`` when given, else to ``to_guide``, else they are spread
    evenly over the store's other active staff (least loaded first). Open tasks follow their member to
    the new guide (tasks of members outside the guide's book go the same way as the members). Done
    tasks, the guide-assignment history and the notes stay as they are: the leaving guide keeps the
    credit for the work done before ``left_on`` (attribution reads the task's guide), and notes belong
    to the member, so the new guide reads them. Finally ``mark_guide_left`` ends every session.
    Safe to repeat: a second run finds nothing left to move.
    """
    guide = Guide.objects.select_for_update().get(pk=guide.pk)
    colleagues = list(
        Guide.objects.filter(store_id=guide.store_id, status=Guide.Status.ACTIVE)
        .exclude(pk=guide.pk)
        .order_by("pk")
    )
    explicit = dict(member_plan or {})
    receivers = [g for g in (to_guide, *explicit.values()) if g is not None]
    _check_receivers(receivers, store_id=guide.store_id, leaving=guide)

    member_ids = list(Member.objects.filter(guide=guide).order_by("pk").values_list("pk", flat=True))
    open_tasks = list(Task.objects.filter(guide=guide, state=Task.State.OPEN).order_by("pk"))
    rest = [pk for pk in member_ids if pk not in explicit]
    if to_guide is not None:
        plan = dict.fromkeys(rest, to_guide)
    elif rest or any(t.member_id not in explicit for t in open_tasks):
        plan = spread_evenly(rest, colleagues, load=_member_load(colleagues))
    else:
        plan = {}
    plan.update({pk: g for pk, g in explicit.items() if pk in set(member_ids)})
    moved_members = hand_over_members(plan, actor=actor, reason=GuideAssignment.Reason.GUIDE_LEFT)

    # Open tasks follow their member; tasks for members outside the book are dealt out like members.
    stray = [t.member_id for t in open_tasks if t.member_id not in plan]
    if stray:
        plan.update(spread_evenly(sorted(set(stray)), [to_guide] if to_guide else colleagues, load={}))
    by_receiver: dict[int, list[Task]] = {}
    receivers_by_id: dict[int, Guide] = {}
    for task in open_tasks:
        receiver = plan[task.member_id]
        receivers_by_id[receiver.pk] = receiver
        by_receiver.setdefault(receiver.pk, []).append(task)
    moved_tasks = sum(
        reassign_tasks(tasks, receivers_by_id[pk], actor=actor) for pk, tasks in by_receiver.items()
    )
    mark_guide_left(guide, actor=actor, left_on=left_on)
    audit.record(
        actor,
        "guide.offboarded",
        target=guide,
        changes={"members": moved_members, "tasks": moved_tasks, "left_on": left_on},
    )
    return OffboardResult(guide=guide, members=moved_members, tasks=moved_tasks)


def _member_load(guides: Sequence[Guide]) -> dict[int, int]:
    rows = (
        Member.objects.filter(guide__in=guides, status=Member.Status.ACTIVE)
        .values("guide_id")
        .annotate(n=Count("pk"))
    )
    return {row["guide_id"]: row["n"] for row in rows}


@audit.service
def reassign_members(members: Iterable[Member], to_guide: Guide, *, actor: Actor) -> int:
    """The manager hands selected members to ``to_guide``; their open tasks follow them."""
    ids = [m.pk for m in members]
    _check_receivers([to_guide], store_id=to_guide.store_id)
    if Member.objects.filter(pk__in=ids).filter(~Q(home_store_id=to_guide.store_id)).exists():
        raise ValidationError(_("The guide must work in the member's home store."), code="wrong_store")
    moved = hand_over_members(dict.fromkeys(ids, to_guide), actor=actor)
    tasks = Task.objects.filter(member_id__in=ids, state=Task.State.OPEN, store_id=to_guide.store_id)
    reassign_tasks(tasks, to_guide, actor=actor)
    return moved


TAG_MAX_LENGTH = 32


@audit.service
def add_tag(member: Member, *, name: str, actor: Actor) -> MemberTag:
    """Tag ``member`` by name as a guide would ("prefers weekend calls"); a new name makes a new tag."""
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError(_("Type a tag first."), code="empty")
    if len(name) > TAG_MAX_LENGTH:
        raise ValidationError(
            _("A tag has at most %(limit)d characters.") % {"limit": TAG_MAX_LENGTH}, code="long"
        )
    tag = Tag.objects.filter(name__iexact=name).first()
    if tag is None:
        tag = Tag.objects.create(name=name, group=GUIDE_TAG_GROUP)
        audit.record(actor, "tag.created", target=tag, changes={"name": name, "group": GUIDE_TAG_GROUP})
    return tag_member(member, tag, source=MemberTag.Source.GUIDE, actor=actor)
