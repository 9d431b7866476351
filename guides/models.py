"""What the workbench keeps of its own: the notes guides write about their members."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from members.models import Member
from scrm.scoping import ScopePaths
from stores.models import Guide


class MemberNote(models.Model):
    """A free-text note on a member, written by store staff; it follows the member, not the author.

    Notes are never edited in place: a correction is a new note, so the history reads like a diary.
    """

    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.CASCADE, related_name="notes"
    )
    author = models.ForeignKey(
        Guide, verbose_name=_("author"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField(_("note"), max_length=1000)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    # A guide reads the notes of their own members (whoever wrote them); a manager their store's.
    scope_paths = ScopePaths(store="member__home_store", guide="member__guide")

    class Meta:
        verbose_name = _("member note")
        verbose_name_plural = _("member notes")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["member", "created_at"], name="membernote_member_idx")]

    def __str__(self) -> str:
        return self.body[:40]

    @property
    def audit_store_id(self) -> int:
        return self.member.home_store_id
