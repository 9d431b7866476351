"""HQ admin for integration clients (keys shown once), merge proposals and the webhook delivery log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import BaseForm
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from scrm.admin_base import AppendOnlyAdmin, ScrmModelAdmin, member_label
from scrm.audit import Actor

from . import services, webhooks
from .models import ApiClient, MergeProposal, Scope, WebhookDelivery, WebhookEndpoint


class ApiClientForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        label=_("scopes"), choices=Scope.choices, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = ApiClient
        fields = ("name", "scopes", "stores", "rate_limit")


def _show_key_once(request: HttpRequest, client: ApiClient, key: str) -> None:
    messages.warning(
        request,
        format_html(
            "{} <code>{}</code>",
            gettext("The API key of %(client)s, shown only this once; copy it now:")
            % {"client": client.name},
            key,
        ),
    )


@admin.register(ApiClient)
class ApiClientAdmin(ScrmModelAdmin):
    form = ApiClientForm
    list_display = (
        "name",
        "key_prefix",
        "scope_list",
        "rate_limit",
        "is_active",
        "last_used_at",
        "created_at",
    )
    list_filter = ("is_active",)
    search_fields = ("name", "key_prefix")
    readonly_fields = (
        "key_prefix",
        "is_active",
        "revoked_at",
        "rotated_at",
        "last_used_at",
        "created_at",
        "created_by",
    )
    autocomplete_fields = ("stores",)
    actions = ("rotate_keys", "revoke_clients")

    @admin.display(description=_("scopes"))
    def scope_list(self, obj: ApiClient) -> str:
        return ", ".join(obj.scopes)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail keeps naming the client

    def save_model(self, request: HttpRequest, obj: ApiClient, form: BaseForm, change: bool) -> None:
        actor = Actor.from_request(request)
        data = form.cleaned_data
        if change:
            services.update_api_client(
                obj,
                actor=actor,
                name=data["name"],
                scopes=sorted(data["scopes"]),
                rate_limit=data["rate_limit"],
                stores=data["stores"],
            )
            return
        client, key = services.create_api_client(
            name=data["name"],
            scopes=data["scopes"],
            stores=data["stores"],
            rate_limit=data["rate_limit"],
            actor=actor,
        )
        obj.pk = client.pk
        obj.key_prefix = client.key_prefix
        _show_key_once(request, client, key)

    def save_related(self, request: HttpRequest, form: BaseForm, formsets: Any, change: bool) -> None:
        pass  # the services above set the stores, inside their audited transaction

    @admin.action(description=_("Rotate the API key of the selected clients"), permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> None:
        for client in queryset:
            try:
                key = services.rotate_api_client_key(client, actor=Actor.from_request(request))
            except ValidationError as error:
                self.message_user(request, f"{client.name}: {error.messages[0]}", messages.ERROR)
                continue
            _show_key_once(request, client, key)

    @admin.action(description=_("Revoke the selected clients"), permissions=["change"])
    def revoke_clients(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> None:
        for client in queryset:
            services.revoke_api_client(client, actor=Actor.from_request(request))
        self.message_user(request, gettext("Revoked."), messages.SUCCESS)


@admin.register(MergeProposal)
class MergeProposalAdmin(ScrmModelAdmin):
    list_display = (
        "id",
        "survivor_label",
        "duplicate_label",
        "state",
        "reason",
        "client",
        "created_at",
        "decided_at",
    )
    list_filter = ("state",)
    list_select_related = ("survivor", "duplicate", "client")
    readonly_fields = (
        "survivor",
        "duplicate",
        "state",
        "reason",
        "evidence",
        "client",
        "created_at",
        "decided_at",
        "decided_by",
    )
    fields = readonly_fields
    actions = ("merge_selected", "reject_selected", "undo_selected")

    @admin.display(description=_("member kept"))
    def survivor_label(self, obj: MergeProposal) -> str:
        return member_label(obj.survivor)

    @admin.display(description=_("member merged into it"))
    def duplicate_label(self, obj: MergeProposal) -> str:
        return member_label(obj.duplicate)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[MergeProposal], service: Any, done: str
    ) -> None:
        count = 0
        for proposal in queryset:
            try:
                service(proposal, actor=Actor.from_request(request))
                count += 1
            except ValidationError as error:
                self.message_user(request, f"#{proposal.pk}: {error.messages[0]}", messages.ERROR)
        if count:
            self.message_user(request, done % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Merge the selected proposals"), permissions=["change"])
    def merge_selected(self, request: HttpRequest, queryset: QuerySet[MergeProposal]) -> None:
        self._apply(request, queryset, services.accept_merge_proposal, gettext("Merged: %(count)s."))

    @admin.action(description=_("Reject the selected proposals"), permissions=["change"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[MergeProposal]) -> None:
        self._apply(request, queryset, services.reject_merge_proposal, gettext("Rejected: %(count)s."))

    @admin.action(description=_("Undo the selected merges"), permissions=["change"])
    def undo_selected(self, request: HttpRequest, queryset: QuerySet[MergeProposal]) -> None:
        self._apply(request, queryset, services.undo_merge, gettext("Merges undone: %(count)s."))


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ScrmModelAdmin):
    list_display = ("name", "url", "event_list", "is_active", "created_at")
    list_filter = ("is_active",)

    class Form(forms.ModelForm):
        url = forms.URLField(label=_("URL"), max_length=500, assume_scheme="https")
        events = forms.MultipleChoiceField(
            label=_("events"),
            choices=WebhookEndpoint.Event.choices,
            widget=forms.CheckboxSelectMultiple,
        )

        class Meta:
            model = WebhookEndpoint
            fields = ("name", "url", "events", "is_active")

    form = Form

    @admin.display(description=_("events"))
    def event_list(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: BaseForm, change: bool) -> None:
        if not change:
            obj.secret = webhooks.new_secret()
        super().save_model(request, obj, form, change)
        if not change:
            messages.warning(
                request,
                format_html(
                    "{} <code>{}</code>",
                    gettext("The signing secret of this endpoint, shown only this once:"),
                    obj.secret,
                ),
            )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AppendOnlyAdmin):
    list_display = (
        "created_at",
        "event",
        "endpoint",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "delivered_at",
    )
    list_filter = ("state", "event", "endpoint")
    list_select_related = ("endpoint",)
    readonly_fields = (
        "endpoint",
        "event",
        "event_id",
        "payload",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    actions = ("send_again",)

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("api.change_webhookendpoint")

    @admin.action(description=_("Send the selected deliveries again now"), permissions=["send"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            webhooks.retry_delivery_now(delivery, actor=Actor.from_request(request))
        self.message_user(request, gettext("Queued again."), messages.SUCCESS)
