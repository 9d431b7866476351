"""Row-level scope. Every queryset shown to a user passes through ``scoped``; default deny.

A model opts in by declaring ``scope_paths = ScopePaths(store=..., guide=...)``: the ORM paths from
the model to the store it belongs to and to the guide who owns it. HQ roles see everything; a store
manager sees rows on their store's path; a guide sees rows on their guide path (or, for models
with no guide path, their store's rows). A model without ``scope_paths`` is visible to HQ only.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce
from typing import Any, TypeVar

from django.db.models import Model, Q, QuerySet

from .roles import HQ_ROLES, Role, role_of

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class ScopePaths:
    """ORM paths to the owning store and guide; several store paths mean "any of them"."""

    store: str | tuple[str, ...] | None = None
    guide: str | None = None

    def store_q(self, store_id: int | None) -> Q:
        paths = (self.store,) if isinstance(self.store, str) else (self.store or ())
        return reduce(operator.or_, (Q(**{path: store_id}) for path in paths), Q(pk__in=[]))


@dataclass(frozen=True)
class Scope:
    role: Role | None
    store_id: int | None = None
    guide_id: int | None = None

    @property
    def sees_everything(self) -> bool:
        return self.role in HQ_ROLES


def scope_of(user: Any) -> Scope:
    """The user's scope, read once per request and cached on the user object."""
    cached = getattr(user, "_scrm_scope", None)
    if cached is not None:
        return cached
    role = role_of(user)
    store_id = guide_id = None
    if role in (Role.STORE_MANAGER, Role.GUIDE):
        # The staff profile lives in `stores`; reached by its reverse accessor so that this
        # infrastructure module imports nothing upward.
        profile = _staff_profile(user)
        if profile is None or not profile.is_active_staff:
            role = None
        else:
            store_id, guide_id = profile.store_id, profile.pk
    scope = Scope(role=role, store_id=store_id, guide_id=guide_id)
    user._scrm_scope = scope
    return scope


def _staff_profile(user: Any) -> Any:
    try:
        return user.staff_profile
    except Exception:  # RelatedObjectDoesNotExist is per-model; any miss means "no profile"
        return None


def scoped(queryset: QuerySet[M], user: Any) -> QuerySet[M]:
    """``queryset`` narrowed to what ``user`` may see."""
    scope = scope_of(user)
    if scope.sees_everything:
        return queryset
    paths: ScopePaths | None = getattr(queryset.model, "scope_paths", None)
    if scope.role is None or paths is None:
        return queryset.none()
    if scope.role == Role.GUIDE and paths.guide is not None:
        return queryset.filter(**{paths.guide: scope.guide_id})
    if paths.store:
        return queryset.filter(paths.store_q(scope.store_id))
    return queryset.none()


def can_see(user: Any, instance: Model) -> bool:
    return scoped(type(instance)._default_manager.filter(pk=instance.pk), user).exists()
