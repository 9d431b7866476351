"""Writes to segments: create and update, each validated, in one transaction, audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from scrm import audit
from scrm.audit import Actor

from .models import Segment
from .segments import validate_definition


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": _("A segment needs a name.")}, code="required")
    if len(name) > Segment._meta.get_field("name").max_length:
        raise ValidationError({"name": _("The name is too long.")}, code="max_length")
    return name


@audit.service
def create_segment(*, name: str, definition: dict[str, Any], actor: Actor, description: str = "") -> Segment:
    """Save a new segment; the definition is stored normalised. A bad definition writes nothing."""
    name = _clean_name(name)
    tree = validate_definition(definition)
    if Segment.objects.filter(name=name).exists():
        raise ValidationError({"name": _("A segment with this name already exists.")}, code="unique")
    segment = Segment.objects.create(
        name=name,
        description=(description or "").strip(),
        definition=tree,
        owner=actor.user if actor.user else None,
    )
    audit.record(
        actor,
        "segment.created",
        target=segment,
        changes={"name": name, "description": segment.description, "definition": tree},
    )
    return segment


@audit.service
def update_segment(
    segment: Segment,
    *,
    actor: Actor,
    name: str | None = None,
    description: str | None = None,
    definition: dict[str, Any] | None = None,
) -> Segment:
    """Change a segment's name, description or definition; only what changed is audited."""
    segment = Segment.objects.select_for_update().get(pk=segment.pk)
    new_values: dict[str, Any] = {}
    if name is not None:
        new_values["name"] = _clean_name(name)
        if Segment.objects.filter(name=new_values["name"]).exclude(pk=segment.pk).exists():
            raise ValidationError({"name": _("A segment with this name already exists.")}, code="unique")
    if description is not None:
        new_values["description"] = description.strip()
    if definition is not None:
        new_values["definition"] = validate_definition(definition)
    changes = audit.diff(segment, new_values)
    if not changes:
        return segment
    for field_name in changes:
        setattr(segment, field_name, new_values[field_name])
    segment.save(update_fields=[*changes, "updated_at"])
    audit.record(actor, "segment.updated", target=segment, changes=changes)
    return segment
