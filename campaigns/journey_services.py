"""Writes for scripts, journeys and the festival calendar; each one audited in its own transaction."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from scrm import audit
from scrm.audit import Actor

from .journeys import validate_event
from .models import Festival, Journey, JourneyStep, Script
from .scripts import validate_script

SCRIPT_FIELDS = frozenset({"title", "body"})
STEP_FIELDS = frozenset({"name", "event", "offset_days", "channel", "script", "due_days", "priority"})
# Offsets beyond a year are typos: no lifecycle step waits longer than that.
MAX_OFFSET_DAYS = 366


@audit.service
def save_script(script: Script | None, *, actor: Actor, **values: Any) -> Script:
    """Create (``script=None``) or change a script; unknown placeholders are refused."""
    unknown = set(values) - SCRIPT_FIELDS
    if unknown:
        raise ValueError(f"not editable through save_script: {sorted(unknown)}")
    if "body" in values:
        validate_script(values["body"])
    created = script is None
    script = Script() if created else Script.objects.select_for_update().get(pk=script.pk)
    changes = (
        {name: [None, value] for name, value in values.items()} if created else audit.diff(script, values)
    )
    if not changes:
        return script
    for name, value in values.items():
        setattr(script, name, value)
    script.full_clean()
    script.save()
    audit.record(actor, "script.created" if created else "script.updated", target=script, changes=changes)
    return script


def clean_step(step: JourneyStep) -> None:
    """The checks a step must pass before it is saved (the admin inline calls this too)."""
    validate_event(step.event)
    if abs(step.offset_days) > MAX_OFFSET_DAYS:
        raise ValidationError(
            {"offset_days": _("At most %(days)d days before or after the event.") % {"days": MAX_OFFSET_DAYS}}
        )
    if step.event == "points_expiring" and step.offset_days > 0:
        raise ValidationError(
            {"offset_days": _("Points-expiring steps fire before the expiry: use 0 or a negative number.")}
        )
    if step.event == "birthday_week" and step.offset_days % 7:
        raise ValidationError(
            {"offset_days": _("A birthday-week step fires on a Monday: use a multiple of 7 days.")}
        )


@audit.service
def save_journey_step(
    step: JourneyStep, *, actor: Actor, changes: dict[str, Any] | None = None
) -> JourneyStep:
    """Save a step built by a form (new or changed) after the journey checks."""
    clean_step(step)
    created = step._state.adding
    step.full_clean()
    step.save()
    audit.record(
        actor, "journeystep.created" if created else "journeystep.updated", target=step, changes=changes or {}
    )
    return step


@audit.service
def delete_journey_step(step: JourneyStep, *, actor: Actor) -> None:
    """Remove a step that never fired; a step with runs stays (its tasks point at it): edit it instead."""
    if step.runs.exists():
        raise ValidationError(
            _("The step “%(step)s” has already fired and cannot be deleted.") % {"step": step.name}
        )
    audit.record(actor, "journeystep.deleted", target=step, changes={"journey": step.journey_id})
    step.delete()


@audit.service
def set_journey_active(journey: Journey, *, active: bool, actor: Actor) -> Journey:
    """Switch a journey on or off. Switching on does not replay the past: the next tick fires only
    event dates within its catch-up window (campaigns.journeys)."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    if journey.active == active:
        return journey
    if active and not journey.steps.exists():
        raise ValidationError(_("A journey needs at least one step before it can be switched on."))
    journey.active = active
    journey.save(update_fields=["active"])
    audit.record(actor, "journey.activated" if active else "journey.deactivated", target=journey)
    return journey


@audit.service
def move_festival(festival: Festival, *, date: datetime.date, actor: Actor) -> Festival:
    """Change a festival's date. Runs already fired for the old date stay; the new date fires anew."""
    festival = Festival.objects.select_for_update().get(pk=festival.pk)
    if festival.date == date:
        return festival
    if Festival.objects.filter(name=festival.name, date=date).exclude(pk=festival.pk).exists():
        raise ValidationError(_("%(name)s is already on %(date)s.") % {"name": festival.name, "date": date})
    old = festival.date
    festival.date = date
    festival.save(update_fields=["date"])
    audit.record(actor, "festival.moved", target=festival, changes={"date": [old, date]})
    return festival


# 春节, 元宵, 七夕 and 中秋 follow the lunar calendar (computed); the others are fixed solar dates.
LUNAR_FESTIVALS: tuple[tuple[str, int, int], ...] = (
    ("春节", 1, 1),
    ("元宵", 1, 15),
    ("七夕", 7, 7),
    ("中秋", 8, 15),
)
SOLAR_FESTIVALS: tuple[tuple[str, int, int], ...] = (
    ("妇女节", 3, 8),
    ("618", 6, 18),
    ("国庆", 10, 1),
    ("双11", 11, 11),
    ("双12", 12, 12),
    ("圣诞", 12, 25),
)


def festival_calendar(years: Iterable[int]) -> list[tuple[str, datetime.date]]:
    """The standard festivals of ``years``, in date order."""
    from lunardate import LunarDate

    rows: list[tuple[str, datetime.date]] = []
    for year in years:
        rows += [(name, LunarDate(year, month, day).to_solar_date()) for name, month, day in LUNAR_FESTIVALS]
        rows += [(name, datetime.date(year, month, day)) for name, month, day in SOLAR_FESTIVALS]
    return sorted(rows, key=lambda row: (row[1], row[0]))


@audit.service
def seed_festivals(years: Iterable[int] = (2026, 2027), *, actor: Actor) -> list[Festival]:
    """Add the standard festivals of ``years`` that the calendar lacks. A festival already present in
    that year (perhaps moved by hand) is left alone, so re-seeding never undoes an edit."""
    created: list[Festival] = []
    for name, date in festival_calendar(years):
        if Festival.objects.filter(name=name, date__year=date.year).exists():
            continue
        created.append(Festival.objects.create(name=name, date=date))
    if created:
        audit.record_many(actor, "festival.created", created, changes={"source": "seed"})
    return created
