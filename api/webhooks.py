"""Outbound webhooks: events written as delivery rows in the caller's transaction, sent after commit.

Each request carries ``X-SCRM-Event``, ``X-SCRM-Delivery`` (the event id: receivers de-duplicate on
it), ``X-SCRM-Timestamp`` and ``X-SCRM-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<timestamp>.<body>`` under the endpoint's secret. A failed attempt is retried with exponential
backoff by Celery; a periodic sweep re-sends deliveries whose message was lost.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from functools import partial
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from members.models import Member
from scrm.audit import Actor

from .models import WebhookDelivery, WebhookEndpoint

Event = WebhookEndpoint.Event

TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 8
# 30 s, 1 min, 2 min, ... capped at 1 h: about four hours in all before a delivery is marked failed.
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 3600


def new_secret() -> str:
    return secrets.token_hex(32)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff_seconds(attempts: int) -> int:
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))


def enqueue_event(event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """One delivery per active endpoint subscribed to ``event``, each sent after the transaction commits."""
    endpoints = list(WebhookEndpoint.objects.filter(is_active=True, events__contains=[event]))
    if not endpoints:
        return []
    body = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(endpoint=e, event=event, payload=body, next_attempt_at=now) for e in endpoints]
    )
    from .tasks import deliver_webhook_task

    for delivery in deliveries:
        transaction.on_commit(partial(deliver_webhook_task.delay, delivery.pk))
    return deliveries


def on_consent_withdrawn(member: Member, channel: str, actor: Actor) -> None:
    """members.consent withdrawal handler: tell subscribed systems, after the withdrawal commits."""
    enqueue_event(
        Event.CONSENT_WITHDRAWN,
        {
            "member_id": member.pk,
            "channel": channel,
            "at": timezone.now(),
            "actor": actor.label or actor.kind,
        },
    )


def attempt_delivery(delivery_id: int) -> WebhookDelivery | None:
    """Send one delivery once; record the attempt. Returns the row (None if gone or already done)."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .select_related("endpoint")
            .filter(pk=delivery_id, state=WebhookDelivery.State.PENDING)
            .first()
        )
        if delivery is None:
            return None
        endpoint = delivery.endpoint
        body = json.dumps(
            {"id": str(delivery.event_id), "event": delivery.event, "data": delivery.payload},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(time.time()))
        request = urllib.request.Request(
            endpoint.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "SCRM-Webhooks/1",
                "X-SCRM-Event": delivery.event,
                "X-SCRM-Delivery": str(delivery.event_id),
                "X-SCRM-Timestamp": timestamp,
                "X-SCRM-Signature": sign(endpoint.secret, timestamp, body),
            },
        )
        status: int | None = None
        error = ""
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # the URL is set by HQ
                status = response.status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc))[:300]
        now = timezone.now()
        delivery.attempts += 1
        delivery.last_status = status
        delivery.last_error = error
        if status is not None and 200 <= status < 300:
            delivery.state = WebhookDelivery.State.DELIVERED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            delivery.last_error = ""
        elif delivery.attempts >= MAX_ATTEMPTS or not endpoint.is_active:
            delivery.state = WebhookDelivery.State.FAILED
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = now + datetime.timedelta(seconds=backoff_seconds(delivery.attempts))
        delivery.save(
            update_fields=[
                "attempts",
                "last_status",
                "last_error",
                "state",
                "delivered_at",
                "next_attempt_at",
            ]
        )
        return delivery


def due_deliveries(
    *, now: datetime.datetime | None = None, grace: datetime.timedelta | None = None
) -> list[int]:
    """Pending deliveries whose next attempt is overdue (its message lost with a worker or a restart)."""
    now = now or timezone.now()
    grace = grace or datetime.timedelta(minutes=5)
    return list(
        WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING, next_attempt_at__lt=now - grace)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )


def retry_delivery_now(delivery: WebhookDelivery, *, actor: Actor) -> WebhookDelivery:
    """HQ sends a failed (or waiting) delivery again now, with a fresh count of attempts."""
    from scrm import audit

    from .tasks import deliver_webhook_task

    with audit.app_audited():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        if delivery.state == WebhookDelivery.State.DELIVERED:
            return delivery
        previous = delivery.state
        delivery.state, delivery.attempts, delivery.next_attempt_at = (
            WebhookDelivery.State.PENDING,
            0,
            timezone.now(),
        )
        delivery.save(update_fields=["state", "attempts", "next_attempt_at"])
        audit.record(actor, "webhook.retried", target=delivery, changes={"state": [previous, "pending"]})
        transaction.on_commit(partial(deliver_webhook_task.delay, delivery.pk))
    return delivery
