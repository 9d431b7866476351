"""Benchmark: orders posted to the REST API (``POST /api/v1/orders/batch/``) under gunicorn.

Builds its own database ``scrm_bench_api`` on the server of ``DATABASE_URL`` (never the dev or test
databases), migrates it and fills it set-based: stores, guides, ``--members`` members and
``--history`` past orders, then the nightly recompute so metrics are current. It creates an API
client with the ``orders:write`` scope, starts the app under gunicorn on loopback
(``scrm.settings.production``), and posts ``--orders`` fresh orders (80% by members named by mobile,
1–3 lines each) in batches of ``--batch`` from ``--concurrency`` keep-alive connections.

Every batch goes the whole way: key check, rate limit (Redis), validation, look-ups, the call of
``members.services.record_orders`` (audit, buyers' metrics, lifecycle, hooks) and the audit of the
call. Afterwards it checks that every buyer's order count equals its orders (metrics current).
The last line printed is one JSON object:
``{"bench": "api_orders", "orders": N, "seconds": S, "orders_per_s": R, "p95_batch_ms": P}``.

    python bench/api_orders.py [--orders 50000] [--batch 500] [--members 100000] [--history 200000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _db import database_url, drop_database, recreate_database  # noqa: E402
from order_ingest import fill  # noqa: E402  (the same synthetic brand as the ingestion benchmark)

BENCH_DATABASE = "scrm_bench_api"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
CATEGORIES = ("护肤", "彩妆", "香水", "个护", "礼盒")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def payloads(
    count: int, batch: int, members: list[tuple[str, str]], stores: list[str], seed: int
) -> list[bytes]:
    """The request bodies, built before the clock starts."""
    from django.utils import timezone

    rng = random.Random(seed)
    now = timezone.now()
    bodies = []
    for start in range(0, count, batch):
        orders = []
        for i in range(start, min(count, start + batch)):
            items = [
                {
                    "sku": f"SKU{rng.randrange(500):04d}",
                    "category": rng.choice(CATEGORIES),
                    "quantity": rng.randint(1, 3),
                    "amount": f"{rng.randrange(20, 600)}.00",
                }
                for _ in range(rng.randint(1, 3))
            ]
            order = {
                "channel": "store",
                "order_no": f"API{i:09d}",
                "paid_at": (now - timedelta(minutes=rng.randrange(600))).isoformat(),
                "amount": f"{sum(int(item['amount'][:-3]) for item in items)}.00",
                "items": items,
            }
            if rng.random() < 0.8:
                mobile, store = rng.choice(members)
                order["member"] = {"mobile": mobile}
                order["store"] = store
            else:
                order["store"] = rng.choice(stores)
            orders.append(order)
        bodies.append(json.dumps({"orders": orders}).encode())
    return bodies


def wait_until_up(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("gunicorn did not start")


def post_all(port: int, key: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], dict]:
    """Post every body from ``concurrency`` keep-alive connections; (seconds, batch latencies, totals)."""
    queue = list(reversed(range(len(bodies))))
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"created": 0, "existing": 0, "failed": 0, "http_errors": 0}
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json", "Accept-Language": "en"}

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                index = queue.pop()
            started = time.perf_counter()
            connection.request("POST", "/api/v1/orders/batch/", body=bodies[index], headers=headers)
            response = connection.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    totals["http_errors"] += 1
                    print(response.status, data[:300], file=sys.stderr)
                    continue
                body = json.loads(data)
                for name in ("created", "existing", "failed"):
                    totals[name] += body[name]
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, totals


def metrics_current(prefix: str) -> bool:
    """Every member who bought in the run has an order count equal to their counted orders."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM members_member m
             WHERE m.id IN (SELECT member_id FROM members_order WHERE external_no LIKE %s)
               AND m.order_count <> (SELECT count(*) FROM members_order o
                                      WHERE o.member_id = m.id AND o.status IN ('paid', 'partially_refunded')
                                        AND o.paid_at <= now())
            """,
            [prefix + "%"],
        )
        return cursor.fetchone()[0] == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=200_000, help="past orders before the run")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="connections posting at once")
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    bench_url = database_url(server_url, BENCH_DATABASE)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings.test")
    recreate_database(server_url, BENCH_DATABASE)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from api.services import create_api_client
    from members.models import Member
    from members.services import recompute_all_member_metrics
    from scrm.audit import Actor
    from stores.models import Store

    assert connection.settings_dict["NAME"] == BENCH_DATABASE, connection.settings_dict["NAME"]
    gunicorn = None
    try:
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        fill(args.members, args.history)
        actor = Actor.system("bench")
        recompute_all_member_metrics(actor=actor)
        _client, key = create_api_client(
            name="bench till", scopes=["orders:write"], rate_limit=1_000_000, actor=actor
        )
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(
            f"built {args.members} members, {args.history} orders in {time.perf_counter() - started:.1f}s",
            flush=True,
        )

        members = list(Member.objects.values_list("mobile", "home_store__code"))
        stores = list(Store.objects.values_list("code", flat=True))
        bodies = payloads(args.orders, args.batch, members, stores, seed=7)
        connections.close_all()

        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "scrm.settings.production",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_SSL_REDIRECT": "False",
            "CACHE_KEY_PREFIX": f"bench-api-{os.getpid()}",
            "DJANGO_LOG_LEVEL": "WARNING",
        }
        gunicorn = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "scrm.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        wait_until_up(port, gunicorn)
        # One small batch first, so every worker has its connection and imports warm.
        warm = payloads(args.workers * 2, 1, members, stores, seed=99)
        warm = [body.replace(b'"API', b'"WARM') for body in warm]
        post_all(port, key, warm, args.workers)

        seconds, latencies, totals = post_all(port, key, bodies, args.concurrency)
        retry_seconds, _retry_latencies, retry = post_all(port, key, bodies[:2], 1)  # a retried batch
        current = metrics_current("API")
    finally:
        if gunicorn is not None:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(timeout=30)
        connections.close_all()
        if not args.keep:
            drop_database(server_url, BENCH_DATABASE)

    p95 = statistics.quantiles(latencies, n=20)[-1] * 1000 if len(latencies) > 1 else latencies[0] * 1000
    print(
        f"posted {args.orders} orders in {len(bodies)} batches of {args.batch} from {args.concurrency} "
        f"connections to {args.workers} gunicorn workers: {seconds:.2f}s, "
        f"median batch {statistics.median(latencies) * 1000:.0f} ms, p95 {p95:.0f} ms; "
        f"created {totals['created']}, existing {totals['existing']}, failed {totals['failed']}, "
        f"HTTP errors {totals['http_errors']}; retried batches created {retry['created']} "
        f"({retry['existing']} existing, {retry_seconds:.2f}s); metrics current: {current}",
        flush=True,
    )
    assert totals["created"] == args.orders and totals["http_errors"] == 0, totals
    assert retry["created"] == 0 and current
    print(
        json.dumps(
            {
                "bench": "api_orders",
                "orders": args.orders,
                "seconds": round(seconds, 2),
                "orders_per_s": round(args.orders / seconds),
                "p95_batch_ms": round(p95),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
