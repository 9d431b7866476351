"""Benchmark: importing a member workbook of N rows (default 1,000,000) through the import pipeline.

Generates an xlsx of N realistic member rows (Chinese headers, mobiles typed the ways people type
them, dates as date cells and as text, tags, consent columns; about 1% bad rows of every kind) with
XlsxWriter in constant_memory mode, builds its own database ``scrm_bench_import`` on the server of
``DATABASE_URL`` (1,000 stores, 5,000 guides, 4 tiers), then imports the file through the same
function the Celery job and ``manage.py import_file`` call (validate, COPY into staging, one upsert,
one audit event) and times it. In the same run it measures the physical floor as the baseline:
python-calamine reading the same file whole plus a bare ``COPY`` of the same number of rows into an
empty table (each in a fresh process, like the import, so memory figures are comparable).

Peak memory is the peak RSS of the importing process and its children (psutil, sampled).
The last line printed is one JSON object:
``{"bench": "import_members", "rows": N, "seconds": S, "rows_per_s": R, "peak_rss_mb": M,
"baseline_rows_per_s": B, "ratio": R/B}``.

    python bench/import_members.py [--rows N] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DATABASE = "scrm_bench_import"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/scrm"
STORES = 1000
GUIDES_PER_STORE = 5
HEADERS = [
    "手机号",
    "姓名",
    "性别",
    "生日",
    "门店编码",
    "导购工号",
    "会员等级",
    "标签",
    "短信授权",
    "企业微信授权",
    "入会时间",
    "入会渠道",
]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅鹏飞斌宇浩凯晨琳雪婷颖"
TAGS = ["护肤", "彩妆", "香水", "高客单", "敏感肌", "抗老", "学生", "母婴", "男士", "礼盒", "直播", "复购"]
CHANNELS = ["门店", "天猫", "京东", "小程序", "抖音", "企业微信"]
MOBILE_PREFIXES = ("138", "139", "150", "186", "177", "158", "132", "189")


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


# --------------------------------------------------------------------------------------------------
# The file


def mobile_of(i: int) -> str:
    return f"{MOBILE_PREFIXES[i % len(MOBILE_PREFIXES)]}{(i * 7919) % 100_000_000:08d}"


def generate(path: Path, rows: int, *, seed: int = 7) -> dict[str, int]:
    """Write ``rows`` member rows to ``path``; returns how many bad rows of each kind it holds."""
    import xlsxwriter

    rng = random.Random(seed)
    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = workbook.add_worksheet("会员")
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    time_format = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    for column, header in enumerate(HEADERS):
        sheet.write_string(0, column, header)
    bad = {"mobile": 0, "store": 0, "date": 0, "duplicate": 0, "guide": 0}
    tag_pool = ["，".join(rng.sample(TAGS, rng.randint(1, 3))) for _ in range(500)]
    # Excel serials, written as numbers with a date format: exactly what Excel itself stores.
    epoch = datetime.date(1899, 12, 30)
    joined_base = (datetime.datetime(2024, 6, 1, 10, 0) - datetime.datetime(1899, 12, 30)).total_seconds()
    write_string, write_number = sheet.write_string, sheet.write_number
    for r in range(1, rows + 1):
        i = r
        roll = rng.random()
        mobile = mobile_of(i)
        store_no = 1 + i % STORES
        store = f"S{store_no:04d}"
        guide = ""
        if i % 10 < 7:
            guide = f"E{(store_no - 1) * GUIDES_PER_STORE + 1 + i % GUIDES_PER_STORE:06d}"
        birthday: object = datetime.date(1960, 1, 1) + datetime.timedelta(days=(i * 7919) % 16000)
        # ~1% bad rows, spread over the kinds a real file has.
        if roll < 0.003:
            mobile, bad["mobile"] = f"1{i % 1000:03d}", bad["mobile"] + 1
        elif roll < 0.005:
            store, bad["store"] = f"X{i % 97:03d}", bad["store"] + 1
        elif roll < 0.007:
            birthday, bad["date"] = "1990-13-45", bad["date"] + 1
        elif roll < 0.009 and r > 1:
            mobile, bad["duplicate"] = mobile_of(i - 1), bad["duplicate"] + 1
        elif roll < 0.010 and guide:
            guide, bad["guide"] = "E999999", bad["guide"] + 1
        # People type mobiles in many ways; Excel keeps some as numbers.
        style = i % 20
        if style == 0:
            write_string(r, 0, f"+86 {mobile[:3]} {mobile[3:7]} {mobile[7:]}")
        elif style == 1:
            write_string(r, 0, f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}")
        elif style == 2 and mobile.isdigit():
            write_number(r, 0, int(mobile))
        else:
            write_string(r, 0, mobile)
        write_string(
            r, 1, SURNAMES[i % 20] + GIVEN[(i // 20) % 40] + ("" if i % 3 == 0 else GIVEN[(i // 800) % 40])
        )
        if i % 3:
            write_string(r, 2, "女")
        elif i % 2:
            write_string(r, 2, "男")
        if isinstance(birthday, datetime.date):
            if i % 7 == 0:
                write_string(r, 3, f"{birthday.year}/{birthday.month}/{birthday.day}")
            else:
                write_number(r, 3, (birthday - epoch).days, date_format)
        else:
            write_string(r, 3, str(birthday))
        write_string(r, 4, store.lower() if i % 11 == 0 else store)
        if guide:
            write_string(r, 5, guide)
        if i % 4 != 3:
            write_string(r, 6, ("normal", "silver", "gold")[i % 4])
        if i % 3 == 0:
            write_string(r, 7, tag_pool[i % 500])
        write_string(r, 8, "是" if i % 2 == 0 else "否")
        if i % 3 == 0:
            write_string(r, 9, "是")
        write_number(r, 10, (joined_base - (i * 7 % 900_000) * 60) / 86400, time_format)
        write_string(r, 11, CHANNELS[i % len(CHANNELS)])
    workbook.close()
    return bad


# --------------------------------------------------------------------------------------------------
# The database


def server_connection(server_url: str):
    import psycopg

    return psycopg.connect(database_url(server_url, "postgres"), autocommit=True)


def recreate_database(server_url: str) -> None:
    with server_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')


def drop_database(server_url: str) -> None:
    with server_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')


def seed() -> None:
    """Stores S0001…, guides E000001… (five per store, in store order), tiers; set-based."""
    from django.db import connection

    with connection.cursor() as cursor:
        # Reference data in a throwaway database: the catch-all audit triggers stand aside.
        cursor.execute("SELECT set_config('scrm.app_audited', 'on', false)")
        cursor.execute("INSERT INTO stores_region (code, name) VALUES ('EAST', '华东')")
        cursor.execute(
            f"""
            INSERT INTO stores_store (code, name, region_id, province, city, address, status)
            SELECT 'S' || lpad(i::text, 4, '0'), '门店' || i, r.id, '', '上海', '', 'open'
              FROM generate_series(1, {STORES}) AS i, (SELECT id FROM stores_region) r
            """
        )
        guides = STORES * GUIDES_PER_STORE
        cursor.execute(
            f"""
            INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                   is_staff, is_active, date_joined)
            SELECT '!', false, 'guide' || i, '', '', '', false, true, now()
              FROM generate_series(1, {guides}) AS i
            """
        )
        cursor.execute(
            f"""
            INSERT INTO stores_guide (user_id, store_id, employee_no, name, mobile, position, status)
            SELECT u.id, s.id, 'E' || lpad(i::text, 6, '0'), '导购' || i, '', 'guide', 'active'
              FROM generate_series(1, {guides}) AS i
              JOIN auth_user u ON u.username = 'guide' || i
              JOIN stores_store s ON s.code = 'S' || lpad((1 + (i - 1) / {GUIDES_PER_STORE})::text, 4, '0')
            """
        )
        cursor.execute(
            """
            INSERT INTO members_tier (code, name, rank, threshold, benefits) VALUES
                ('normal', '普通会员', 1, 0, ''), ('silver', '银卡', 2, 1000, ''),
                ('gold', '金卡', 3, 5000, '')
            """
        )
        cursor.execute("SELECT set_config('scrm.app_audited', 'off', false)")
        for table in ("stores_store", "stores_guide", "members_tier"):
            cursor.execute(f"ANALYZE {table}")


# --------------------------------------------------------------------------------------------------
# The measured runs, each in a fresh process (so that memory figures are its own)


def child_import(path: str) -> dict:
    import django

    django.setup()
    from scrm.audit import Actor
    from scrm.imports import run_import

    started = time.perf_counter()
    result = run_import("members", path, actor=Actor.system("bench"), dry_run=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "counts": result.counts}


def child_baseline(path: str) -> dict:
    """The floor: calamine reads the same file (whole sheet, in Rust) and COPY writes the same rows."""
    import psycopg
    from python_calamine import CalamineWorkbook

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        columns = ", ".join(f"c{i} text" for i in range(len(HEADERS)))
        conn.execute(f"DROP TABLE IF EXISTS baseline_rows; CREATE TABLE baseline_rows ({columns})")
        conn.commit()
        started = time.perf_counter()
        sheet = CalamineWorkbook.from_path(path).get_sheet_by_index(0)
        rows = 0
        with conn.cursor() as cursor, cursor.copy("COPY baseline_rows FROM STDIN") as copy:
            for values in sheet.iter_rows():
                copy.write_row(values)
                rows += 1
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE baseline_rows")
        conn.commit()
    return {"seconds": seconds, "rows": rows - 1}


def measured(mode: str, path: Path, env: dict) -> tuple[dict, float]:
    """Run ``mode`` in a child process; return its result and its peak RSS in MB (with children)."""
    import psutil

    process = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    peak = 0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss + sum(
                c.memory_info().rss for c in watched.children(recursive=True)
            )
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.02)
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"{mode} run failed ({process.returncode}):\n{output}")
    return json.loads(output.strip().splitlines()[-1]), peak / (1024 * 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument("--fresh", action="store_true", help="regenerate the workbook even if cached")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        mode, path = args.child
        result = child_import(path) if mode == "import" else child_baseline(path)
        print(json.dumps(result))
        return 0

    server_url = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    bench_url = database_url(server_url, BENCH_DATABASE)
    env = {**os.environ, "DATABASE_URL": bench_url, "DJANGO_SETTINGS_MODULE": "scrm.settings.test"}
    env.setdefault("PYTHONPATH", str(ROOT))

    # The workbook is cached (generating it is not what is measured; XlsxWriter needs minutes at 1M).
    cache = ROOT / ".local" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"import_members-{args.rows}-v1.xlsx"
    if args.fresh or not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial.xlsx")
        bad = generate(partial, args.rows)
        partial.replace(path)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s, bad rows: {bad}")
    print(f"workbook: {path.stat().st_size / 1e6:.1f} MB")

    os.environ.update(DATABASE_URL=bench_url, DJANGO_SETTINGS_MODULE="scrm.settings.test")
    recreate_database(server_url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0, interactive=False)
    seed()
    connections.close_all()

    baseline, baseline_rss = measured("baseline", path, env)
    run, rss = measured("import", path, env)

    rows = args.rows
    rows_per_s = rows / run["seconds"]
    baseline_rows_per_s = baseline["rows"] / baseline["seconds"]
    print()
    print(f"Importing {rows:,} member rows (xlsx, {len(HEADERS)} columns)")
    print(f"{'case':<52} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12}")
    print(
        f"{'baseline: calamine read + bare COPY (the floor)':<52} {baseline['seconds']:>8.1f} "
        f"{baseline_rows_per_s:>9,.0f} {baseline_rss:>12.0f}"
    )
    print(
        f"{'import: check + COPY staging + upsert + audit':<52} {run['seconds']:>8.1f} "
        f"{rows_per_s:>9,.0f} {rss:>12.0f}"
    )
    print(f"counts: {run['counts']}")
    if not args.keep:
        drop_database(server_url)
    summary = {
        "bench": "import_members",
        "rows": rows,
        "seconds": round(run["seconds"], 2),
        "rows_per_s": round(rows_per_s),
        "peak_rss_mb": round(rss),
        "baseline_rows_per_s": round(baseline_rows_per_s),
        "ratio": round(rows_per_s / baseline_rows_per_s, 3),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
