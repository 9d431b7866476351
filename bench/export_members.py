"""Benchmark: exporting members to xlsx in the background, against XlsxWriter writing from memory.

Builds its own database ``scrm_bench_export`` on the server of ``DATABASE_URL`` (never the dev or test
databases), migrates it and fills it with ``--rows`` members in SQL (``generate_series``, the same
brand as ``bench/admin_changelist.py``: 1,000 stores, 5,000 guides, four tiers), then runs two cases,
each in a fresh process so that each peak RSS is its own:

- export: an HQ administrator's export of the whole member changelist through the code path of the
  admin button (``request_export`` → the Celery task, run eagerly in-process → ``run_export``:
  changelist queryset, ``scoped``, ``values_list().iterator()``, XlsxWriter ``constant_memory``);
- baseline: XlsxWriter ``constant_memory`` writing the same cells from memory with ``write_row``. The
  cells are the export's own rows (same columns, masking, labels, local times), the first
  ``min(--rows, BASELINE_ROWS)`` of them, loaded before the clock starts. Writing from memory runs at
  the same rate whatever the row count, so a prefix gives the rate without holding a million rows.
  It runs once before and once after the export and the two are pooled: on a shared machine the
  load drifts, and bracketing the export cancels most of that drift.

Prints a table, then as its last line one JSON object:
``{"bench": "export_members", "rows": N, "seconds": S, "rows_per_s": R, "peak_rss_mb": M,
"baseline_rows_per_s": B, "ratio": R/B}``. ``--keep`` leaves the database for a later ``--reuse``.

    python bench/export_members.py [--rows 1000000] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _db import database_exists, database_url, drop_database, recreate_database  # noqa: E402

BENCH_DATABASE = "scrm_bench_export"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
BASELINE_ROWS = 200_000
BENCH_USER = "bench_export_admin"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """This process's CPU time: unlike the wall clock, barely moved by other load on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "scrm.settings.test"
    import django

    django.setup()


def bench_user():
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    return user_model.objects.filter(username=BENCH_USER).first() or user_model.objects.create_superuser(
        BENCH_USER, "bench@example.com", "bench-only-password"
    )


# --------------------------------------------------------------------------------------------------
# Cases, each run in a process of its own


def case_export(rows: int) -> dict:
    """The admin button's path: request_export, then the task (eager) runs run_export."""
    setup_django()
    from django.conf import settings
    from django.utils import translation

    from scrm.audit import Actor
    from scrm.celery import app
    from scrm.exports import get_source, request_export
    from scrm.models import ExportJob

    app.conf.task_always_eager = True  # the task body runs here, in this process, on commit
    app.conf.task_eager_propagates = True
    user = bench_user()
    media = tempfile.mkdtemp(prefix="scrm-bench-export-")
    settings.MEDIA_ROOT = media
    rss_before = peak_rss_mb()
    with translation.override("zh-hans"):
        started, cpu = time.perf_counter(), cpu_seconds()
        job = request_export(
            get_source("members.member"),
            params={"filters": {}, "pks": None},
            file_format="xlsx",
            actor=Actor.for_user(user),
        )
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    job = ExportJob.objects.get(pk=job.pk)
    assert job.state == ExportJob.State.DONE, (job.state, job.error)
    assert job.rows == rows, (job.rows, rows)
    size = Path(job.file.path).stat().st_size
    job.file.delete(save=False)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": job.rows,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "file_mb": size / 2**20,
    }


def case_baseline(rows: int) -> dict:
    """XlsxWriter constant_memory writing the export's own cells (the first ``rows``) from memory."""
    setup_django()
    import xlsxwriter
    from django.contrib import admin
    from django.db import transaction
    from django.utils import translation

    from members.exports import MEMBER_COLUMNS
    from members.models import Member
    from scrm.exports import cell_rows

    member_admin = admin.site._registry[Member]
    with translation.override("zh-hans"), transaction.atomic():
        queryset = member_admin.export_queryset(bench_user(), {"filters": {}, "pks": None})
        values = queryset.values_list(*[c.path for c in MEMBER_COLUMNS])[:rows].iterator(5000)
        cells = list(cell_rows(values, MEMBER_COLUMNS, masked=False))
        headers = [str(c.header) for c in MEMBER_COLUMNS]
    with tempfile.TemporaryDirectory() as folder:
        started, cpu = time.perf_counter(), cpu_seconds()
        workbook = xlsxwriter.Workbook(
            f"{folder}/baseline.xlsx",
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
                "default_date_format": "yyyy-mm-dd hh:mm:ss",
            },
        )
        sheet = workbook.add_worksheet("会员")
        sheet.write_row(0, 0, headers)
        for number, row in enumerate(cells, start=1):
            sheet.write_row(number, 0, row)
        workbook.close()
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        size = Path(f"{folder}/baseline.xlsx").stat().st_size
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": len(cells),
        "peak_rss_mb": peak_rss_mb(),
        "file_mb": size / 2**20,
    }


CASES = {"export": case_export, "baseline": case_baseline}


def run_case(name: str, rows: int, env: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--case", name, "--rows", str(rows)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------


def build(rows: int, reuse: bool, server_url: str) -> float:
    """Migrate and fill the bench database unless ``--reuse`` finds it with ``rows`` members."""
    setup_django()
    from admin_changelist import analyze, fill  # the same synthetic brand as the changelist bench
    from django.core.management import call_command
    from django.db import connection, connections

    from members.models import Member

    assert connection.settings_dict["NAME"] == BENCH_DATABASE, connection.settings_dict["NAME"]
    if reuse and Member.objects.count() == rows:
        return 0.0
    if reuse:
        connections.close_all()
        recreate_database(server_url, BENCH_DATABASE)
    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    fill(rows)
    analyze()
    bench_user()
    connections.close_all()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the bench database in place")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the bench database if it has --rows members"
    )
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # a child process: one case, one JSON line
        print(json.dumps(CASES[args.case](args.rows)))
        return 0

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    reuse = args.reuse and database_exists(server_url, BENCH_DATABASE)
    if not reuse:
        recreate_database(server_url, BENCH_DATABASE)
    env = {**os.environ, "DATABASE_URL": database_url(server_url, BENCH_DATABASE)}
    os.environ.update(env)
    build_seconds = build(args.rows, reuse, server_url)
    if build_seconds:
        print(f"built {args.rows:,} members in {build_seconds:.1f} s")

    baseline_rows = min(args.rows, BASELINE_ROWS)
    before = run_case("baseline", baseline_rows, env)
    export = run_case("export", args.rows, env)
    after = run_case("baseline", baseline_rows, env)
    baseline = {
        "seconds": before["seconds"] + after["seconds"],
        "cpu_seconds": before["cpu_seconds"] + after["cpu_seconds"],
        "rows": before["rows"] + after["rows"],
        "peak_rss_mb": max(before["peak_rss_mb"], after["peak_rss_mb"]),
        "file_mb": before["file_mb"],
    }
    if not args.keep:
        drop_database(server_url, BENCH_DATABASE)

    rows_per_s = export["rows"] / export["seconds"]
    baseline_rows_per_s = baseline["rows"] / baseline["seconds"]
    print()
    print(f"Member export to xlsx, {args.rows:,} rows, {len(_columns())} columns")
    header = (
        f"{'case':<58} {'seconds':>8} {'rows/s':>9} {'CPU rows/s':>10} {'peak RSS MB':>11} {'file MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, figures in (
        (f"baseline before: xlsxwriter, {baseline_rows:,} rows in memory", before),
        ("export: changelist → scoped → iterator → xlsxwriter (job)", export),
        (f"baseline after: xlsxwriter, {baseline_rows:,} rows in memory", after),
    ):
        print(
            f"{label:<58} {figures['seconds']:>8.1f} {figures['rows'] / figures['seconds']:>9,.0f}"
            f" {figures['rows'] / figures['cpu_seconds']:>10,.0f}"
            f" {figures['peak_rss_mb']:>11.0f} {figures['file_mb']:>8.1f}"
        )
    print(f"(export process before the export: {export['rss_before_mb']:.0f} MB;")
    print(" CPU rows/s counts this process's CPU time only, not PostgreSQL's: a check on a loaded machine)")
    cpu_ratio = (export["rows"] / export["cpu_seconds"]) / (baseline["rows"] / baseline["cpu_seconds"])
    wall_ratio = rows_per_s / baseline_rows_per_s
    print(f"ratio on wall time {wall_ratio:.2f}, on this process's CPU time {cpu_ratio:.2f}")
    summary = {
        "bench": "export_members",
        "rows": args.rows,
        "seconds": round(export["seconds"], 1),
        "rows_per_s": round(rows_per_s),
        "peak_rss_mb": round(export["peak_rss_mb"]),
        "baseline_rows_per_s": round(baseline_rows_per_s),
        "ratio": round(rows_per_s / baseline_rows_per_s, 2),
    }
    print(json.dumps(summary))
    return 0


def _columns():
    from members.exports import MEMBER_COLUMNS

    return MEMBER_COLUMNS


if __name__ == "__main__":
    sys.exit(main())
