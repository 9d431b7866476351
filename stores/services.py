"""Writes to the organisation: each one audited, in the same transaction as the change."""

from __future__ import annotations

import datetime

from scrm import audit, security
from scrm.audit import Actor

from .models import Guide


@audit.service
def mark_guide_left(guide: Guide, *, actor: Actor, left_on: datetime.date) -> Guide:
    """Record that ``guide`` left the store on ``left_on`` and end every session of their login at once.

    Safe to repeat: a guide already marked as left keeps their first ``left_on`` and no second
    ``guide.left`` event is written, but any session that appeared since is still ended. Handing
    the guide's members over to colleagues is a separate flow.
    """
    changed = Guide.objects.filter(pk=guide.pk, status=Guide.Status.ACTIVE).update(
        status=Guide.Status.LEFT, left_on=left_on
    )  # compare-and-set: two clicks, or two people, record the departure once
    ended = security.end_sessions_of(guide.user)
    if changed:
        audit.record(
            actor,
            "guide.left",
            target=guide,
            changes={
                "status": [guide.status, Guide.Status.LEFT],
                "left_on": [guide.left_on, left_on],
                "sessions_ended": ended,
            },
        )
    elif ended:
        audit.record(actor, "auth.sessions_ended", target=guide, changes={"sessions_ended": ended})
    guide.refresh_from_db(fields=["status", "left_on"])
    return guide
