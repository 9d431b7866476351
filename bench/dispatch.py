"""Benchmark: launching a campaign over N eligible members in S stores, until every task is committed.

Builds its own database ``scrm_bench_dispatch`` on the server of ``DATABASE_URL`` (never the dev or
test databases), migrates it and fills it with S stores of five active guides each and N members spread
evenly over them, all consenting on WeCom, a third bound to an exclusive guide. Then it starts one
Celery worker (``-c 2``, prefork) on the Redis of ``REDIS_URL`` and a queue of its own, waits until it is
ready, and times the real path: ``approve_campaign`` + ``launch_campaign`` (the run, its snapshot, the
evaluation sent after commit) → evaluation (frozen audience, one message per store) → one store task
per store → the run is done. The clock stops when the run is marked done, i.e. every task committed.

Then, with the same worker and database, the baseline the issue names: a bare fan-out, one message per
store whose body reads the store's members and does one ``bulk_create`` into the same task table (no
consent, cap, holdout, frozen audience, locks, assignment or audit). On a shared machine the load
drifts; the ratio of the two, measured minutes apart, says more than either figure alone.

Prints the figures, then as its last line one JSON object:
``{"bench": "dispatch", "members": N, "stores": S, "seconds": T, "tasks_per_s": R,
"baseline_tasks_per_s": B, "ratio": R/B}``.

    python bench/dispatch.py [--members 100000] [--stores 200] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import shared_task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _db import database_url, drop_database, recreate_database  # noqa: E402
from _worker import celery_worker_command  # noqa: E402

BENCH_DATABASE = "scrm_bench_dispatch"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
GUIDES_PER_STORE = 5
TIMEOUT_S = 600


def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "scrm.settings.test"
    import django

    django.setup()


def build(members: int, stores: int) -> float:
    """Migrate and seed; the seconds it took (not part of the measurement)."""
    started = time.perf_counter()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from members.models import Member
    from scrm.audit import app_audited
    from stores.models import Guide, Region, Store

    user_model = get_user_model()
    with app_audited():
        region = Region.objects.create(code="BENCH", name="基准")
        made = Store.objects.bulk_create(
            [Store(code=f"D{i:05d}", name=f"门店{i}", region=region, city="上海") for i in range(stores)]
        )
        users = user_model.objects.bulk_create(
            [user_model(username=f"bench-g{i}-{j}") for i in range(stores) for j in range(GUIDES_PER_STORE)]
        )
        Guide.objects.bulk_create(
            [
                Guide(
                    user=users[i * GUIDES_PER_STORE + j],
                    store=store,
                    employee_no=f"D{i:05d}{j}",
                    name=f"导购{i}-{j}",
                )
                for i, store in enumerate(made)
                for j in range(GUIDES_PER_STORE)
            ]
        )
        # Member k belongs to store k mod S; every third one to the store's first guide. Through the ORM
        # so that the seed follows the model as it changes (about 10 s per 100,000 members).
        now = timezone.now()
        first_guide = dict(
            Guide.objects.order_by("store_id", "pk").distinct("store_id").values_list("store_id", "pk")
        )
        batch = []
        for k in range(members):
            store = made[k % stores]
            batch.append(
                Member(
                    mobile=f"+86136{k:08d}",
                    name=f"会员{k}",
                    home_store_id=store.pk,
                    guide_id=first_guide[store.pk] if k % 3 == 0 else None,
                    joined_at=now,
                    consent_wecom=True,
                )
            )
            if len(batch) == 10_000:
                Member.objects.bulk_create(batch)
                batch = []
        Member.objects.bulk_create(batch)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return time.perf_counter() - started


@shared_task(name="bench.dispatch.bare_store_task", acks_late=True)
def bare_store_task(run_id: int, store_id: int) -> int:
    """The baseline: one store's members, one ``bulk_create`` (audit triggers stood aside)."""
    import datetime

    from django.utils import timezone

    from campaigns.models import Task
    from members.models import Member
    from scrm.audit import app_audited

    now = timezone.now()
    members = Member.objects.filter(home_store_id=store_id).values_list("pk", flat=True)
    with app_audited():
        rows = [
            Task(
                run_id=run_id,
                member_id=member_id,
                store_id=store_id,
                channel="wecom",
                title="baseline",
                opens_at=now,
                due_at=now + datetime.timedelta(days=3),
            )
            for member_id in members
        ]
        Task.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def start_worker(queue: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = Path(tempfile.mkstemp(prefix="bench-dispatch-worker-", suffix=".log")[1])
    process = subprocess.Popen(
        celery_worker_command(queue, include="bench.dispatch"),
        cwd=ROOT,
        env={**env, "CELERY_QUEUE": queue, "DJANGO_SETTINGS_MODULE": "scrm.settings.test"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "ready." in log.read_text(errors="replace"):
            return process, log
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the worker did not start; see {log}")


def measure(members: int, stores: int, queue: str) -> dict:
    from campaigns import services
    from campaigns.models import Campaign, CampaignRun, Script, Segment, Task
    from scrm.audit import Actor
    from scrm.celery import app

    app.conf.task_default_queue = queue
    segment = Segment.objects.create(
        name="bench", definition={"op": "all", "items": [{"field": "city", "op": "in", "value": ["上海"]}]}
    )
    script = Script.objects.create(title="bench", body="{name}您好，我是{store}的{guide}。")
    campaign = Campaign.objects.create(name="bench", segment=segment, script=script, channel="wecom")
    actor = Actor.system("bench")

    started = time.perf_counter()
    campaign = services.approve_campaign(campaign, actor=actor)
    run = services.launch_campaign(campaign, actor=actor)
    state = ""
    while time.perf_counter() - started < TIMEOUT_S:
        state = CampaignRun.objects.values_list("state", flat=True).get(pk=run.pk)
        if state in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    run.refresh_from_db()
    tasks = Task.objects.filter(run=run).count()
    evaluated_at = (run.evaluated_at - run.started_at).total_seconds() if run.evaluated_at else None
    return {
        "state": state,
        "seconds": seconds,
        "tasks": tasks,
        "evaluation_seconds": evaluated_at,
        "counters": run.counters,
    }


def measure_baseline(members: int, queue: str) -> float:
    """Seconds from the first publish until the bare fan-out's ``members`` rows are committed."""
    from campaigns.models import Campaign, CampaignRun, Task
    from stores.models import Store

    run = CampaignRun.objects.create(
        campaign=Campaign.objects.get(name="bench"), occurrence="baseline", state="done"
    )
    store_ids = list(Store.objects.order_by("pk").values_list("pk", flat=True))
    started = time.perf_counter()
    for store_id in store_ids:
        bare_store_task.apply_async((run.pk, store_id), queue=queue)
    while time.perf_counter() - started < TIMEOUT_S:
        if Task.objects.filter(run=run).count() >= members:
            break
        time.sleep(0.05)
    return time.perf_counter() - started


def task_times(log: Path) -> dict[str, list[float]]:
    """Seconds per Celery task name, from the worker's "succeeded in" lines."""
    import re

    found: dict[str, list[float]] = {}
    pattern = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded in ([0-9.]+)s")
    for match in pattern.finditer(log.read_text(errors="replace")):
        found.setdefault(match.group(1).rsplit(".", 1)[-1], []).append(float(match.group(2)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--stores", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="leave the bench database in place")
    args = parser.parse_args()
    if args.members < args.stores or args.stores < 1:
        parser.error("--members must be at least --stores, and --stores at least 1")

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    recreate_database(server_url, BENCH_DATABASE)
    env = {**os.environ, "DATABASE_URL": database_url(server_url, BENCH_DATABASE)}
    os.environ.update(env)
    setup_django()
    print(f"seeding {args.members:,} members in {args.stores:,} stores …", flush=True)
    print(f"built in {build(args.members, args.stores):.1f} s", flush=True)

    from django.db import connections

    connections.close_all()
    queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    worker, log = start_worker(queue, env)
    try:
        result = measure(args.members, args.stores, queue)
        result["baseline_seconds"] = measure_baseline(args.members, queue)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        connections.close_all()
        if not args.keep:
            drop_database(server_url, BENCH_DATABASE)
        result["task_times"] = task_times(log)
        log.unlink(missing_ok=True)

    if result["state"] != "done" or result["tasks"] != args.members:
        print(
            f"run ended {result['state']} with {result['tasks']:,} tasks of {args.members:,}", file=sys.stderr
        )
        return 1
    tasks_per_s = result["tasks"] / result["seconds"]
    print(f"evaluation (launch → audience frozen): {result['evaluation_seconds']:.2f} s")
    for name, times in sorted(result["task_times"].items()):
        print(f"{name}: {len(times)} runs, mean {sum(times) / len(times):.3f} s, max {max(times):.3f} s")
    seconds, tasks = result["seconds"], result["tasks"]
    print(f"launch → {tasks:,} tasks committed: {seconds:.2f} s ({tasks_per_s:,.0f} tasks/s)")
    baseline_per_s = args.members / result["baseline_seconds"]
    print(f"baseline, bare fan-out: {result['baseline_seconds']:.2f} s ({baseline_per_s:,.0f} tasks/s)")
    print(
        json.dumps(
            {
                "bench": "dispatch",
                "members": args.members,
                "stores": args.stores,
                "seconds": round(result["seconds"], 2),
                "tasks_per_s": round(tasks_per_s),
                "baseline_tasks_per_s": round(baseline_per_s),
                "ratio": round(tasks_per_s / baseline_per_s, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
