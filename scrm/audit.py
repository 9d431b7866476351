"""The audit trail's write side: every service records what it changed, in the same transaction.

A failed audit write fails the change: ``record`` runs inside the caller's transaction and raises.

Two layers, so that no write path escapes: services run inside ``service`` (or ``app_audited``) and
write domain events with ``record``; database triggers on every business table (migration
scrm/0005) record a row-level ``db.insert`` / ``db.update`` / ``db.delete`` event for any write made
outside such a block — ``QuerySet.update()``, bulk writes, raw SQL, another program.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from django.db import connection, models, transaction

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


_FLAG = "scrm.app_audited"


@contextmanager
def app_audited() -> Iterator[None]:
    """A transaction whose writes the application audits itself, so the row triggers stand aside.

    The flag is transaction-local and rolls back with the savepoint on error; on success it is put
    back to what it was, so writes after the block (in the same outer transaction) are caught again.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [_FLAG])
        previous = cursor.fetchone()[0] or "off"
        cursor.execute("SELECT set_config(%s, 'on', true)", [_FLAG])
        yield
        if previous != "on":
            cursor.execute("SELECT set_config(%s, %s, true)", [_FLAG, previous])


P = ParamSpec("P")
R = TypeVar("R")


def service(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator for write services: one transaction, audited by the service itself."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with app_audited():
            return func(*args, **kwargs)

    return wrapper
