"""Export a segment's members (xlsx or csv) through the same background path as every changelist.

The job keeps the definition as it was when HQ asked, so an edit made while the worker runs does not
change what comes out; the worker still scopes and masks for the requester as they are then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from members.exports import MEMBER_COLUMNS
from members.models import Member
from scrm.audit import Actor
from scrm.exports import ExportSource, register_source, request_export
from scrm.models import ExportJob

from .models import Segment
from .segments import segment_members


def _members(user: Any, params: Mapping[str, Any]) -> QuerySet[Member]:
    return segment_members(params["definition"]).order_by("pk")


SEGMENT_MEMBERS = register_source(
    ExportSource(
        name="campaigns.segment_members",
        model=Member,
        columns=MEMBER_COLUMNS,
        permissions=("campaigns.view_segment", "members.view_member", "members.export"),
        build_queryset=_members,
        title=_("segment members"),
    )
)


def export_segment(segment: Segment, *, file_format: str, actor: Actor) -> ExportJob:
    """Queue the export of ``segment``'s members for ``actor`` (permission checked, audited)."""
    return request_export(
        SEGMENT_MEMBERS,
        params={"segment": segment.pk, "segment_name": segment.name, "definition": segment.definition},
        file_format=file_format,
        actor=actor,
    )
