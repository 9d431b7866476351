"""Benchmark: the HQ member changelist on a big table (default 1,000,000 members).

Builds its own database ``scrm_bench`` on the server of ``DATABASE_URL`` (never the dev or test
databases), migrates it, fills it with ``generate_series`` in SQL, runs ``VACUUM ANALYZE`` as autovacuum
would, then times the changelist through Django's test client as an HQ superuser:

- first page, filtered by tier, search by mobile, page 5 (and name-prefix / store-code searches);
- the same first page with the stock paginator and full counts (two ``count(*)``), as the baseline.

Each page gets one warm-up request and ``--runs`` timed ones; the figure is the median. The last line
printed is one JSON object for tooling. ``--keep`` leaves the database for a later ``--reuse``.

    python bench/admin_changelist.py [--members N] [--runs 5] [--keep] [--reuse]
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
from _fill import CITIES, GIVEN, SURNAMES, insert_guides, insert_regions, sql_array  # noqa: E402

BENCH_DATABASE = "scrm_bench"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
STORES = 1000
GUIDES_PER_STORE = 5
MOBILE_PREFIXES = ("138", "139", "150", "186", "177")


def mobile_of(i: int) -> str:
    """The mobile the SQL below gives member number ``i`` (1-based)."""
    return f"+86{MOBILE_PREFIXES[i % 5]}{i // 5:08d}"


def fill(members: int) -> None:
    """Regions, stores, guides, tiers and ``members`` members, all set-based."""
    from django.db import connection

    surnames, given, cities = sql_array(SURNAMES), sql_array(GIVEN), sql_array(CITIES)
    prefixes = sql_array(MOBILE_PREFIXES)
    with connection.cursor() as cursor:
        # Synthetic data in a throwaway database: the catch-all audit triggers stand aside.
        cursor.execute("SELECT set_config('scrm.app_audited', 'on', false)")
        cursor.execute("SET synchronous_commit = off")
        insert_regions(cursor)
        cursor.execute(
            f"""
            INSERT INTO stores_store (code, name, region_id, province, city, address, status, opened_on)
            SELECT 'S' || lpad(i::text, 4, '0'),
                   c.city || '第' || i || '号店',
                   r.ids[1 + i % array_length(r.ids, 1)],
                   '', c.city, '', 'open', DATE '2015-01-01' + (i * 3) % 3000
              FROM generate_series(1, {STORES}) AS i,
                   LATERAL (SELECT ({cities})[1 + i % {len(CITIES)}] AS city) c,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_region) r
            """
        )
        insert_guides(
            cursor,
            guides=STORES * GUIDES_PER_STORE,
            per_store=GUIDES_PER_STORE,
            name_sql=f"({surnames})[1 + i % 20] || ({given})[1 + i % 40]",
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
            INSERT INTO members_member (
                mobile, name, gender, birthday, home_store_id, guide_id, tier_id, points_balance,
                joined_at, join_channel, status, consent_sms, consent_call, consent_wecom, consent_email,
                first_purchase_at, last_purchase_at, order_count, total_spend, orders_12m, spend_12m,
                avg_order_value, lifecycle_stage, rfm_cell, metrics_updated_at, created_at, updated_at)
            SELECT '+86' || ({prefixes})[1 + i % 5] || lpad((i / 5)::text, 8, '0'),
                   ({surnames})[1 + i % 20] || ({given})[1 + (i / 20) % 40]
                       || CASE WHEN i % 3 = 0 THEN '' ELSE ({given})[1 + (i / 800) % 40] END,
                   (ARRAY['F', 'M', 'U'])[1 + i % 3],
                   DATE '1960-01-01' + ((i::bigint * 7919) % 18000)::int,
                   st.ids[1 + i % {STORES}],
                   -- 70% have an exclusive guide, one of their home store's (guides are in store order)
                   CASE WHEN i % 10 < 7
                        THEN gd.ids[(i % {STORES}) * {GUIDES_PER_STORE} + 1
                                    + (i / {STORES}) % {GUIDES_PER_STORE}]
                   END,
                   ti.ids[CASE WHEN i % 20 < 12 THEN 1 WHEN i % 20 < 17 THEN 2 WHEN i % 20 < 19 THEN 3
                               ELSE 4 END],
                   0,
                   now() - ((i * 37) % 1095) * INTERVAL '1 day' - (i % 86400) * INTERVAL '1 second',
                   (ARRAY['store', 'tmall', 'jd', 'miniprogram', 'douyin', 'wecom'])[1 + i % 6],
                   'active', i % 2 = 0, i % 5 = 0, i % 3 = 0, false,
                   m.last_at - INTERVAL '200 days', m.last_at, m.orders, m.orders * 199, m.orders_12m,
                   m.orders_12m * 199, CASE WHEN m.orders > 0 THEN 199 ELSE 0 END,
                   CASE WHEN m.orders = 0 THEN 'no_purchase'
                        WHEN m.last_at < now() - INTERVAL '180 days' THEN 'lost'
                        WHEN m.last_at < now() - INTERVAL '90 days' THEN 'dormant'
                        WHEN m.orders = 1 THEN 'first_purchase'
                        ELSE 'repeat' END,
                   CASE WHEN m.orders = 0 THEN '' ELSE '' || (1 + i % 5) || (1 + i % 4) || (1 + i % 3) END,
                   now(), now(), now()
              FROM generate_series(1, {members}) AS i,
                   LATERAL (SELECT i % 8 AS orders, least(i % 8, i % 4) AS orders_12m,
                                   CASE WHEN i % 8 = 0 THEN NULL
                                        ELSE now() - ((i * 13) % 400) * INTERVAL '1 day' END AS last_at) m,
                   (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) st,
                   (SELECT array_agg(id ORDER BY store_id, id) AS ids FROM stores_guide) gd,
                   (SELECT array_agg(id ORDER BY rank) AS ids FROM members_tier) ti
            """
        )
        cursor.execute("SELECT set_config('scrm.app_audited', 'off', false)")


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("stores_region", "stores_store", "stores_guide", "members_tier", "members_member"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def timed(client, url: str, params: dict, runs: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, setup_test_environment, teardown_test_environment

    response = client.get(url, params)  # warm-up: templates, caches, connection
    assert response.status_code == 200, (url, params, response.status_code)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url, params)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    # One more, untimed, instrumented run for the query count and what the page showed.
    setup_test_environment()
    try:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, params)
        changelist = response.context["cl"]
    finally:
        teardown_test_environment()
    return {
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "queries": len(queries.captured_queries),
        "rows": len(changelist.result_list),
        "count": changelist.result_count,
        "estimated": bool(getattr(changelist.paginator, "count_is_estimated", False)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the scrm_bench database in place")
    parser.add_argument("--reuse", action="store_true", help="reuse scrm_bench if it has --members members")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    os.environ["DATABASE_URL"] = database_url(server_url, BENCH_DATABASE)
    # Test settings: DEBUG off and plain static files (no collectstatic manifest needed to render).
    os.environ["DJANGO_SETTINGS_MODULE"] = "scrm.settings.test"

    reuse = args.reuse and database_exists(server_url, BENCH_DATABASE)
    if not reuse:
        recreate_database(server_url, BENCH_DATABASE)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.paginator import Paginator
    from django.db import connection, connections
    from django.test import Client
    from django.urls import reverse

    from members.models import Member, Tier

    assert connection.settings_dict["NAME"] == BENCH_DATABASE, connection.settings_dict["NAME"]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]

    build_seconds = 0.0
    if reuse and Member.objects.count() != args.members:
        reuse = False
        connections.close_all()
        recreate_database(server_url, BENCH_DATABASE)
    if not reuse:
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        migrated = time.perf_counter()
        fill(args.members)
        filled = time.perf_counter()
        analyze()
        build_seconds = time.perf_counter() - started
        print(
            f"built {args.members:,} members in {build_seconds:.1f} s "
            f"(migrate {migrated - started:.1f} s, fill {filled - migrated:.1f} s, "
            f"vacuum analyze {time.perf_counter() - filled:.1f} s)"
        )

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench_admin").first() or user_model.objects.create_superuser(
        "bench_admin", "bench@example.com", "bench-only-password"
    )
    client = Client()
    client.force_login(user)

    url = reverse("admin:members_member_changelist")
    gold = Tier.objects.get(code="gold")
    probe = args.members // 2 + 7
    mobile = mobile_of(probe)
    typed_mobile = f"{mobile[3:6]} {mobile[6:10]} {mobile[10:]}"  # "138 0012 3456", as people type it
    scenarios = [
        ("first page", "first_page_ms", {}),
        ("filtered by tier (gold)", "filtered_ms", {"tier__id__exact": gold.pk}),
        (f"search by mobile ({typed_mobile})", "search_ms", {"q": typed_mobile}),
        ("page 5", "page5_ms", {"p": 5}),
        ("search by name prefix (王)", "name_search_ms", {"q": "王"}),
        ("search by store code (s0042)", "store_search_ms", {"q": "s0042"}),
    ]
    results = {}
    for label, key, params in scenarios:
        results[key] = (label, timed(client, url, params, args.runs))
    assert results["search_ms"][1]["rows"] == 1, "the mobile search must find exactly its member"

    # Baseline: Django's own paginator and the "(N total)" count: two count(*) per page load.
    member_admin = admin.site._registry[Member]
    member_admin.paginator = Paginator
    member_admin.show_full_result_count = True
    try:
        results["baseline_first_page_ms"] = (
            "baseline first page (stock paginator, full counts)",
            timed(client, url, {}, args.runs),
        )
    finally:
        del member_admin.paginator
        del member_admin.show_full_result_count

    print()
    print(f"Member changelist, {args.members:,} members, median of {args.runs} warm runs")
    header = f"{'page':<48} {'median ms':>9} {'min':>7} {'max':>7} {'queries':>7} {'rows':>5} {'count':>12}"
    print(header)
    print("-" * len(header))
    for label, figures in results.values():
        count = f"{'~' if figures['estimated'] else ''}{figures['count']:,}"
        print(
            f"{label:<48} {figures['median_ms']:>9.1f} {figures['min_ms']:>7.1f} {figures['max_ms']:>7.1f}"
            f" {figures['queries']:>7} {figures['rows']:>5} {count:>12}"
        )

    connections.close_all()
    if not args.keep:
        drop_database(server_url, BENCH_DATABASE)

    summary = {"bench": "admin_changelist", "members": args.members}
    summary |= {key: round(figures["median_ms"], 1) for key, (_label, figures) in results.items()}
    if build_seconds:
        summary["build_s"] = round(build_seconds, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
