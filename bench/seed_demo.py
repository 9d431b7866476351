"""Benchmark: ``manage.py seed_demo`` (default 20,000 members, ~150,000 orders) into a fresh database.

Builds its own database ``scrm_bench_seed_demo`` on the server of ``DATABASE_URL`` (never the dev or
test databases), migrates it, then times the seeder exactly as ``make demo`` runs it (same settings
profile, one transaction, COPY). The time per stage comes from the seeder itself.

Baseline, in the same run: the first ``--baseline`` members of the same plan (same names, stores,
guides, dates; fresh mobiles, since the seeded ones are taken) and the first ``--baseline`` orders with
their lines, inserted one by one with plain ``objects.create`` in a transaction that is rolled back,
extrapolated to the seeded counts. It leaves out points, consent, tags and identities, so it understates
the gap. The last line printed is one JSON object for tooling.

    python bench/seed_demo.py [--members 20000] [--seed 2026] [--baseline 1000] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DATABASE = "scrm_bench_seed_demo"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def server_connection(server_url: str):
    import psycopg

    return psycopg.connect(database_url(server_url, "postgres"), autocommit=True)


def recreate_bench_database(server_url: str) -> None:
    with server_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')


def drop_bench_database(server_url: str) -> None:
    with server_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')


def baseline_seconds_per_row(*, slice_size: int, seed: int, today: datetime.date) -> tuple[float, float]:
    """Seconds per member and per order (with its lines) through plain ``objects.create``, rolled back.

    The members are the plan's first ``slice_size`` (fresh mobiles: the seeded ones are taken); the
    orders are the first ``slice_size`` the plan draws, written as non-member orders under fresh numbers.
    """
    from django.db import transaction

    from members.demo_data import _fen, _Planner
    from members.models import Member, Order, OrderLine, Tier
    from scrm import audit
    from stores.models import Guide, Store

    plan = _Planner(members=slice_size, seed=seed, orders_per_member=7.5, today=today)
    plan.plan_stores()
    plan.plan_members()
    plan.plan_orders()
    plan.mobiles.update(Member.objects.values_list("mobile", flat=True))  # seeded numbers are taken
    stores = dict(Store.objects.values_list("code", "pk"))
    guides = dict(Guide.objects.values_list("employee_no", "pk"))
    store_id = [stores[s["code"]] for s in plan.stores]
    guide_id = [guides[s.employee_no] for s in plan.staff]
    normal = Tier.objects.get(code="normal")
    members = [
        {
            "mobile": plan.mobile(),
            "name": m.name,
            "gender": m.gender,
            "birthday": m.birthday,
            "home_store_id": store_id[m.store],
            "guide_id": guide_id[m.guide] if m.guide is not None else None,
            "tier": normal,
            "joined_at": m.joined_at,
            "join_channel": m.join_channel,
        }
        for m in plan.members
    ]
    orders = plan.orders[:slice_size]
    # Audited by the caller like the seeder, so the row triggers stand aside for both.
    with transaction.atomic():
        with audit.app_audited():
            started = time.perf_counter()
            for row in members:
                Member.objects.create(**row)
            members_done = time.perf_counter()
            for number, o in enumerate(orders):
                order = Order.objects.create(
                    channel=o.channel,
                    external_no=f"BENCH{number:08d}",
                    store_id=store_id[o.store] if o.store is not None else None,
                    guide_id=guide_id[o.guide] if o.guide is not None else None,
                    paid_at=o.paid_at,
                    amount=_fen(o.amount),
                    refunded_amount=_fen(o.refunded),
                    item_count=sum(q for _p, q, _a in o.lines),
                    status=o.status,
                )
                for line_no, (product, quantity, amount) in enumerate(o.lines, start=1):
                    sku, name, category, _price = plan.products[product]
                    OrderLine.objects.create(
                        order=order,
                        line_no=line_no,
                        sku=sku,
                        name=name,
                        category=category,
                        quantity=quantity,
                        amount=_fen(amount),
                    )
            orders_done = time.perf_counter()
        transaction.set_rollback(True)
    return (members_done - started) / len(members), (orders_done - members_done) / len(orders)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--baseline", type=int, default=1_000, help="members in the plain-create slice")
    parser.add_argument("--keep", action="store_true", help="leave the database for a look afterwards")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    os.environ["DATABASE_URL"] = database_url(server_url, BENCH_DATABASE)
    # The profile `make demo` seeds with, without DEBUG's query log.
    os.environ["DJANGO_SETTINGS_MODULE"] = "scrm.settings.local"
    os.environ["DJANGO_DEBUG"] = "0"

    recreate_bench_database(server_url)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.utils import timezone

        from members.demo_data import seed_demo

        call_command("migrate", verbosity=0, interactive=False)
        today = timezone.localdate()
        started = time.perf_counter()
        result = seed_demo(members=args.members, seed=args.seed, today=today)
        seconds = time.perf_counter() - started
        per_member, per_order = baseline_seconds_per_row(
            slice_size=args.baseline, seed=args.seed, today=today
        )
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_bench_database(server_url)

    orders = result.counts["orders"]
    steps = result.steps
    baseline_members = per_member * args.members
    baseline_orders = per_order * orders
    print(
        f"seed_demo: {args.members:,} members, {orders:,} orders, {result.counts['order_lines']:,} lines, "
        f"{result.counts['points_entries']:,} points entries, {result.counts['consent_records']:,} consent "
        f"records in {seconds:.1f} s "
        f"({args.members / seconds:,.0f} members/s, {orders / seconds:,.0f} orders/s, everything included)"
    )
    print("  stages: " + ", ".join(f"{name} {s:.1f} s" for name, s in steps.items()))
    print(
        f"baseline: plain objects.create in a loop, {args.baseline:,} members and {args.baseline:,} orders "
        f"(with their lines) timed, extrapolated: members {baseline_members:.1f} s "
        f"(seeder's member stage {steps['members']:.1f} s), orders and lines {baseline_orders:.1f} s "
        f"(seeder's {steps['orders'] + steps['order_lines']:.1f} s); "
        f"{baseline_members + baseline_orders:.0f} s before any points, consent, tags or FK checks"
    )
    print(
        json.dumps(
            {
                "bench": "seed_demo",
                "members": args.members,
                "orders": orders,
                "seconds": round(seconds, 2),
                "members_per_s": round(args.members / seconds, 1),
                "orders_per_s": round(orders / seconds, 1),
                "steps": steps,
                "baseline": "objects.create loop over a slice, extrapolated (members; orders with lines)",
                "baseline_slice": args.baseline,
                "baseline_members_seconds": round(baseline_members, 2),
                "baseline_orders_seconds": round(baseline_orders, 2),
                "baseline_members_per_s": round(1 / per_member, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
