"""The ``celery worker`` command line shared by the benchmarks and the tests that need a real worker."""

from __future__ import annotations

import sys


def celery_worker_command(queue: str, *, include: str | None = None) -> list[str]:
    """A worker on ``queue`` alone, two processes, no cluster chatter; ``include``: a module to import."""
    command = [sys.executable, "-m", "celery", "-A", "scrm", "worker"]
    if include:
        command += ["-I", include]
    return [
        *command,
        "-Q",
        queue,
        "-c",
        "2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "info",
    ]
