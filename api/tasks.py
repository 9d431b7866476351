"""Thin Celery entry points of the API: webhook delivery and its periodic sweep."""

from __future__ import annotations

from celery import shared_task

from . import webhooks
from .models import WebhookDelivery


@shared_task(acks_late=True)
def deliver_webhook_task(delivery_id: int) -> str:
    """Send a delivery; when it fails and may be retried, schedule the next attempt with backoff."""
    delivery = webhooks.attempt_delivery(delivery_id)
    if delivery is None:
        return "skipped"
    if delivery.state == WebhookDelivery.State.PENDING:
        deliver_webhook_task.apply_async(
            (delivery_id,), countdown=webhooks.backoff_seconds(delivery.attempts)
        )
    return delivery.state


@shared_task
def sweep_webhook_deliveries_task() -> int:
    """Re-enqueue overdue pending deliveries; sending twice is harmless (receivers de-duplicate on the id)."""
    ids = webhooks.due_deliveries()
    for delivery_id in ids:
        deliver_webhook_task.delay(delivery_id)
    return len(ids)
