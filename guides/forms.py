"""Forms of the workbench pages. Each parses input only; the services decide and write."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from campaigns.models import Task
from campaigns.work import NOTE_MAX_LENGTH, TOKEN_MAX_LENGTH
from stores.models import Guide

from .services import TAG_MAX_LENGTH

# The order of the outcome buttons: the common answers first, the heavy ones last.
OUTCOME_ORDER = (
    Task.Outcome.REACHED,
    Task.Outcome.NO_ANSWER,
    Task.Outcome.VISIT_BOOKED,
    Task.Outcome.PURCHASED,
    Task.Outcome.DECLINED,
    Task.Outcome.WRONG_NUMBER,
    Task.Outcome.STOP,
)


def new_token() -> str:
    """One per rendered form: a second submit of the same page carries the same token."""
    return uuid.uuid4().hex


class CompleteTaskForm(forms.Form):
    outcome = forms.ChoiceField(label=_("Outcome"), choices=[(o.value, o.label) for o in OUTCOME_ORDER])
    note = forms.CharField(label=_("Note"), max_length=NOTE_MAX_LENGTH, required=False, widget=forms.Textarea)
    follow_up_on = forms.DateField(label=_("Follow up on"), required=False)
    token = forms.CharField(max_length=TOKEN_MAX_LENGTH, required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("token", new_token())

    def clean_follow_up_on(self) -> Any:
        value = self.cleaned_data.get("follow_up_on")
        if value is not None and value < timezone.localdate():
            raise forms.ValidationError(_("The follow-up date must be between today and a year from now."))
        return value


class NoteForm(forms.Form):
    body = forms.CharField(label=_("New note"), max_length=NOTE_MAX_LENGTH, widget=forms.Textarea)


class TagForm(forms.Form):
    name = forms.CharField(label=_("Add a tag"), max_length=TAG_MAX_LENGTH)


class StaffChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Guide) -> str:
        return f"{obj.name} · {obj.employee_no}"


class ReassignForm(forms.Form):
    """Selected tasks or members (ids from checkboxes) to one colleague."""

    to_guide = StaffChoiceField(label=_("Give to"), queryset=Guide.objects.none(), empty_label=None)
    ids = forms.TypedMultipleChoiceField(coerce=int, choices=(), required=True)

    def __init__(self, *args: Any, guides: list[Guide], ids: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["to_guide"].queryset = Guide.objects.filter(pk__in=[g.pk for g in guides])
        self.fields["ids"].choices = [(pk, pk) for pk in ids]
        self.fields["ids"].error_messages["required"] = _("Select at least one.")


SPREAD = "spread"


class OffboardForm(forms.Form):
    guide = StaffChoiceField(label=_("Leaving guide"), queryset=Guide.objects.none())
    receiver = forms.ChoiceField(label=_("Hand members and open tasks to"))
    left_on = forms.DateField(label=_("Last working day"))
    confirm = forms.BooleanField(
        label=_("I understand: the guide's access ends now and cannot be undone here."), required=True
    )

    def __init__(self, *args: Any, guides: list[Guide], manager: Guide, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        leaving = [g for g in guides if g.pk != manager.pk]
        self.fields["guide"].queryset = Guide.objects.filter(pk__in=[g.pk for g in leaving])
        self.fields["receiver"].choices = [(SPREAD, _("Spread evenly over the other guides"))] + [
            (str(g.pk), f"{g.name} · {g.employee_no}") for g in guides
        ]
        self.guides = {str(g.pk): g for g in guides}
        if not self.is_bound:
            self.initial.setdefault("left_on", timezone.localdate())
            self.initial.setdefault("receiver", SPREAD)

    def receiver_guide(self) -> Guide | None:
        value = self.cleaned_data["receiver"]
        return None if value == SPREAD else self.guides[value]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        guide, receiver = cleaned.get("guide"), cleaned.get("receiver")
        if guide is not None and receiver == str(guide.pk):
            self.add_error("receiver", _("A leaving guide cannot receive their own members."))
        return cleaned
