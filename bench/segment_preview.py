"""Benchmark: segment previews (total, per region and store, consent exclusions, masked sample).

Builds its own database ``scrm_bench_segments`` on the server of ``DATABASE_URL`` (never the dev or
test databases), migrates it and fills it in SQL with ``generate_series`` and PostgreSQL's seeded
``random()``: 1,000 stores in 8 regions, 5 guides per store, four tiers, 40 tags (about two per
member), ``--members`` members and ``--orders`` orders with one line each. A fifth of the members never
bought; the others' orders spread over three years, 70% in the home store, the rest online. Member
metrics (last purchase, 12-month orders and spend, average order value, lifecycle stage, RFM cell) are
then computed from the orders in one statement, and the tables are vacuumed and analysed as
autovacuum would.

Five realistic segments, each with 4–6 conditions including at least one over orders or order lines,
are previewed through ``campaigns.segments.preview_segment`` exactly as the admin does (one grouped
count query with the consent exclusions, the store names, and a sample of 20). Each gets one warm-up
and ``--runs`` timed runs. The last line printed is one JSON object::

    {"bench": "segment_preview", "members": N, "orders": M, "median_seconds": S, "worst_seconds": W}

``--keep`` leaves the database for a later ``--reuse``.

    python bench/segment_preview.py [--members 200000] [--orders 2000000] [--runs 3] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _db import database_exists, database_url, drop_database, recreate_database  # noqa: E402
from _fill import CITIES, GIVEN, SURNAMES, insert_regions, sql_array  # noqa: E402

BENCH_DATABASE = "scrm_bench_segments"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
STORES = 1000
GUIDES_PER_STORE = 5
TAGS = 40
CATEGORIES = (
    "护肤",
    "彩妆",
    "香水",
    "身体护理",
    "男士",
    "礼盒",
    "面膜",
    "防晒",
    "洗护",
    "工具",
    "母婴",
    "配饰",
)


def fill(members: int, orders: int) -> dict[str, float]:
    """Everything, set-based; returns seconds per step."""
    from django.db import connection

    timings: dict[str, float] = {}
    cities, surnames, given = sql_array(CITIES), sql_array(SURNAMES), sql_array(GIVEN)
    categories = sql_array(CATEGORIES)
    buyers = max(1, members * 8 // 10)  # a fifth of the members never bought

    def step(name: str, sql: str) -> None:
        started = time.perf_counter()
        cursor.execute(sql)
        timings[name] = round(time.perf_counter() - started, 1)

    with connection.cursor() as cursor:
        # Synthetic data in a throwaway database: the catch-all audit triggers stand aside.
        cursor.execute("SELECT set_config('scrm.app_audited', 'on', false)")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        # Row triggers (audit capture, guards) and foreign-key checks would cost more than the rows:
        # the generated rows are consistent by construction.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SELECT setseed(0.42)")  # the same data on every run
        insert_regions(cursor)
        step(
            "stores",
            f"""
            INSERT INTO stores_store (code, name, region_id, province, city, address, status, opened_on)
            SELECT 'S' || lpad(i::text, 4, '0'), c.city || '第' || i || '号店',
                   r.ids[1 + i % array_length(r.ids, 1)], '', c.city, '', 'open', DATE '2015-01-01' + i
              FROM generate_series(1, {STORES}) AS i,
                   LATERAL (SELECT ({cities})[1 + i % {len(CITIES)}] AS city) c,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_region) r
            """,
        )
        guides = STORES * GUIDES_PER_STORE
        step(
            "guides",
            f"""
            WITH users AS (
                INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                       is_staff, is_active, date_joined)
                SELECT '!', false, 'guide' || i, '', '', '', false, true, now()
                  FROM generate_series(1, {guides}) AS i
                RETURNING id, username
            )
            INSERT INTO stores_guide (user_id, store_id, employee_no, name, mobile, position, status,
                                      joined_on, left_on)
            SELECT u.id, s.ids[1 + (substr(u.username, 6)::int - 1) / {GUIDES_PER_STORE}],
                   'E' || lpad(substr(u.username, 6), 6, '0'), '导购' || substr(u.username, 6), '',
                   'guide', 'active', NULL, NULL
              FROM users u, (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) s
            """,
        )
        cursor.execute(
            """
            INSERT INTO members_tier (code, name, rank, threshold, benefits) VALUES
                ('normal', '普通会员', 1, 0, ''), ('silver', '银卡', 2, 1000, ''),
                ('gold', '金卡', 3, 5000, ''), ('platinum', '白金卡', 4, 20000, '')
            """
        )
        cursor.execute(
            f"""
            INSERT INTO members_tag (name, "group", description)
            SELECT '标签' || i, CASE WHEN i <= 10 THEN '偏好' ELSE '兴趣' END, ''
              FROM generate_series(1, {TAGS}) AS i
            """
        )
        # Member number k (1-based) has id k in this fresh database; its home store is store 1 + k % STORES.
        step(
            "members",
            f"""
            INSERT INTO members_member (
                mobile, name, gender, birthday, birthday_lunar, home_store_id, guide_id, tier_id,
                points_balance, joined_at, join_channel, status, consent_sms, consent_call, consent_wecom,
                consent_email, order_count, total_spend, orders_12m, spend_12m, avg_order_value,
                lifecycle_stage, rfm_cell, created_at, updated_at)
            SELECT '+86' || (ARRAY['138', '139', '150', '186', '177'])[1 + k % 5]
                       || lpad((k / 5)::text, 8, '0'),
                   ({surnames})[1 + k % 20] || ({given})[1 + (k / 20) % 40],
                   (ARRAY['F', 'F', 'M', 'U'])[1 + floor(random() * 4)::int],
                   CASE WHEN random() < 0.15 THEN NULL
                        ELSE DATE '1960-01-01' + floor(random() * 18000)::int END,
                   random() < 0.1,
                   st.ids[1 + k % {STORES}],
                   CASE WHEN random() < 0.7
                        THEN gd.ids[(k % {STORES}) * {GUIDES_PER_STORE} + 1
                                    + (k / {STORES}) % {GUIDES_PER_STORE}]
                   END,
                   ti.ids[1 + (random() > 0.6)::int + (random() > 0.7)::int + (random() > 0.8)::int],
                   0,
                   now() - random() * INTERVAL '1460 days',
                   (ARRAY['store', 'store', 'store', 'tmall', 'jd', 'miniprogram', 'douyin',
                          'wecom'])[1 + floor(random() * 8)::int],
                   'active', random() < 0.5, random() < 0.2, random() < 0.6, random() < 0.1,
                   0, 0, 0, 0, 0, 'no_purchase', '', now(), now()
              FROM generate_series(1, {members}) AS k,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) st,
                   (SELECT array_agg(id ORDER BY store_id, id) AS ids FROM stores_guide) gd,
                   (SELECT array_agg(id ORDER BY rank) AS ids FROM members_tier) ti
            """,
        )
        step(
            "member tags",
            f"""
            INSERT INTO members_membertag (member_id, tag_id, source, added_by_id, added_at)
            SELECT m.id, tg.ids[1 + ((m.id * 7 + j * 13) % {TAGS})], 'import', NULL, now()
              FROM members_member m, generate_series(0, 1) AS j,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM members_tag) tg
             WHERE (m.id + j) % 4 <> 0
            ON CONFLICT DO NOTHING
            """,
        )
        # Secondary indexes are built once after the load, as a bulk load would (much faster than
        # maintaining them row by row); primary keys and unique constraints stay.
        cursor.execute(
            """
            SELECT indexname, indexdef FROM pg_indexes
             WHERE tablename IN ('members_order', 'members_orderline')
               AND indexname NOT IN (SELECT conname FROM pg_constraint)
            """
        )
        secondary = cursor.fetchall()
        for name, _definition in secondary:
            cursor.execute(f'DROP INDEX "{name}"')
        # Order i belongs to a random buyer: on average --orders / (0.8 × --members) orders each.
        step(
            "orders",
            f"""
            INSERT INTO members_order (channel, external_no, member_id, store_id, guide_id, paid_at, amount,
                                       refunded_amount, item_count, status, created_at)
            SELECT CASE WHEN o.online THEN (ARRAY['tmall', 'jd', 'miniprogram', 'douyin'])[1 + i % 4]
                        ELSE 'store' END,
                   'B' || i, o.k,
                   CASE WHEN NOT o.online THEN st.ids[1 + o.k % {STORES}] END, NULL,
                   now() - random() * INTERVAL '1095 days',
                   o.amount,
                   CASE WHEN i % 50 = 0 THEN o.amount WHEN i % 20 = 0 THEN round(o.amount / 3, 2) ELSE 0 END,
                   1,
                   CASE WHEN i % 50 = 0 THEN 'refunded' WHEN i % 20 = 0 THEN 'partially_refunded'
                        ELSE 'paid' END,
                   now()
              FROM generate_series(1, {orders}) AS i,
                   LATERAL (SELECT 1 + floor(random() * {buyers})::int + 0 * i AS k, random() < 0.3 AS online,
                                   (59 + floor(random() * 1900))::numeric(12, 2) AS amount) o,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) st
            """,
        )
        step(
            "order lines",
            f"""
            INSERT INTO members_orderline (order_id, line_no, sku, name, category, quantity, amount)
            SELECT o.id, 1, 'SKU' || lpad(((o.id * 31) % 2000)::text, 4, '0'), '',
                   ({categories})[1 + ((o.id * 31) % 2000) % {len(CATEGORIES)}], 1, o.amount
              FROM members_order o
            """,
        )
        started = time.perf_counter()
        for _name, definition in secondary:
            cursor.execute(definition)
        timings["order indexes"] = round(time.perf_counter() - started, 1)
        # Metrics as members.metrics computes them (paid or partially refunded orders, net of refunds).
        step(
            "metrics",
            """
            WITH agg AS (
                SELECT member_id, MIN(paid_at) AS first_at, MAX(paid_at) AS last_at, COUNT(*) AS n,
                       SUM(amount - refunded_amount) AS spend,
                       COUNT(*) FILTER (WHERE paid_at >= now() - INTERVAL '12 months') AS n12,
                       COALESCE(SUM(amount - refunded_amount)
                                FILTER (WHERE paid_at >= now() - INTERVAL '12 months'), 0) AS spend12
                  FROM members_order
                 WHERE status IN ('paid', 'partially_refunded')
                 GROUP BY member_id
            )
            UPDATE members_member m
               SET first_purchase_at = a.first_at, last_purchase_at = a.last_at, order_count = a.n,
                   total_spend = a.spend, orders_12m = a.n12, spend_12m = a.spend12,
                   avg_order_value = round(a.spend / a.n, 2),
                   lifecycle_stage = CASE WHEN a.last_at < now() - INTERVAL '180 days' THEN 'lost'
                                          WHEN a.last_at < now() - INTERVAL '90 days' THEN 'dormant'
                                          WHEN a.n = 1 THEN 'first_purchase' ELSE 'repeat' END,
                   rfm_cell = (1 + m.id % 5)::text || (1 + m.id % 4)::text || (1 + m.id % 3)::text,
                   metrics_updated_at = now()
              FROM agg a
             WHERE m.id = a.member_id
            """,
        )
        cursor.execute("SET session_replication_role = origin")
        cursor.execute("SELECT set_config('scrm.app_audited', 'off', false)")
    return timings


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (
            "stores_region",
            "stores_store",
            "stores_guide",
            "members_tier",
            "members_tag",
            "members_membertag",
            "members_member",
            "members_order",
            "members_orderline",
        ):
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def segments() -> list[tuple[str, dict, str]]:
    """Five segments HQ would build, each with 4–6 conditions, at least one over orders."""
    from members.models import Tag, Tier
    from stores.models import Region, Store

    tier = {t.code: t.pk for t in Tier.objects.all()}
    region = {r.code: r.pk for r in Region.objects.all()}
    tags = list(Tag.objects.order_by("pk").values_list("pk", flat=True))
    stores = list(Store.objects.order_by("pk").values_list("pk", flat=True)[:50])
    tmall_180 = {"values": ["tmall"], "days": 180}
    store_90 = {"values": ["store"], "days": 90}
    first_tag = {"field": "tags", "op": "has_any", "value": tags[:1]}
    return [
        (
            "lapsed gold skincare buyers in the east",
            {
                "op": "all",
                "items": [
                    {"field": "tier", "op": "in", "value": [tier["gold"], tier["platinum"]]},
                    {"field": "region", "op": "in", "value": [region["EAST"], region["SOUTH"]]},
                    {"field": "days_since_last_purchase", "op": "between", "value": [90, 365]},
                    {"field": "consent_marketing", "op": "granted", "value": "wecom"},
                    {"field": "bought_category", "op": "in", "value": {"values": ["护肤"], "days": 730}},
                ],
            },
            "wecom",
        ),
        (
            "birthdays this week, with a guide, spent 500+ this year",
            {
                "op": "all",
                "items": [
                    {"field": "birthday", "op": "in_next_days", "value": 7},
                    {"field": "has_guide", "op": "is", "value": True},
                    {"field": "lifecycle_stage", "op": "in", "value": ["repeat", "first_purchase"]},
                    {"field": "spend_in_window", "op": "gte", "value": {"days": 365, "value": 500}},
                ],
            },
            "call",
        ),
        (
            "young women in tier-1 cities buying on Tmall, not lately in stores",
            {
                "op": "all",
                "items": [
                    {"field": "gender", "op": "in", "value": ["F"]},
                    {"field": "age", "op": "between", "value": [22, 40]},
                    {"field": "city", "op": "in", "value": ["上海", "北京", "深圳"]},
                    {"field": "bought_through_channel", "op": "in", "value": tmall_180},
                    {"field": "bought_through_channel", "op": "not_in", "value": store_90},
                ],
            },
            "sms",
        ),
        (
            "high value at risk, reachable",
            {
                "op": "all",
                "items": [
                    {"field": "avg_order_value", "op": "gte", "value": 800},
                    {"field": "orders_12m", "op": "gte", "value": 2},
                    {"field": "days_since_last_purchase", "op": "gt", "value": 60},
                    {"field": "tags", "op": "has_any", "value": tags[:3]},
                    {
                        "op": "any",
                        "items": [
                            {"field": "consent_marketing", "op": "granted", "value": "sms"},
                            {"field": "consent_marketing", "op": "granted", "value": "wecom"},
                        ],
                    },
                    {"field": "orders_in_window", "op": "lte", "value": {"days": 60, "value": 0}},
                ],
            },
            "in_store",
        ),
        (
            "new online joiners in 50 stores without a purchase yet",
            {
                "op": "all",
                "items": [
                    {"field": "joined", "op": "in_last_days", "value": 180},
                    {"field": "join_channel", "op": "in", "value": ["miniprogram", "wecom", "douyin"]},
                    {"field": "home_store", "op": "in", "value": stores},
                    {"field": "orders_in_window", "op": "eq", "value": {"days": 180, "value": 0}},
                    {"op": "all", "negate": True, "items": [first_tag]},
                ],
            },
            "wecom",
        ),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--orders", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", default=BENCH_DATABASE, help="name of the throw-away database")
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument("--reuse", action="store_true", help="reuse the database if it has the same size")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    os.environ["DATABASE_URL"] = database_url(server_url, args.database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scrm.settings.test")
    reuse = args.reuse and database_exists(server_url, args.database)
    if not reuse:
        recreate_database(server_url, args.database)

    import django

    django.setup()

    from django.core.management import call_command
    from django.db import connection, connections

    from campaigns.segments import preview_segment
    from members.models import Member, Order

    assert connection.settings_dict["NAME"] == args.database, connection.settings_dict["NAME"]
    if reuse and (Member.objects.count() != args.members or Order.objects.count() != args.orders):
        reuse = False
        connections.close_all()
        recreate_database(server_url, args.database)
    build = {}
    if not reuse:
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        build["migrate"] = round(time.perf_counter() - started, 1)
        build |= fill(args.members, args.orders)
        started = time.perf_counter()
        analyze()
        build["vacuum analyze"] = round(time.perf_counter() - started, 1)
        print("built in " + ", ".join(f"{name} {seconds} s" for name, seconds in build.items()))
    load = os.getloadavg()[0]

    samples: list[float] = []
    print()
    print(f"Segment previews, {args.members:,} members, {args.orders:,} orders, {args.runs} warm runs each")
    header = f"{'segment':<62} {'median s':>8} {'worst s':>8} {'total':>9} {'no consent':>10} {'stores':>6}"
    print(header)
    print("-" * len(header))
    for label, definition, channel in segments():
        preview = preview_segment(definition, channel=channel)  # warm-up
        runs = []
        for _ in range(args.runs):
            started = time.perf_counter()
            preview = preview_segment(definition, channel=channel)
            runs.append(time.perf_counter() - started)
        samples.extend(runs)
        print(
            f"{label:<62} {statistics.median(runs):>8.3f} {max(runs):>8.3f} {preview.total:>9,}"
            f" {preview.excluded_no_consent:>10,} {len(preview.by_store):>6}"
        )
    print(f"load average (1 min) before the runs: {load:.2f} on {os.cpu_count()} cores")

    connections.close_all()
    if not args.keep:
        drop_database(server_url, args.database)
    summary = {
        "bench": "segment_preview",
        "members": args.members,
        "orders": args.orders,
        "median_seconds": round(statistics.median(samples), 3),
        "worst_seconds": round(max(samples), 3),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
