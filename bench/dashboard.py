"""Benchmark: the HQ dashboard and a campaign's results page on a big brand.

Builds its own database ``scrm_bench_dashboard`` on the server of ``DATABASE_URL`` (never the dev or
test databases), migrates it and fills it set-based (``generate_series``): 1,000 stores in 8 regions
with 5 guides each, N members (the member table of bench/admin_changelist.py), M orders over the last
two years (three in four by members; store orders at the member's home store, the rest online; a few
refunded), and one finished campaign whose run froze 5 % of the members (10 % holdout) with a task for
each treated member and outcomes recorded. Then it computes the dashboard's facts as the nightly beat
entry does (``refresh_dashboard(full=True)``, timed) and times, through Django's test client signed in
as an HQ administrator, warm: the dashboard (the brand), a region, a store, a guide and the campaign's
results page, each ``--runs`` times after one warm-up request.

Prints the figures, then as its last line one JSON object:
``{"bench": "dashboard", "members": N, "orders": M, "median_ms": A, "worst_ms": B, ...}``.

    python bench/dashboard.py [--members 100000] [--orders 1000000] [--runs 5] [--keep] [--reuse]
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
from admin_changelist import GUIDES_PER_STORE, STORES, fill  # noqa: E402

BENCH_DATABASE = "scrm_bench_dashboard"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
CHANNELS = "ARRAY['store','store','store','store','tmall','jd','miniprogram','douyin']"


def fill_orders(members: int, orders: int) -> None:
    """``orders`` orders over the last 730 days. Member number k (1-based, as bench/admin_changelist
    numbers them) has home store ``stores[1 + k % STORES]`` and, for k % 10 < 7, an exclusive guide."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('scrm.app_audited', 'on', false)")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SELECT min(id) FROM members_member")
        first_member = cursor.fetchone()[0]
        batch = 2_000_000
        for offset in range(0, orders, batch):
            cursor.execute(
                f"""
                INSERT INTO members_order (channel, external_no, member_id, store_id, guide_id, paid_at,
                                           amount, refunded_amount, item_count, status, created_at)
                SELECT ch, 'B' || i, CASE WHEN member THEN {first_member} + k - 1 END,
                       CASE WHEN ch = 'store' THEN st.ids[1 + k % {STORES}] END,
                       CASE WHEN ch = 'store' AND member AND k % 10 < 7 AND i % 2 = 0
                            THEN gd.ids[(k % {STORES}) * {GUIDES_PER_STORE} + 1
                                        + (k / {STORES}) % {GUIDES_PER_STORE}]
                       END,
                       now() - ((i::bigint * 7919) % (730 * 86400)) * INTERVAL '1 second',
                       amount,
                       CASE WHEN i % 50 = 0 THEN amount WHEN i % 33 = 0 THEN round(amount / 5, 2) ELSE 0 END,
                       1 + i % 5,
                       CASE WHEN i % 50 = 0 THEN 'refunded'
                            WHEN i % 33 = 0 THEN 'partially_refunded' ELSE 'paid' END,
                       now()
                  FROM generate_series({offset + 1}, {min(offset + batch, orders)}) AS i,
                       LATERAL (SELECT 1 + (i::bigint * 104729) % {members} AS k,
                                       i % 4 <> 0 AS member,
                                       ({CHANNELS})[1 + (i / 7) % 8] AS ch,
                                       (50 + (i::bigint * 31) % 950)::numeric AS amount) x,
                       (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) st,
                       (SELECT array_agg(id ORDER BY store_id, id) AS ids FROM stores_guide) gd
                """
            )
            print(f"  orders {min(offset + batch, orders):,}", flush=True)
        cursor.execute("SELECT set_config('scrm.app_audited', 'off', false)")


def fill_campaign() -> int:
    """A finished campaign 40 days ago: 5 % of the members, 10 % of them held out, tasks for the rest."""
    from django.db import connection

    from campaigns.models import Campaign, CampaignRun, Script, Segment

    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('scrm.app_audited', 'on', false)")
        segment = Segment.objects.create(name="bench", definition={"op": "all", "items": []})
        script = Script.objects.create(title="bench", body="{name}您好")
        campaign = Campaign.objects.create(
            name="基准活动",
            segment=segment,
            script=script,
            channel="wecom",
            holdout_percent=10,
            attribution_days=7,
            due_days=5,
            status=Campaign.Status.FINISHED,
        )
        run = CampaignRun.objects.create(campaign=campaign, occurrence="bench", state=CampaignRun.State.DONE)
        cursor.execute(
            """
            UPDATE campaigns_campaignrun SET started_at = now() - INTERVAL '40 days',
                   evaluated_at = now() - INTERVAL '40 days',
                   snapshot = jsonb_build_object('opens_at', now() - INTERVAL '40 days',
                                                 'due_at', now() - INTERVAL '35 days', 'due_days', 5)
             WHERE id = %s
            """,
            [run.pk],
        )
        cursor.execute(
            """
            INSERT INTO campaigns_runmember (run_id, member_id, store_id, holdout)
            SELECT %s, m.id, m.home_store_id, m.id %% 10 = 0 FROM members_member m WHERE m.id %% 20 = 3
            """,
            [run.pk],
        )
        cursor.execute(
            """
            INSERT INTO campaigns_task (run_id, member_id, store_id, guide_id, channel, title, priority,
                                        opens_at, due_at, state, outcome, note, cancel_reason,
                                        completed_at, created_at, updated_at)
            SELECT rm.run_id, rm.member_id, rm.store_id,
                   COALESCE(m.guide_id, (SELECT g.id FROM stores_guide g WHERE g.store_id = rm.store_id
                                          ORDER BY g.id LIMIT 1)),
                   'wecom', '基准活动', 5, now() - INTERVAL '40 days', now() - INTERVAL '35 days',
                   CASE WHEN rm.member_id %% 7 = 0 THEN 'expired' WHEN rm.member_id %% 13 = 0 THEN 'cancelled'
                        ELSE 'done' END,
                   CASE WHEN rm.member_id %% 7 = 0 OR rm.member_id %% 13 = 0 THEN ''
                        ELSE (ARRAY['reached', 'no_answer', 'visit_booked', 'declined', 'purchased'])
                             [1 + rm.member_id %% 5]
                   END,
                   '', CASE WHEN rm.member_id %% 7 <> 0 AND rm.member_id %% 13 = 0 THEN 'consent' ELSE '' END,
                   CASE WHEN rm.member_id %% 7 = 0 OR rm.member_id %% 13 = 0 THEN NULL
                        ELSE now() - INTERVAL '40 days' + (rm.member_id %% 6) * INTERVAL '1 day' END,
                   now(), now()
              FROM campaigns_runmember rm JOIN members_member m ON m.id = rm.member_id
             WHERE rm.run_id = %s AND NOT rm.holdout
            """,
            [run.pk],
        )
        cursor.execute("SELECT set_config('scrm.app_audited', 'off', false)")
    return campaign.pk


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("members_member", "members_order", "campaigns_task", "campaigns_runmember"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def timed(client, url: str, runs: int) -> list[float]:
    response = client.get(url)  # warm-up: templates, caches, connection
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help=f"leave {BENCH_DATABASE} in place")
    parser.add_argument("--reuse", action="store_true", help=f"reuse {BENCH_DATABASE} when it has the counts")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    os.environ["DATABASE_URL"] = database_url(server_url, BENCH_DATABASE)
    os.environ["DJANGO_SETTINGS_MODULE"] = "scrm.settings.test"  # DEBUG off, plain static files
    reuse = args.reuse and database_exists(server_url, BENCH_DATABASE)
    if not reuse:
        recreate_database(server_url, BENCH_DATABASE)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, connections
    from django.test import Client
    from django.urls import reverse

    from campaigns.models import Campaign
    from dashboard.refresh import refresh_dashboard
    from members.models import Member, Order
    from scrm.audit import Actor
    from stores.models import Guide, Region, Store

    assert connection.settings_dict["NAME"] == BENCH_DATABASE, connection.settings_dict["NAME"]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    if reuse and (Member.objects.count() != args.members or Order.objects.count() != args.orders):
        reuse = False
        connections.close_all()
        recreate_database(server_url, BENCH_DATABASE)
    if not reuse:
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        fill(args.members)
        print(f"members {args.members:,} in {time.perf_counter() - started:.1f} s", flush=True)
        fill_orders(args.members, args.orders)
        fill_campaign()
        analyze()
        print(f"built in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        counts = refresh_dashboard(actor=Actor.system("bench"), full=True)
        refresh_seconds = time.perf_counter() - started
        print(f"full refresh (nightly) {refresh_seconds:.1f} s: {counts}", flush=True)
    else:
        refresh_seconds = None
    started = time.perf_counter()
    refresh_dashboard(actor=Actor.system("bench"))
    recent_seconds = time.perf_counter() - started
    print(f"recent refresh (every half hour) {recent_seconds:.1f} s", flush=True)

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench_admin").first() or user_model.objects.create_superuser(
        "bench_admin", "bench@example.com", "bench-only-password"
    )
    client = Client()
    client.force_login(user)
    home = reverse("admin:index")
    campaign = Campaign.objects.get(name="基准活动")
    store = Store.objects.order_by("pk").first()
    pages = [
        ("dashboard (brand)", home),
        ("dashboard (region)", f"{home}?region={Region.objects.order_by('pk').first().pk}"),
        ("dashboard (store)", f"{home}?store={store.pk}"),
        ("dashboard (guide)", f"{home}?guide={Guide.objects.filter(store=store).order_by('pk').first().pk}"),
        ("campaign results", reverse("dashboard:campaign", args=[campaign.pk])),
    ]
    every: list[float] = []
    figures = {}
    print()
    print(f"{'page':<24} {'median ms':>9} {'worst ms':>9}")
    for label, url in pages:
        times = timed(client, url, args.runs)
        every += times
        figures[label] = {"median_ms": round(statistics.median(times), 1), "worst_ms": round(max(times), 1)}
        print(f"{label:<24} {statistics.median(times):>9.1f} {max(times):>9.1f}", flush=True)
    connections.close_all()
    if not args.keep:
        drop_database(server_url, BENCH_DATABASE)
    print(
        json.dumps(
            {
                "bench": "dashboard",
                "members": args.members,
                "orders": args.orders,
                "median_ms": round(statistics.median(every), 1),
                "worst_ms": round(max(every), 1),
                "full_refresh_s": round(refresh_seconds, 1) if refresh_seconds is not None else None,
                "recent_refresh_s": round(recent_seconds, 1),
                "pages": figures,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
