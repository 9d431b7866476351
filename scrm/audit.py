"""The audit trail's write side: every service records what it changed, in the same transaction.

A failed audit write fails the change: ``record`` runs inside the caller's transaction and raises.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from .models import AuditEvent

Changes = Mapping[str, Any]


@dataclass(frozen=True)
class Actor:
    """Who did something: a user, an API client or the system, plus the request it came from."""

    user: Any = None
    kind: str = AuditEvent.ActorKind.SYSTEM
    label: str = ""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ip: str | None = None

    @classmethod
    def for_user(cls, user: Any, *, request_id: str | None = None, ip: str | None = None) -> Actor:
        return cls(
            user=user,
            kind=AuditEvent.ActorKind.USER,
            label=user.get_username(),
            request_id=request_id or uuid.uuid4().hex,
            ip=ip,
        )

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        return cls.for_user(
            request.user,
            request_id=getattr(request, "request_id", None),
            ip=request.META.get("REMOTE_ADDR"),
        )

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind=AuditEvent.ActorKind.SYSTEM, label=label)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, models.Model):
        return value.pk
    return str(value)


def _event(
    actor: Actor,
    action: str,
    *,
    target: models.Model | None,
    target_type: str | None,
    target_id: Any,
    changes: Changes | None,
    store_id: int | None,
) -> AuditEvent:
    if target is not None:
        target_type = target._meta.label_lower
        target_id = target.pk
        label = str(target)[:200]
        if store_id is None:
            store_id = getattr(target, "audit_store_id", None)
    else:
        label = ""
    return AuditEvent(
        actor=actor.user if actor.user is not None and actor.user.pk else None,
        actor_kind=actor.kind,
        actor_label=actor.label[:150],
        action=action,
        target_type=target_type or "",
        target_id=str(target_id if target_id is not None else ""),
        target_label=label,
        store_id=store_id,
        changes=_jsonable(dict(changes or {})),
        request_id=actor.request_id,
        ip=actor.ip,
    )


def record(
    actor: Actor,
    action: str,
    *,
    target: models.Model | None = None,
    target_type: str | None = None,
    target_id: Any = None,
    changes: Changes | None = None,
    store_id: int | None = None,
) -> AuditEvent:
    """Write one audit event. ``changes`` is ``{"field": [old, new]}`` or a summary of a bulk write."""
    event = _event(
        actor,
        action,
        target=target,
        target_type=target_type,
        target_id=target_id,
        changes=changes,
        store_id=store_id,
    )
    event.save(force_insert=True)
    return event


def record_many(
    actor: Actor, action: str, targets: Iterable[models.Model], *, changes: Changes | None = None
) -> list[AuditEvent]:
    """One event per target, written in one INSERT (bulk writes stay audited without N queries)."""
    events = [
        _event(actor, action, target=t, target_type=None, target_id=None, changes=changes, store_id=None)
        for t in targets
    ]
    return AuditEvent.objects.bulk_create(events, batch_size=2000)


def diff(instance: models.Model, new_values: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{"field": [old, new]}`` for the fields whose value would change."""
    out: dict[str, list[Any]] = {}
    for name, new in new_values.items():
        old = getattr(instance, name)
        if old != new:
            out[name] = [_jsonable(old), _jsonable(new)]
    return out
