"""Merging two member records of one person (OneID), and undoing a merge.

The survivor takes the duplicate's orders, external identities, tags, closed guide assignments and
points; the duplicate is kept (status ``merged``) so the merge can be undone and history stays
readable. Everything moves with set-based UPDATEs; the append-only ledgers are never rewritten:

- points move as two compensating ``adjust`` entries (minus on the duplicate, plus on the survivor);
- consent stays on each record's own ledger. The survivor keeps the strictest consent: for every
  channel × purpose where the duplicate's latest event is a withdrawal or refusal and the survivor
  would still be contacted, a withdrawal is written on the survivor (evidence names the duplicate's
  record). A grant is never carried over. Undoing a merge leaves those withdrawals in place: a
  person who said stop is not contacted again because a merge was reversed.

``merge_members`` returns what it moved; ``unmerge_members`` takes that back.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import gettext as _

from scrm import audit
from scrm.audit import Actor
from scrm.masking import mask_mobile

from . import consent
from .metrics import refresh_member_metrics
from .models import (
    ConsentRecord,
    ExternalIdentity,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    PointsEntry,
)
from .services import MERGED_HOOKS, assign_guide, record_consent


def _locked_pair(survivor: Member, duplicate: Member) -> tuple[Member, Member]:
    if survivor.pk == duplicate.pk:
        raise ValidationError(_("A member cannot be merged into itself."), code="same_member")
    # Lock both rows in id order, so two merges of the same pair cannot deadlock.
    locked = {
        m.pk: m
        for m in Member.objects.select_for_update().filter(pk__in=[survivor.pk, duplicate.pk]).order_by("pk")
    }
    return locked[survivor.pk], locked[duplicate.pk]


def _move_points(source: Member, target: Member, amount: int, *, ref: str, actor: Actor) -> None:
    if amount <= 0:
        return
    user = actor.user if actor.user else None
    PointsEntry.objects.bulk_create(
        [
            PointsEntry(
                member=source,
                delta=-amount,
                kind=PointsEntry.Kind.ADJUST,
                reason="merge",
                ref=ref,
                actor=user,
            ),
            PointsEntry(
                member=target, delta=amount, kind=PointsEntry.Kind.ADJUST, reason="merge", ref=ref, actor=user
            ),
        ]
    )


def _strictest_consent(
    survivor: Member, duplicate: Member, *, actor: Actor, source: str
) -> list[dict[str, Any]]:
    """Write withdrawals on the survivor where the duplicate said stop and the survivor would be contacted."""
    today = consent.local_today()
    notices = consent.notice_purposes()
    theirs = consent.member_consent_events(duplicate.pk)
    ours = consent.member_consent_events(survivor.pk)
    written = []
    for channel in consent.CONSENT_FLAG:
        for purpose in ConsentRecord.Purpose.values:
            latest = consent.latest_event(theirs, channel=channel, purpose=purpose)
            if latest is None or latest.action not in consent.WITHDRAWING_ACTIONS:
                continue
            granted = consent.consent_granted(
                ours,
                channel=channel,
                purpose=purpose,
                birthday=survivor.birthday,
                today=today,
                notices=notices,
            )
            if not granted:
                continue
            record = record_consent(
                survivor,
                channel=channel,
                purpose=purpose,
                action=ConsentRecord.Action.WITHDRAW,
                source=source,
                actor=actor,
                policy_version=latest.policy_version,
                evidence={"merged_from": duplicate.pk, "consent_record": latest.id},
            )
            written.append({"channel": channel, "purpose": purpose, "record": record.pk})
    return written


@audit.service
def merge_members(
    survivor: Member,
    duplicate: Member,
    *,
    actor: Actor,
    ref: str,
    consent_source: str = ConsentRecord.Source.HQ_ADMIN,
) -> dict[str, Any]:
    """Merge ``duplicate`` into ``survivor``; returns what moved (keep it to undo the merge)."""
    survivor, duplicate = _locked_pair(survivor, duplicate)
    if survivor.status != Member.Status.ACTIVE or duplicate.status != Member.Status.ACTIVE:
        raise ValidationError(_("Only active members can be merged."), code="not_active")

    order_ids = list(Order.objects.filter(member=duplicate).values_list("pk", flat=True))
    Order.objects.filter(pk__in=order_ids).update(member=survivor)
    identity_ids = list(ExternalIdentity.objects.filter(member=duplicate).values_list("pk", flat=True))
    ExternalIdentity.objects.filter(pk__in=identity_ids).update(member=survivor)
    tag_ids = list(
        MemberTag.objects.filter(member=duplicate)
        .exclude(tag_id__in=MemberTag.objects.filter(member=survivor).values("tag_id"))
        .values_list("pk", flat=True)
    )
    MemberTag.objects.filter(pk__in=tag_ids).update(member=survivor)
    assignment_ids = list(
        GuideAssignment.objects.filter(member=duplicate, ended_at__isnull=False).values_list("pk", flat=True)
    )
    GuideAssignment.objects.filter(pk__in=assignment_ids).update(member=survivor)

    duplicate_guide = duplicate.guide
    if duplicate_guide is not None:
        assign_guide(duplicate, None, actor=actor, reason=GuideAssignment.Reason.HQ)
        if (
            survivor.guide_id is None
            and duplicate_guide.is_active_staff
            and duplicate_guide.store_id == survivor.home_store_id
        ):
            survivor = assign_guide(survivor, duplicate_guide, actor=actor, reason=GuideAssignment.Reason.HQ)

    points = duplicate.points_balance
    _move_points(duplicate, survivor, points, ref=ref, actor=actor)
    withdrawals = _strictest_consent(survivor, duplicate, actor=actor, source=consent_source)

    Member.objects.filter(pk=duplicate.pk).update(status=Member.Status.MERGED)
    refresh_member_metrics({survivor.pk, duplicate.pk})
    moved = {
        "orders": order_ids,
        "identities": identity_ids,
        "tags": tag_ids,
        "assignments": assignment_ids,
        "points": points,
        "guide": duplicate_guide.pk if duplicate_guide else None,
        "consent_withdrawals": withdrawals,
    }
    audit.record(
        actor,
        "member.merged",
        target=survivor,
        changes={
            "duplicate": duplicate.pk,
            "duplicate_mobile": mask_mobile(duplicate.mobile),
            "orders": len(order_ids),
            "identities": len(identity_ids),
            "tags": len(tag_ids),
            "assignments": len(assignment_ids),
            "points": points,
            "consent_withdrawals": len(withdrawals),
            "ref": ref,
        },
    )
    audit.record(
        actor,
        "member.merged_away",
        target=duplicate,
        changes={"status": ["active", "merged"], "into": survivor.pk, "ref": ref},
    )
    for hook in MERGED_HOOKS:
        hook(duplicate, actor)
    return moved


@audit.service
def unmerge_members(
    survivor: Member, duplicate: Member, moved: dict[str, Any], *, actor: Actor, ref: str
) -> None:
    """Give back to ``duplicate`` exactly what a merge moved to ``survivor`` and make it active again.

    Orders, identities, tags and assignments that moved go back (those changed since stay where they
    are); the points come back as compensating entries, refused if the survivor has spent them.
    Consent withdrawals written by the merge stay (see the module docstring).
    """
    survivor, duplicate = _locked_pair(survivor, duplicate)
    if duplicate.status != Member.Status.MERGED:
        raise ValidationError(_("This member is not merged."), code="not_merged")
    points = int(moved.get("points") or 0)
    if points > survivor.points_balance:
        raise ValidationError(
            _("The merge cannot be undone: the member kept has already spent the points it received."),
            code="points_spent",
        )
    orders = Order.objects.filter(pk__in=moved.get("orders", []), member=survivor).update(member=duplicate)
    identities = ExternalIdentity.objects.filter(pk__in=moved.get("identities", []), member=survivor).update(
        member=duplicate
    )
    tags = (
        MemberTag.objects.filter(pk__in=moved.get("tags", []), member=survivor)
        .exclude(Q(tag_id__in=MemberTag.objects.filter(member=duplicate).values("tag_id")))
        .update(member=duplicate)
    )
    assignments = GuideAssignment.objects.filter(pk__in=moved.get("assignments", []), member=survivor).update(
        member=duplicate
    )
    Member.objects.filter(pk=duplicate.pk).update(status=Member.Status.ACTIVE)
    duplicate.status = Member.Status.ACTIVE
    _move_points(survivor, duplicate, points, ref=ref, actor=actor)
    guide_id = moved.get("guide")
    if guide_id:
        from stores.models import Guide

        guide = Guide.objects.filter(
            pk=guide_id, status=Guide.Status.ACTIVE, store_id=duplicate.home_store_id
        ).first()
        if guide is not None:
            assign_guide(duplicate, guide, actor=actor, reason=GuideAssignment.Reason.HQ)
    refresh_member_metrics({survivor.pk, duplicate.pk})
    audit.record(
        actor,
        "member.unmerged",
        target=survivor,
        changes={
            "duplicate": duplicate.pk,
            "orders": orders,
            "identities": identities,
            "tags": tags,
            "assignments": assignments,
            "points": points,
            "ref": ref,
        },
    )
    audit.record(
        actor, "member.merge_undone", target=duplicate, changes={"status": ["merged", "active"], "ref": ref}
    )
