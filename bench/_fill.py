"""Synthetic organisation data shared by the benchmarks that fill their own database in SQL."""

from __future__ import annotations

from typing import Any

# 20 surnames and 40 given-name characters: the SQL of the benchmarks indexes them modulo those sizes.
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅鹏飞斌宇浩凯晨琳雪婷颖"
CITIES = ("上海", "北京", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "苏州", "天津")
REGIONS = (
    ("EAST", "华东"),
    ("NORTH", "华北"),
    ("SOUTH", "华南"),
    ("CENTRAL", "华中"),
    ("SOUTHWEST", "西南"),
    ("NORTHWEST", "西北"),
    ("NORTHEAST", "东北"),
    ("HKMO", "港澳"),
)


def sql_array(items: Any) -> str:
    """A PostgreSQL ``ARRAY[...]`` literal of the items as text."""
    return "ARRAY[" + ",".join("'" + str(item).replace("'", "''") + "'" for item in items) + "]"


def insert_regions(cursor: Any) -> None:
    cursor.executemany("INSERT INTO stores_region (code, name) VALUES (%s, %s)", [list(r) for r in REGIONS])


def insert_guides(cursor: Any, *, guides: int, per_store: int, name_sql: str) -> None:
    """``guides`` guides with their logins ``guide<i>``, ``per_store`` to each store in id order.

    ``name_sql``: the guide's name as SQL over ``i`` (1-based).
    """
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
        INSERT INTO stores_guide (user_id, store_id, employee_no, name, mobile, position, status,
                                  joined_on, left_on)
        SELECT u.id, s.ids[1 + (i - 1) / {per_store}], 'E' || lpad(i::text, 6, '0'),
               {name_sql}, '', 'guide', 'active', NULL, NULL
          FROM generate_series(1, {guides}) AS i
          JOIN auth_user u ON u.username = 'guide' || i,
               (SELECT array_agg(id ORDER BY id) AS ids FROM stores_store) s
        """
    )
