"""Benchmark: the guide workbench under load, G guides at once on gunicorn and PostgreSQL.

Builds its own database ``scrm_bench_workbench`` on the server of ``DATABASE_URL`` (never the dev or
test databases), migrates it and seeds one store per ten guides, each guide with ``--tasks`` open tasks
(200 by default) for as many members of their own, across two campaigns. Then it starts gunicorn on a
free loopback port (``--workers`` processes × ``--threads`` threads, settings ``scrm.settings.test``:
DEBUG off, static files from the finders) and runs G simulated guides, one thread each, for
``--seconds``. Each guide signs in through the login page once (not timed), then loops over the real
flow, as a phone would send it:

    GET /m/today/  →  GET /m/tasks/<first open task>/  →  POST /m/tasks/<id>/complete/ (outcome "reached")

with a think time between requests drawn uniformly from ``--think`` (a guide between customers; ``0,0``
hammers the server). The load generator is plain threads with ``requests`` sessions (cookies, CSRF),
an equivalent of a locust user class without another dependency. An error is any exception, any
status other than 200 (pages) or 302 (the completion's redirect), or a completion that did not
record (the redirect must go back to Today).

Prints the configuration and a per-step table, then as its last line one JSON object:
``{"bench": "workbench_load", "guides": G, "requests": N, "rps": R, "p50_ms": A, "p95_ms": B, "errors": E}``.

    python bench/workbench_load.py [--guides 50] [--tasks 200] [--seconds 60] [--think 1,4]
                                   [--workers 3] [--threads 4] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _db import database_exists, database_url, drop_database, recreate_database  # noqa: E402

BENCH_DATABASE = "scrm_bench_workbench"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
PASSWORD = "bench-only-password"
GUIDES_PER_STORE = 10
TASK_RE = re.compile(r'data-task-id="(\d+)"')
TOKEN_RE = re.compile(r'name="token" value="([0-9a-f]+)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def seed(guides: int, tasks: int) -> None:
    """Stores, guides with logins, members and open tasks; bulk writes, audited as one seed event."""
    import datetime

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from campaigns.models import Campaign, CampaignRun, Script, Segment, Task, TaskChannel
    from members.models import Member
    from scrm import audit
    from scrm.audit import Actor
    from scrm.roles import Role
    from stores.models import Guide, Region, Store

    now = timezone.now()
    password = make_password(PASSWORD)
    with audit.app_audited():
        region = Region.objects.create(code="BENCH", name="压测区域")
        stores = Store.objects.bulk_create(
            [
                Store(code=f"WB{i:04d}", name=f"压测门店{i}", region=region, city="上海")
                for i in range((guides + GUIDES_PER_STORE - 1) // GUIDES_PER_STORE)
            ]
        )
        users = get_user_model().objects.bulk_create(
            [get_user_model()(username=f"wb{i:04d}", password=password) for i in range(guides)]
        )
        group = Group.objects.get(name=Role.GUIDE)
        group.user_set.add(*users)
        staff = Guide.objects.bulk_create(
            [
                Guide(
                    user=user,
                    store=stores[i // GUIDES_PER_STORE],
                    employee_no=f"WB{i:05d}",
                    name=f"导购{i}",
                    position=Guide.Position.GUIDE,
                )
                for i, user in enumerate(users)
            ]
        )
        members = Member.objects.bulk_create(
            [
                Member(
                    mobile=f"+86137{g:04d}{t:04d}",
                    name=f"会员{g}-{t}",
                    home_store=guide.store,
                    guide=guide,
                    joined_at=now - datetime.timedelta(days=100),
                    consent_wecom=True,
                    consent_call=True,
                )
                for g, guide in enumerate(staff)
                for t in range(tasks)
            ],
            batch_size=5000,
        )
        script = Script.objects.create(
            title="压测话术", body="{name}您好，我是{store}的{guide}，新品到店了。"
        )
        segment = Segment.objects.create(name="压测人群", definition={})
        runs = []
        for name in ("新品邀约", "沉睡唤醒"):
            campaign = Campaign.objects.create(
                name=name, segment=segment, script=script, channel=TaskChannel.WECOM, status="running"
            )
            runs.append(CampaignRun.objects.create(campaign=campaign, occurrence="bench", state="done"))
        Task.objects.bulk_create(
            [
                Task(
                    run=runs[i % 2],
                    member=member,
                    store_id=member.home_store_id,
                    guide_id=member.guide_id,
                    channel=TaskChannel.WECOM,
                    title=runs[i % 2].campaign.name,
                    opens_at=now - datetime.timedelta(days=1),
                    due_at=now + datetime.timedelta(hours=(i % 96) - 24),
                )
                for i, member in enumerate(members)
            ],
            batch_size=5000,
        )
        audit.record(
            Actor.system("bench"),
            "bench.seeded",
            target_type="campaigns.task",
            target_id="*",
            changes={"guides": guides, "tasks_per_guide": tasks},
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(port: int, workers: int, threads: int, env: dict) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "scrm.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--log-level",
        "warning",
        "--timeout",
        "60",
        # As behind a proxy: phones keep their connection between taps (gunicorn's default is 2 s).
        "--keep-alive",
        "75",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def wait_ready(base: str, seconds: float = 60) -> None:
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit("gunicorn did not answer /healthz in time")


class Guide(threading.Thread):
    """One simulated guide: sign in, then Today → task → complete until the clock runs out."""

    def __init__(
        self, base: str, username: str, *, start_at: float, stop_at: float, think: tuple[float, float]
    ):
        super().__init__(daemon=True)
        import requests

        self.base = base
        self.username = username
        self.session = requests.Session()
        self.start_at = start_at
        self.stop_at = stop_at
        self.think = think
        self.samples: list[tuple[str, float]] = []
        self.errors = 0
        self.error_kinds: dict[str, int] = defaultdict(int)
        self.completed = 0
        self.signed_in = False

    def sign_in(self) -> None:
        page = self.session.get(self.base + "/login/", timeout=30)
        csrf = CSRF_RE.search(page.text).group(1)
        response = self.session.post(
            self.base + "/login/",
            data={"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": csrf, "next": ""},
            allow_redirects=False,
            timeout=30,
        )
        self.signed_in = response.status_code == 302

    def timed(self, step: str, method: str, url: str, expect: int, **kwargs):
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, self.base + url, allow_redirects=False, timeout=30, **kwargs
            )
        except Exception as error:
            self.samples.append((step, time.perf_counter() - started))
            self.errors += 1
            self.error_kinds[f"{step}: {type(error).__name__}"] += 1
            return None
        self.samples.append((step, time.perf_counter() - started))
        if response.status_code != expect:
            self.errors += 1
            self.error_kinds[f"{step}: HTTP {response.status_code}"] += 1
            return None
        return response

    def pause(self) -> None:
        low, high = self.think
        if high > 0:
            time.sleep(random.uniform(low, high))

    def run(self) -> None:
        try:
            self.sign_in()
        except Exception:
            self.errors += 1
            return
        # The shift starts for everyone at once, each guide within one think time of it.
        time.sleep(max(0.0, self.start_at - time.monotonic()) + random.uniform(0, self.think[1]))
        while time.monotonic() < self.stop_at:
            today = self.timed("today", "GET", "/m/today/", 200)
            if today is None:
                self.pause()
                continue
            found = TASK_RE.search(today.text)
            if found is None:
                return  # nothing left to do
            self.pause()
            task_id = found.group(1)
            task = self.timed("task", "GET", f"/m/tasks/{task_id}/", 200)
            if task is None:
                self.pause()
                continue
            token = TOKEN_RE.search(task.text)
            csrf = CSRF_RE.search(task.text)
            self.pause()
            done = self.timed(
                "complete",
                "POST",
                f"/m/tasks/{task_id}/complete/",
                302,
                data={
                    "outcome": "reached",
                    "note": "",
                    "token": token.group(1) if token else "",
                    "csrfmiddlewaretoken": csrf.group(1) if csrf else "",
                },
            )
            if done is not None:
                if done.headers.get("Location", "").endswith("/m/today/"):
                    self.completed += 1
                else:
                    self.errors += 1
                    self.error_kinds["complete: not recorded"] += 1
            self.pause()


def server_cpu_seconds(pid: int) -> float:
    """CPU time of gunicorn and its workers: the cost per request, whatever else loads the machine."""
    import psutil

    total = 0.0
    master = psutil.Process(pid)
    for process in [master, *master.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def load_average() -> float:
    return os.getloadavg()[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guides", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=200, help="open tasks per guide")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--think", default="1,4", help="think time between requests, min,max seconds")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument("--reuse", action="store_true", help="reuse the database if it was seeded alike")
    args = parser.parse_args()
    think = tuple(float(v) for v in args.think.split(","))
    assert len(think) == 2 and 0 <= think[0] <= think[1], "--think takes min,max"

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    bench_url = database_url(server_url, BENCH_DATABASE)
    os.environ["DATABASE_URL"] = bench_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "scrm.settings.test"
    reuse = args.reuse and database_exists(server_url, BENCH_DATABASE)
    if not reuse:
        recreate_database(server_url, BENCH_DATABASE)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from scrm.models import AuditEvent

    seeded = None
    if reuse:
        seeded = AuditEvent.objects.filter(action="bench.seeded").values_list("changes", flat=True).first()
    if seeded != {"guides": args.guides, "tasks_per_guide": args.tasks}:
        if reuse:
            connections.close_all()
            recreate_database(server_url, BENCH_DATABASE)
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        seed(args.guides, args.tasks)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(f"seeded {args.guides} guides × {args.tasks} tasks in {time.perf_counter() - started:.1f} s")
    else:
        # A reused database starts again from open tasks: the previous run closed some.
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE campaigns_task SET state='open', outcome='', completed_at=NULL, completed_by_id=NULL"
            )
    connections.close_all()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": bench_url, "DJANGO_SETTINGS_MODULE": "scrm.settings.test"}
    server = start_gunicorn(port, args.workers, args.threads, env)
    try:
        wait_ready(base)
        signin_deadline = time.monotonic() + 5 + args.guides * 0.05
        stop_at = signin_deadline + args.seconds
        guides = [
            Guide(base, f"wb{i:04d}", start_at=signin_deadline, stop_at=stop_at, think=think)
            for i in range(args.guides)
        ]
        cpu_before = server_cpu_seconds(server.pid)
        for guide in guides:
            guide.start()
        for guide in guides:
            guide.join(timeout=args.seconds + 120)
        cpu_used = server_cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    samples = [s for g in guides for s in g.samples]
    errors = sum(g.errors for g in guides) + sum(1 for g in guides if not g.signed_in)
    latencies = [seconds * 1000 for _step, seconds in samples]
    by_step: dict[str, list[float]] = defaultdict(list)
    for step, seconds in samples:
        by_step[step].append(seconds * 1000)
    print(
        f"guides {args.guides}, tasks/guide {args.tasks}, {args.seconds:.0f} s, "
        f"think {think[0]}–{think[1]} s, "
        f"gunicorn {args.workers}×{args.threads} gthread, completed {sum(g.completed for g in guides)}"
    )
    print(f"{'step':<10}{'requests':>10}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for step in ("today", "task", "complete"):
        values = by_step.get(step, [])
        if values:
            print(
                f"{step:<10}{len(values):>10}{statistics.median(values):>10.1f}"
                f"{percentile(values, 0.95):>10.1f}{max(values):>10.1f}"
            )
    if latencies:
        print(
            f"server CPU {cpu_used * 1000 / len(latencies):.1f} ms per request (gunicorn, all workers); "
            f"load average {load_average():.1f} on {os.cpu_count()} cores"
        )
    kinds: dict[str, int] = defaultdict(int)
    for guide in guides:
        for kind, count in guide.error_kinds.items():
            kinds[kind] += count
        if not guide.signed_in:
            kinds["sign-in failed"] += 1
    for kind, count in sorted(kinds.items()):
        print(f"error  {kind}: {count}")
    if not args.keep:
        drop_database(server_url, BENCH_DATABASE)
    result = {
        "bench": "workbench_load",
        "guides": args.guides,
        "requests": len(latencies),
        "rps": round(len(latencies) / args.seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95), 1) if latencies else None,
        "errors": errors,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
