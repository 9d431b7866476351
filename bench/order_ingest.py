"""Benchmark: order ingestion that keeps member metrics, lifecycle stages and transitions current.

Builds its own database ``scrm_bench_orders`` on the server of ``DATABASE_URL`` (never the dev or
test databases), migrates it and fills it set-based: stores, guides, ``--members`` members and
``--history`` past orders, then the nightly recompute so metrics and RFM edges are current.

Then it times, on fresh orders (80% by members, 1–3 lines each, spread over the members):

- the baseline: the same kind of orders and lines inserted in the same batches and the same way
  (column arrays), with nothing else: no lookup of known numbers, no audit, no metrics;
- ``members.services.record_orders`` in batches of ``--batch``: known-number lookup, inserts, audit
  event, the buyers' metrics, stages and lifecycle transitions, and the post-ingest hooks
  (``--without-hooks`` leaves them out, to see what they cost).

The last line printed is one JSON object for tooling.

    python bench/order_ingest.py [--members 100000] [--history 300000] [--orders 20000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _db import database_url, drop_database, recreate_database  # noqa: E402
from _fill import insert_guides  # noqa: E402

BENCH_DATABASE = "scrm_bench_orders"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
STORES = 200
GUIDES_PER_STORE = 4
CATEGORIES = ("护肤", "彩妆", "香水", "个护", "礼盒")


def fill(members: int, history: int) -> None:
    """Stores, guides, members and past orders, all set-based (synthetic data, triggers stand aside)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('scrm.app_audited', 'on', false)")
        cursor.execute("INSERT INTO stores_region (code, name) VALUES ('EAST', '华东'), ('SOUTH', '华南')")
        cursor.execute(
            f"""
            INSERT INTO stores_store (code, name, region_id, province, city, address, status)
            SELECT 'S' || lpad(i::text, 4, '0'), '门店' || i, r.ids[1 + i % 2], '', '上海', '', 'open'
              FROM generate_series(1, {STORES}) AS i,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_region) r
            """
        )
        insert_guides(
            cursor, guides=STORES * GUIDES_PER_STORE, per_store=GUIDES_PER_STORE, name_sql="'导购' || i"
        )
        cursor.execute(
            f"""
            INSERT INTO members_member (
                mobile, name, gender, birthday_lunar, home_store_id, guide_id, points_balance, joined_at,
                join_channel, status, consent_sms, consent_call, consent_wecom, consent_email, order_count,
                total_spend, orders_12m, spend_12m, avg_order_value, lifecycle_stage, rfm_cell, created_at,
                updated_at)
            SELECT '+86138' || lpad(i::text, 8, '0'), '会员' || i, 'U', false, st.ids[1 + i % {STORES}],
                   CASE WHEN i % 10 < 7 THEN gd.ids[(i % {STORES}) * {GUIDES_PER_STORE} + 1 + i % 4] END,
                   0, now() - INTERVAL '800 days', 'store', 'active', i % 2 = 0, false, i % 3 = 0, false,
                   0, 0, 0, 0, 0, 'no_purchase', '', now(), now()
              FROM generate_series(1, {members}) AS i,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) st,
                   (SELECT array_agg(id ORDER BY store_id, id) AS ids FROM stores_guide) gd
            """
        )
        cursor.execute(
            f"""
            INSERT INTO members_order (channel, external_no, member_id, store_id, guide_id, paid_at, amount,
                                       refunded_amount, item_count, status, created_at)
            SELECT 'store', 'H' || i,
                   CASE WHEN i % 5 = 0 THEN NULL ELSE m.ids[1 + (i::bigint * 7919) % {members}] END,
                   st.ids[1 + i % {STORES}], NULL,
                   now() - ((i * 31) % 700) * INTERVAL '1 day', 50 + (i * 37) % 900, 0, 1 + i % 3,
                   'paid', now()
              FROM generate_series(1, {history}) AS i,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM members_member) m,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) st
            """
        )
        cursor.execute("SELECT set_config('scrm.app_audited', 'off', false)")
        cursor.execute("ANALYZE")


def make_inputs(prefix: str, count: int, members: list, stores: list, seed: int) -> list:
    from django.utils import timezone

    from members.services import OrderInput, OrderLineInput

    rng = random.Random(seed)
    now = timezone.now()
    inputs = []
    for i in range(count):
        member = rng.choice(members) if rng.random() < 0.8 else None
        store = member.home_store if member is not None else rng.choice(stores)
        lines = [
            OrderLineInput(
                sku=f"SKU{rng.randrange(500):04d}",
                category=rng.choice(CATEGORIES),
                quantity=rng.randint(1, 3),
                amount=Decimal(rng.randrange(20, 600)),
            )
            for _ in range(rng.randint(1, 3))
        ]
        inputs.append(
            OrderInput(
                channel="store",
                external_no=f"{prefix}{i:08d}",
                paid_at=now - timedelta(minutes=rng.randrange(600)),
                amount=sum((line.amount for line in lines), Decimal(0)),
                member=member,
                store=store,
                lines=lines,
            )
        )
    return inputs


def baseline(inputs: list, batch: int) -> float:
    """Seconds to insert the orders and lines alone, the way record_orders does, in the same batches."""
    from django.db import transaction

    from members.services import _insert_orders
    from scrm import audit

    started = time.perf_counter()
    for start in range(0, len(inputs), batch):
        with transaction.atomic(), audit.app_audited():
            _insert_orders(inputs[start : start + batch])
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=300_000, help="past orders before the run")
    parser.add_argument("--orders", type=int, default=20_000, help="orders ingested in the timed run")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument(
        "--without-hooks", action="store_true", help="time record_orders without the post-ingest hooks"
    )
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    os.environ["DATABASE_URL"] = database_url(server_url, BENCH_DATABASE)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings.test")
    recreate_database(server_url, BENCH_DATABASE)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from members.models import LifecycleTransition, Member
    from members.services import ORDER_HOOKS, recompute_all_member_metrics, record_orders
    from scrm.audit import Actor
    from stores.models import Store

    assert connection.settings_dict["NAME"] == BENCH_DATABASE, connection.settings_dict["NAME"]
    try:
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        fill(args.members, args.history)
        actor = Actor.system("bench")
        recompute_all_member_metrics(actor=actor)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        build_seconds = time.perf_counter() - started
        print(f"built {args.members} members, {args.history} orders in {build_seconds:.1f}s", flush=True)

        members = list(Member.objects.select_related("home_store").order_by("id"))
        stores = list(Store.objects.all())
        base_seconds = baseline(make_inputs("B", args.orders, members, stores, seed=1), args.batch)
        print(f"baseline: {args.orders} orders in {base_seconds:.2f}s", flush=True)

        hooks = [] if args.without_hooks else [getattr(h, "__qualname__", str(h)) for h in ORDER_HOOKS]
        if args.without_hooks:
            ORDER_HOOKS.clear()
        inputs = make_inputs("R", args.orders, members, stores, seed=2)
        transitions_before = LifecycleTransition.objects.count()
        started = time.perf_counter()
        for start in range(0, len(inputs), args.batch):
            record_orders(inputs[start : start + args.batch], actor=actor)
        seconds = time.perf_counter() - started
        transitions = LifecycleTransition.objects.count() - transitions_before
        print(
            f"record_orders: {args.orders} orders in {seconds:.2f}s ({transitions} transitions)", flush=True
        )
    finally:
        connections.close_all()
        if not args.keep:
            drop_database(server_url, BENCH_DATABASE)

    print(
        json.dumps(
            {
                "bench": "order_ingest",
                "orders": args.orders,
                "seconds": round(seconds, 3),
                "orders_per_s": round(args.orders / seconds),
                "baseline_orders_per_s": round(args.orders / base_seconds),
                "batch": args.batch,
                "members": args.members,
                "history_orders": args.history,
                "hooks": hooks,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
