"""Outbound webhooks: signed with HMAC-SHA256, retried with backoff, logged; sent to a loopback server."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest

from api import tasks, webhooks
from api.models import WebhookDelivery, WebhookEndpoint
from scrm.audit import Actor

pytestmark = pytest.mark.django_db


class Receiver:
    """A loopback HTTP server answering with the next queued status and keeping what it received."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.received = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*statuses):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for server in made:
        server.close()


def endpoint_for(url, events=("consent.withdrawn",)):
    return WebhookEndpoint.objects.create(
        name="crm", url=url, secret=webhooks.new_secret(), events=list(events)
    )


def test_a_delivery_is_signed_and_logged(receiver):
    server = receiver(200)
    endpoint = endpoint_for(server.url)
    (delivery,) = webhooks.enqueue_event("consent.withdrawn", {"member_id": 7, "channel": "sms"})
    assert tasks.deliver_webhook_task(delivery.pk) == "delivered"
    headers, body = server.received[0]
    expected = hmac.new(
        endpoint.secret.encode(), headers["x-scrm-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["x-scrm-signature"] == f"sha256={expected}"
    assert headers["x-scrm-event"] == "consent.withdrawn"
    assert json.loads(body) == {
        "id": str(delivery.event_id),
        "event": "consent.withdrawn",
        "data": {"member_id": 7, "channel": "sms"},
    }
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)


def test_a_failed_delivery_is_retried_with_growing_backoff_until_it_succeeds(receiver):
    server = receiver(500, 503, 200)
    endpoint_for(server.url)
    (delivery,) = webhooks.enqueue_event("consent.withdrawn", {"member_id": 1})
    countdowns = []
    with mock.patch.object(tasks.deliver_webhook_task, "apply_async") as later:
        for _attempt in range(3):
            tasks.deliver_webhook_task(delivery.pk)
            if later.call_args:
                countdowns.append(later.call_args.kwargs["countdown"])
                later.reset_mock()
    assert countdowns == [30, 60]
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)
    ids = {headers["x-scrm-delivery"] for headers, _body in server.received}
    assert ids == {str(delivery.event_id)}  # one event id across retries: receivers de-duplicate on it


def test_a_delivery_fails_for_good_after_the_last_attempt_and_can_be_sent_again(receiver, hq_admin):
    endpoint_for("http://127.0.0.1:9/unreachable")
    (delivery,) = webhooks.enqueue_event("consent.withdrawn", {"member_id": 1})
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=webhooks.MAX_ATTEMPTS - 1)
    with mock.patch.object(tasks.deliver_webhook_task, "apply_async") as later:
        assert tasks.deliver_webhook_task(delivery.pk) == "failed"
    later.assert_not_called()
    delivery.refresh_from_db()
    assert delivery.last_error
    with mock.patch.object(tasks.deliver_webhook_task, "delay"):
        webhooks.retry_delivery_now(delivery, actor=Actor.for_user(hq_admin))
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("pending", 0)


def test_only_subscribed_active_endpoints_get_the_event_and_only_after_commit(
    django_capture_on_commit_callbacks,
):
    endpoint_for("http://127.0.0.1:9/a", events=["member.merged"])
    WebhookEndpoint.objects.create(
        name="off", url="http://127.0.0.1:9/b", secret="x", events=["member.merged"], is_active=False
    )
    endpoint_for("http://127.0.0.1:9/c", events=["task.completed"])
    with mock.patch.object(tasks.deliver_webhook_task, "delay") as delay:
        with django_capture_on_commit_callbacks() as callbacks:
            deliveries = webhooks.enqueue_event("member.merged", {"survivor_id": 1})
        delay.assert_not_called()
        for callback in callbacks:
            callback()
    assert len(deliveries) == 1
    delay.assert_called_once_with(deliveries[0].pk)


def test_the_sweep_resends_overdue_deliveries():
    endpoint_for("http://127.0.0.1:9/a")
    (delivery,) = webhooks.enqueue_event("consent.withdrawn", {"member_id": 1})
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at="2020-01-01T00:00Z")
    with mock.patch.object(tasks.deliver_webhook_task, "delay") as delay:
        assert tasks.sweep_webhook_deliveries_task() == 1
    delay.assert_called_once_with(delivery.pk)
