"""A real Celery worker process on the real Redis broker, pointed at the test database."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from bench._worker import celery_worker_command
from scrm.celery import app

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    s = connection.settings_dict
    host = s.get("HOST") or s.get("OPTIONS", {}).get("host", "")
    auth = quote(s.get("USER") or "postgres") + (":" + quote(s["PASSWORD"]) if s.get("PASSWORD") else "")
    if host.startswith("/"):
        return f"postgres://{auth}@/{s['NAME']}?host={host}"
    return f"postgres://{auth}@{host}:{s.get('PORT') or 5432}/{s['NAME']}"


@contextmanager
def celery_worker() -> Iterator[subprocess.Popen[bytes]]:
    """Start ``celery worker`` on a queue of its own; tasks sent from the test process go to it."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE": queue,
        "DJANGO_SETTINGS_MODULE": "scrm.settings.test",
    }
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    # Closed in the finally below; kept on disk so a failing dispatch test can be diagnosed.
    log = tempfile.NamedTemporaryFile(prefix=f"celery-{queue}-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        celery_worker_command(queue),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        app.conf.task_default_queue = previous
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
