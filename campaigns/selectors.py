"""Reads for campaigns. Segment reads live with their compiler in campaigns.segments."""

from __future__ import annotations

from .segments import (
    SegmentPreview,
    channel_consent_q,
    compile_definition,
    consent_q,
    eligible_members,
    preview_segment,
    segment_members,
)

__all__ = [
    "SegmentPreview",
    "channel_consent_q",
    "compile_definition",
    "consent_q",
    "eligible_members",
    "preview_segment",
    "segment_members",
]
