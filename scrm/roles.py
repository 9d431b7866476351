"""The five roles. Each is an auth Group kept in sync with ROLE_PERMISSIONS after every migrate."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    HQ_ADMIN = "hq_admin", _("HQ administrator")
    HQ_OPERATOR = "hq_operator", _("HQ member operations")
    AUDITOR = "auditor", _("Privacy and audit officer")
    STORE_MANAGER = "store_manager", _("Store manager")
    GUIDE = "guide", _("Shopping guide")


HQ_ROLES = frozenset({Role.HQ_ADMIN, Role.HQ_OPERATOR, Role.AUDITOR})

# Business apps whose models HQ works with in the admin.
BUSINESS_APPS = ("stores", "members", "loyalty", "campaigns")

# Permission codename patterns per role: (app_label, action) pairs; "*" is every app label.
# Store managers and guides get no model permissions beyond revealing a number (with a reason, audited
# and rate-limited): they never use the admin, and their pages check role and scope instead.
ROLE_PERMISSIONS: dict[str, set[tuple[str, str]]] = {
    Role.HQ_ADMIN: {("*", "*")},
    Role.HQ_OPERATOR: {(app, action) for app in BUSINESS_APPS for action in ("view", "add", "change")}
    | {
        ("scrm", "view"),
        ("members", "view_full_mobile"),
        ("members", "export"),
        ("members", "reveal_mobile"),
        # Merge proposals from the integrations: operators review them; API clients stay with admins.
        ("api", "view_mergeproposal"),
        ("api", "change_mergeproposal"),
        ("api", "view_webhookdelivery"),
    },
    Role.AUDITOR: {(app, "view") for app in (*BUSINESS_APPS, "scrm", "auth", "api")}
    | {("members", "view_full_mobile")},
    Role.STORE_MANAGER: {("members", "reveal_mobile")},
    Role.GUIDE: {("members", "reveal_mobile")},
}


def role_of(user: Any) -> Role | None:
    """The user's role, or None for an account with no role (which then sees nothing)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    cached = getattr(user, "_scrm_role", False)
    if cached is not False:
        return cached
    role: Role | None
    if user.is_superuser:
        role = Role.HQ_ADMIN
    else:
        names = set(user.groups.values_list("name", flat=True))
        role = next((r for r in Role if r.value in names), None)
    user._scrm_role = role
    return role


def is_hq(user: Any) -> bool:
    return role_of(user) in HQ_ROLES


def sync_role_groups(**_: Any) -> None:
    """Create or update one Group per role with exactly its permissions (idempotent).

    post_migrate runs app by app, so on a fresh database the later apps' permissions would not exist
    yet; they are created here first (create_permissions is idempotent).
    """
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    using = _.get("using", "default")
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)

    all_perms = list(Permission.objects.select_related("content_type"))
    for role, patterns in ROLE_PERMISSIONS.items():
        group, _created = Group.objects.get_or_create(name=role)
        wanted = [p for p in all_perms if _matches(p, patterns)]
        group.permissions.set(wanted)


def _matches(permission: Any, patterns: set[tuple[str, str]]) -> bool:
    app = permission.content_type.app_label
    codename = permission.codename
    action = codename.split("_", 1)[0]
    for pattern_app, pattern_action in patterns:
        if pattern_app not in ("*", app):
            continue
        if pattern_action in ("*", action, codename):
            return True
    return False
