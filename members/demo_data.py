"""A believable demo brand for ``manage.py seed_demo``: the static data and the builder that writes it.

The brand is a fictional premium beauty label (澜悦) with stores in real Chinese cities. Everything
random is drawn from one ``random.Random(seed)`` in a fixed order, and every date is anchored to the
day of the run, so the same seed on the same day gives the same members, mobiles, orders and amounts.

The builder plans the whole brand in memory first (so tiers can follow the orders' spend and consent
flags the consent events), then writes it in one transaction with COPY; the points ledger trigger
and the metrics refresh run exactly as they would for real data.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db import connection, models
from django.utils import timezone
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from scrm import audit
from scrm.audit import Actor
from scrm.models import AuditEvent
from scrm.roles import Role
from stores.models import Guide, Region, Store

from .metrics import refresh_member_metrics
from .models import (
    Channel,
    ConsentRecord,
    ContactChannel,
    ExternalIdentity,
    GuideAssignment,
    Member,
    MemberTag,
    Order,
    OrderLine,
    PointsEntry,
    Tag,
    Tier,
)

DEMO_PASSWORD = "scrm-demo-2026"
DEFAULT_MEMBERS = 20_000
DEFAULT_SEED = 2026
DEFAULT_ORDERS_PER_MEMBER = 7.5
SEEDED_ACTION = "demo.seeded"

# One login per role, printed after every run (the first store's manager and first guide).
HQ_USERS: tuple[tuple[str, Role, str], ...] = (
    ("hq_admin", Role.HQ_ADMIN, "总部管理员"),
    ("hq_operator", Role.HQ_OPERATOR, "会员运营"),
    ("auditor", Role.AUDITOR, "隐私审计"),
)
DEMO_LOGINS: tuple[tuple[Role, str], ...] = (
    (Role.HQ_ADMIN, "hq_admin"),
    (Role.HQ_OPERATOR, "hq_operator"),
    (Role.AUDITOR, "auditor"),
    (Role.STORE_MANAGER, "sh001-01"),
    (Role.GUIDE, "sh001-02"),
)

# --- organisation -----------------------------------------------------------------------------

REGIONS: tuple[tuple[str, str], ...] = (
    ("EAST", "华东"),
    ("NORTH", "华北"),
    ("SOUTH", "华南"),
    ("CENTRAL", "华中"),
    ("SOUTHWEST", "西南"),
    ("NORTHWEST", "西北"),
)

# (code prefix, city, province, region code, size weight, [(store name, address), ...]).
# Stores sit in real shopping centres; the size weight makes first-tier cities busier.
CITIES: tuple[tuple[str, str, str, str, float, tuple[tuple[str, str], ...]], ...] = (
    (
        "SH",
        "上海",
        "上海市",
        "EAST",
        1.5,
        (
            ("上海静安嘉里中心店", "静安区南京西路1515号静安嘉里中心商场B1层"),
            ("上海港汇恒隆广场店", "徐汇区虹桥路1号港汇恒隆广场3层"),
            ("上海正大广场店", "浦东新区陆家嘴西路168号正大广场2层"),
            ("上海五角场合生汇店", "杨浦区翔殷路1099号合生汇1层"),
        ),
    ),
    (
        "BJ",
        "北京",
        "北京市",
        "NORTH",
        1.5,
        (
            ("北京国贸商城店", "朝阳区建国门外大街1号国贸商城B1层"),
            ("北京三里屯太古里店", "朝阳区三里屯路19号太古里南区"),
            ("北京西单大悦城店", "西城区西单北大街131号西单大悦城2层"),
            ("北京五道口购物中心店", "海淀区成府路28号五道口购物中心1层"),
        ),
    ),
    (
        "TJ",
        "天津",
        "天津市",
        "NORTH",
        1.0,
        (
            ("天津恒隆广场店", "和平区南京路219号恒隆广场2层"),
            ("天津大悦城店", "南开区南门外大街2号大悦城1层"),
        ),
    ),
    ("QD", "青岛", "山东省", "NORTH", 0.9, (("青岛万象城店", "市南区山东路6号华润万象城2层"),)),
    (
        "HZ",
        "杭州",
        "浙江省",
        "EAST",
        1.2,
        (
            ("杭州湖滨银泰in77店", "上城区延安路258号湖滨银泰in77 C区1层"),
            ("杭州大厦店", "拱墅区武林广场1号杭州大厦B座1层"),
            ("杭州万象城店", "上城区富春路701号万象城2层"),
        ),
    ),
    (
        "NJ",
        "南京",
        "江苏省",
        "EAST",
        1.1,
        (
            ("南京德基广场店", "玄武区中山路18号德基广场1层"),
            ("南京中央商场店", "秦淮区中山南路79号中央商场2层"),
        ),
    ),
    (
        "SU",
        "苏州",
        "江苏省",
        "EAST",
        1.0,
        (
            ("苏州中心店", "工业园区苏州大道西9号苏州中心商场2层"),
            ("苏州观前街店", "姑苏区观前街245号"),
        ),
    ),
    ("NB", "宁波", "浙江省", "EAST", 0.9, (("宁波天一广场店", "海曙区中山东路188号天一广场1层"),)),
    (
        "GZ",
        "广州",
        "广东省",
        "SOUTH",
        1.3,
        (
            ("广州天河城店", "天河区天河路208号天河城1层"),
            ("广州正佳广场店", "天河区天河路228号正佳广场2层"),
            ("广州太古汇店", "天河区天河路383号太古汇L1层"),
        ),
    ),
    (
        "SZ",
        "深圳",
        "广东省",
        "SOUTH",
        1.3,
        (
            ("深圳万象城店", "罗湖区宝安南路1881号华润万象城2层"),
            ("深圳海岸城店", "南山区文心五路33号海岸城购物中心1层"),
            ("深圳COCO Park店", "福田区福华三路268号星河COCO Park 1层"),
        ),
    ),
    ("XM", "厦门", "福建省", "SOUTH", 0.9, (("厦门中山路店", "思明区中山路138号"),)),
    (
        "CD",
        "成都",
        "四川省",
        "SOUTHWEST",
        1.2,
        (
            ("成都远洋太古里店", "锦江区中纱帽街8号远洋太古里"),
            ("成都IFS国际金融中心店", "锦江区红星路三段1号IFS 2层"),
            ("成都万象城店", "成华区双庆路8号华润万象城1层"),
        ),
    ),
    (
        "CQ",
        "重庆",
        "重庆市",
        "SOUTHWEST",
        1.1,
        (
            ("重庆解放碑店", "渝中区民权路28号英利国际金融中心1层"),
            ("重庆北城天街店", "江北区建新北路16号北城天街1层"),
        ),
    ),
    ("KM", "昆明", "云南省", "SOUTHWEST", 0.8, (("昆明顺城店", "五华区东风西路11号顺城购物中心1层"),)),
    (
        "WH",
        "武汉",
        "湖北省",
        "CENTRAL",
        1.1,
        (
            ("武汉国际广场店", "江汉区解放大道690号武汉国际广场B座1层"),
            ("武汉光谷天地店", "洪山区关山大道519号光谷天地1层"),
        ),
    ),
    (
        "CS",
        "长沙",
        "湖南省",
        "CENTRAL",
        1.0,
        (
            ("长沙IFS国金中心店", "芙蓉区解放西路188号长沙IFS L3层"),
            ("长沙五一广场店", "天心区黄兴中路188号"),
        ),
    ),
    ("ZZ", "郑州", "河南省", "CENTRAL", 0.9, (("郑州大卫城店", "金水区二七路188号丹尼斯大卫城1层"),)),
    (
        "XA",
        "西安",
        "陕西省",
        "NORTHWEST",
        1.0,
        (
            ("西安赛格国际店", "雁塔区长安中路123号赛格国际购物中心2层"),
            ("西安大悦城店", "雁塔区慈恩西路99号大悦城1层"),
        ),
    ),
)
STAFF_PER_STORE = 5  # one store manager (-01) and four guides (-02 … -05)

# --- people -----------------------------------------------------------------------------------

# Common surnames with their approximate share of the population (percent).
SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 7.1),
    ("李", 7.0),
    ("张", 6.7),
    ("刘", 5.4),
    ("陈", 4.6),
    ("杨", 3.1),
    ("黄", 2.4),
    ("赵", 2.3),
    ("吴", 2.0),
    ("周", 1.9),
    ("徐", 1.5),
    ("孙", 1.4),
    ("马", 1.3),
    ("朱", 1.2),
    ("胡", 1.2),
    ("郭", 1.1),
    ("何", 1.0),
    ("林", 1.0),
    ("罗", 0.9),
    ("高", 0.9),
    ("郑", 0.8),
    ("梁", 0.7),
    ("谢", 0.6),
    ("宋", 0.6),
    ("唐", 0.6),
    ("许", 0.5),
    ("韩", 0.5),
    ("邓", 0.5),
    ("冯", 0.5),
    ("曹", 0.5),
    ("彭", 0.4),
    ("曾", 0.4),
    ("肖", 0.4),
    ("田", 0.4),
    ("董", 0.4),
    ("潘", 0.4),
    ("袁", 0.4),
    ("蔡", 0.3),
    ("蒋", 0.3),
    ("余", 0.3),
    ("于", 0.3),
    ("杜", 0.3),
    ("叶", 0.3),
    ("程", 0.3),
    ("魏", 0.3),
    ("苏", 0.3),
    ("吕", 0.3),
    ("丁", 0.3),
    ("任", 0.3),
    ("卢", 0.2),
    ("姚", 0.2),
    ("沈", 0.2),
    ("钟", 0.2),
    ("姜", 0.2),
    ("崔", 0.2),
    ("谭", 0.2),
    ("陆", 0.2),
    ("范", 0.2),
    ("汪", 0.2),
    ("廖", 0.2),
    ("石", 0.2),
    ("金", 0.2),
    ("韦", 0.2),
    ("贾", 0.2),
    ("夏", 0.2),
    ("付", 0.2),
    ("方", 0.2),
    ("邹", 0.1),
    ("熊", 0.1),
    ("白", 0.1),
    ("孟", 0.1),
    ("秦", 0.1),
    ("邱", 0.1),
    ("侯", 0.1),
    ("江", 0.1),
    ("尹", 0.1),
    ("薛", 0.1),
    ("闫", 0.1),
    ("段", 0.1),
    ("雷", 0.1),
    ("龙", 0.1),
    ("黎", 0.1),
    ("史", 0.1),
    ("陶", 0.1),
    ("贺", 0.1),
    ("毛", 0.1),
    ("郝", 0.1),
    ("顾", 0.1),
    ("龚", 0.1),
    ("邵", 0.1),
    ("万", 0.1),
    ("覃", 0.1),
    ("钱", 0.1),
    ("戴", 0.1),
    ("严", 0.1),
    ("莫", 0.1),
    ("孔", 0.1),
    ("向", 0.1),
    ("欧阳", 0.03),
    ("上官", 0.01),
    ("司马", 0.01),
    ("诸葛", 0.01),
)
FEMALE_GIVEN = (
    "静丽敏婷雪琳颖娜欣怡佳倩雅慧晶燕玲萍芳霞洁璐梦瑶诗悦可馨彤涵琪蕾薇岚菲妍月春秀兰凤"
    "婉琳茜蓉露莹娟红艳丹青柔曼妮媛"
)
MALE_GIVEN = "伟强磊军勇杰涛斌超明刚平辉鹏浩宇轩博俊晨凯峰鑫亮波成建国志华东林豪毅帆睿"
NEUTRAL_GIVEN = "文思子一嘉晓欣安宁心语若佳天乐星"

# Real mainland mobile prefixes (13x/15x/17x/18x/19x), weighted roughly by how common they are.
MOBILE_PREFIXES: tuple[tuple[str, float], ...] = (
    *((str(p), 3.0) for p in range(130, 140)),
    *((str(p), 2.5) for p in (150, 151, 152, 153, 155, 156, 157, 158, 159)),
    *((str(p), 1.0) for p in (170, 171, 173, 175, 176, 177, 178)),
    *((str(p), 2.8) for p in range(180, 190)),
    *((str(p), 1.0) for p in (191, 193, 195, 196, 197, 198, 199)),
)

# How members joined: (channel, weight, share who get an exclusive guide at join).
JOIN_CHANNELS: tuple[tuple[str, float, float], ...] = (
    (Channel.STORE, 62, 0.90),
    (Channel.MINIPROGRAM, 22, 0.65),
    (Channel.WECOM, 6, 1.00),
    (Channel.TMALL, 6, 0.40),
    (Channel.JD, 4, 0.40),
)

# --- loyalty and tags -------------------------------------------------------------------------

# (code, name, rank, threshold on 12-month spend in yuan, benefits)
TIERS: tuple[tuple[str, str, int, int, str], ...] = (
    ("normal", "普通会员", 1, 0, "消费1元积1分；生日当月双倍积分"),
    ("silver", "银卡", 2, 3_000, "积分1.2倍；生日礼；每季度满300减30券"),
    ("gold", "金卡", 3, 9_000, "积分1.5倍；生日礼；新品优先试用；专属导购一对一服务"),
    ("platinum", "铂金", 4, 20_000, "积分2倍；生日礼；年度VIP沙龙；免费专业肌肤检测；专属客服"),
)

# (name, group, description)
TAGS: tuple[tuple[str, str, str], ...] = (
    ("偏好周末联系", "偏好", "工作日不方便，周末再联系"),
    ("偏好电话沟通", "偏好", "比起文字消息更愿意接电话"),
    ("敏感肌", "肤质", "推荐温和、无香精配方"),
    ("干性肌", "肤质", "重保湿，秋冬重点推荐面霜"),
    ("油性肌", "肤质", "控油清爽型产品"),
    ("新品尝鲜", "兴趣", "新品上市第一时间告知"),
    ("高端护肤", "兴趣", "偏好高端抗老线"),
    ("香水爱好者", "兴趣", "买过香水或香氛"),
    ("彩妆达人", "兴趣", "彩妆复购多"),
    ("母婴", "人群", "孕期或哺乳期，推荐温和产品"),
    ("学生党", "人群", "价格敏感，关注小样和套装"),
    ("职场白领", "人群", "工作日午休和晚间到店"),
    ("团购达人", "行为", "常帮同事朋友拼单"),
    ("礼品购买", "行为", "节日常买礼盒送人"),
)
TAG_SOURCES = {
    "偏好": MemberTag.Source.GUIDE,
    "肤质": MemberTag.Source.GUIDE,
    "兴趣": MemberTag.Source.RULE,
    "人群": MemberTag.Source.MODEL,
    "行为": MemberTag.Source.RULE,
}

# --- products and orders ----------------------------------------------------------------------

# category → (share of order lines, [(sku, product name, list price in yuan, weight), ...])
PRODUCTS: dict[str, tuple[float, tuple[tuple[str, str, int, float], ...]]] = {
    "护肤": (
        0.45,
        (
            ("HF1001", "修护精华露 30ml", 680, 3),
            ("HF1002", "修护精华露 50ml", 980, 2),
            ("HF1003", "玻尿酸保湿爽肤水 200ml", 320, 3),
            ("HF1004", "玻尿酸保湿乳液 120ml", 360, 2.5),
            ("HF1005", "胶原紧致面霜 50g", 1280, 1.5),
            ("HF1006", "焕亮眼霜 15g", 580, 1.5),
            ("HF1007", "舒缓修护面膜 5片装", 198, 3),
            ("HF1008", "清透防晒乳 SPF50+ 50ml", 260, 2),
            ("HF1009", "氨基酸洁面乳 120g", 158, 2.5),
            ("HF1010", "臻致抗老精华 30ml", 1580, 0.8),
        ),
    ),
    "彩妆": (
        0.25,
        (
            ("CZ2001", "丝绒哑光口红 #01 正红", 290, 3),
            ("CZ2002", "丝绒哑光口红 #08 豆沙", 290, 3),
            ("CZ2003", "水光唇釉 #12", 260, 2),
            ("CZ2004", "持妆粉底液 30ml", 420, 2),
            ("CZ2005", "轻薄气垫 15g（含替换装）", 380, 2),
            ("CZ2006", "四色眼影盘 大地色", 360, 1.2),
            ("CZ2007", "定妆散粉 10g", 320, 1),
            ("CZ2008", "防水眉笔", 150, 1.5),
        ),
    ),
    "香水": (
        0.10,
        (
            ("XS3001", "晨曦白茶淡香水 30ml", 580, 2),
            ("XS3002", "晨曦白茶淡香水 100ml", 1180, 1),
            ("XS3003", "玫瑰之境香水 50ml", 980, 1.2),
            ("XS3004", "雪松旷野香水 50ml", 1080, 0.8),
            ("XS3005", "香水小样套装 5×2ml", 260, 1.5),
        ),
    ),
    "身体护理": (
        0.12,
        (
            ("ST4001", "烟酰胺焕白身体乳 250ml", 220, 3),
            ("ST4002", "白茶香氛沐浴露 400ml", 168, 2.5),
            ("ST4003", "玫瑰护手霜 50ml", 98, 3),
            ("ST4004", "海盐磨砂膏 200g", 198, 1.2),
            ("ST4005", "香氛身体精油 100ml", 320, 1),
        ),
    ),
    "礼盒": (
        0.08,
        (
            ("LH5001", "修护精华礼盒", 1680, 1.5),
            ("LH5002", "口红三支礼盒", 780, 2),
            ("LH5003", "节日限定香氛礼盒", 1280, 1.2),
            ("LH5004", "明星护肤套装", 2680, 0.6),
            ("LH5005", "新客体验礼盒", 399, 2),
        ),
    ),
}
LINES_PER_ORDER = ((1, 0.55), (2, 0.28), (3, 0.12), (4, 0.05))
QUANTITIES = ((1, 0.86), (2, 0.11), (3, 0.03))
EVERYDAY_DISCOUNTS = ((100, 0.62), (95, 0.18), (90, 0.12), (88, 0.08))  # percent of list price
PROMO_DISCOUNTS = ((85, 0.5), (80, 0.35), (75, 0.15))

# Member orders by channel, and non-member orders by channel: members buy mostly in store,
# non-members lean to the marketplaces, so about a quarter of all orders are non-member orders.
MEMBER_ORDER_CHANNELS = (
    (Channel.STORE, 0.60),
    (Channel.MINIPROGRAM, 0.22),
    (Channel.TMALL, 0.11),
    (Channel.JD, 0.07),
)
NON_MEMBER_ORDER_CHANNELS = (
    (Channel.STORE, 0.40),
    (Channel.MINIPROGRAM, 0.05),
    (Channel.TMALL, 0.32),
    (Channel.JD, 0.23),
)
NON_MEMBER_SHARE = 0.25
ORDER_WINDOW_DAYS = 360  # 12 months of orders, kept inside the metrics' 365-day window

# Store opening hours 10:00–21:59 and online hours 0–23, weighted to when people actually buy.
STORE_HOURS = tuple(zip(range(10, 22), (3, 4, 5, 5, 4, 4, 5, 6, 8, 9, 8, 5), strict=True))
ONLINE_HOURS = tuple(
    zip(range(24), (3, 2, 1, 1, 1, 1, 1, 2, 3, 4, 4, 5, 6, 5, 4, 4, 4, 5, 6, 7, 9, 10, 9, 6), strict=True)
)

# Points redemptions: (points, gift)
REDEMPTION_GIFTS = ((500, "修护精华小样 5ml"), (1000, "品牌帆布托特包"), (2000, "丝绒哑光口红正装"))

CURRENT_POLICY = "2024-01"
EARLIER_POLICY = "2021-11"  # members who joined before 2024 agreed to the notice in force then


# --- the builder ------------------------------------------------------------------------------


@dataclass
class SeedResult:
    created: bool
    counts: dict[str, int]
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # seconds per stage, for the benchmark
    logins: tuple[tuple[Role, str], ...] = DEMO_LOGINS


@dataclass
class _Staff:
    store: int
    employee_no: str
    name: str
    mobile: str
    position: str
    joined_on: datetime.date


@dataclass
class _Member:
    mobile: str
    name: str
    gender: str
    birthday: datetime.date
    store: int
    joined_at: datetime.datetime
    join_channel: str
    guide: int | None
    first_day: int  # first day of the order window on which the member can buy
    weight: float
    spend_cents: int = 0  # 12-month spend net of refunds, in fen
    tier: int = 0  # index into TIERS
    consent: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Order:
    paid_at: datetime.datetime
    channel: str
    member: int | None
    store: int | None
    guide: int | None
    lines: list[tuple[int, int, int]]  # (product index, quantity, amount in fen)
    amount: int  # fen
    refunded: int = 0
    status: str = Order.Status.PAID
    external_no: str = ""


def _weighted(pairs: Sequence[tuple[Any, float]]) -> tuple[list[Any], list[float]]:
    """Values and cumulative weights, for ``rng.choices(values, cum_weights=...)``."""
    return [v for v, _w in pairs], list(itertools.accumulate(w for _v, w in pairs))


def _fen(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


STORE_HOURS_W = _weighted(STORE_HOURS)
ONLINE_HOURS_W = _weighted(ONLINE_HOURS)
LINES_W = _weighted(LINES_PER_ORDER)
QUANTITIES_W = _weighted(QUANTITIES)
EVERYDAY_W = _weighted(EVERYDAY_DISCOUNTS)
PROMO_W = _weighted(PROMO_DISCOUNTS)


class _Planner:
    """Plans the brand in memory. Every draw comes from ``self.rng`` in a fixed order."""

    def __init__(self, *, members: int, seed: int, orders_per_member: float, today: datetime.date) -> None:
        self.rng = random.Random(seed)
        self.member_count = members
        self.order_count = round(members * orders_per_member)
        self.tz = timezone.get_default_timezone()
        self.anchor = datetime.datetime.combine(today, datetime.time.min, tzinfo=self.tz)
        self.today = today
        self.window_start = self.anchor - datetime.timedelta(days=ORDER_WINDOW_DAYS)
        self.mobiles: set[str] = set()
        self._surnames = _weighted(SURNAMES)
        self._prefixes = _weighted(MOBILE_PREFIXES)
        self.products = [
            (sku, name, category, price)
            for category, (_share, items) in PRODUCTS.items()
            for sku, name, price, _w in items
        ]
        weights: list[float] = []
        for _category, (share, items) in PRODUCTS.items():
            total = sum(item[3] for item in items)
            weights.extend(share * item[3] / total for item in items)
        self._products = (list(range(len(weights))), list(itertools.accumulate(weights)))

    def pick(self, weighted: tuple[list[Any], list[float]]) -> Any:
        """One weighted draw (``rng.choices`` for k=1, without its per-call overhead)."""
        values, cumulative = weighted
        return values[bisect.bisect(cumulative, self.rng.random() * cumulative[-1], 0, len(values) - 1)]

    # people

    def person(self, gender: str | None = None) -> tuple[str, str]:
        """A (name, gender) pair; the given name's characters match the gender."""
        rng = self.rng
        if gender is None:
            gender = rng.choices("FMU", cum_weights=(86, 97, 100))[0]
        surname = self.pick(self._surnames)
        pool = (
            FEMALE_GIVEN
            if gender == "F"
            else MALE_GIVEN
            if gender == "M"
            else rng.choice((FEMALE_GIVEN, MALE_GIVEN))
        )
        first = rng.choice(pool)
        if rng.random() < 0.3:
            return surname + first, gender
        second = rng.choice(pool if rng.random() < 0.75 else NEUTRAL_GIVEN)
        if rng.random() < 0.5:
            first, second = second, first
        if first == second and rng.random() < 0.7:  # 婷婷, 静静 happen, but rarely
            second = rng.choice(pool)
        return surname + first + second, gender

    def mobile(self) -> str:
        rng = self.rng
        while True:
            prefix = self.pick(self._prefixes)
            number = f"+86{prefix}{rng.randrange(100_000_000):08d}"
            if number not in self.mobiles:
                self.mobiles.add(number)
                return number

    def birthday(self) -> datetime.date:
        rng = self.rng
        age = min(65, max(16, round(rng.gauss(33, 9))))
        try:
            same_day = self.today.replace(year=self.today.year - age)
        except ValueError:  # 29 February
            same_day = self.today.replace(year=self.today.year - age, day=28)
        return same_day - datetime.timedelta(days=rng.randrange(365))

    def moment(self, day: datetime.datetime, hours: tuple[list[int], list[float]]) -> datetime.datetime:
        hour = self.pick(hours)
        return day + datetime.timedelta(hours=hour, seconds=self.rng.randrange(3600))

    # organisation

    def plan_stores(self) -> None:
        rng = self.rng
        self.stores: list[dict[str, Any]] = []
        for prefix, city, province, region, size, sites in CITIES:
            for number, (name, address) in enumerate(sites, start=1):
                opened = self.today - datetime.timedelta(days=rng.randrange(365 * 4, 365 * 14))
                self.stores.append(
                    {
                        "code": f"{prefix}{number:03d}",
                        "name": name,
                        "region": region,
                        "province": province,
                        "city": city,
                        "address": address,
                        "opened_on": opened,
                        # The flagship (first) store of a city is the busiest.
                        "weight": size * (1.3 if number == 1 else 1.0) * rng.uniform(0.8, 1.2),
                    }
                )
        self._store_pick = _weighted([(i, s["weight"]) for i, s in enumerate(self.stores)])
        self.stores_by_city: dict[str, list[int]] = {}
        for index, store in enumerate(self.stores):
            self.stores_by_city.setdefault(store["city"], []).append(index)

        self.staff: list[_Staff] = []
        self.staff_by_store: list[list[int]] = []
        latest_start = self.today - datetime.timedelta(days=365 * 3 + 30)
        for index, store in enumerate(self.stores):
            ids = []
            for number in range(1, STAFF_PER_STORE + 1):
                name, _gender = self.person(rng.choices("FM", cum_weights=(85, 100))[0])
                earliest = max(store["opened_on"], self.today - datetime.timedelta(days=365 * 8))
                span = max(1, (latest_start - earliest).days)
                ids.append(len(self.staff))
                self.staff.append(
                    _Staff(
                        store=index,
                        employee_no=f"{store['code']}-{number:02d}",
                        name=name,
                        mobile=self.mobile(),
                        position=Guide.Position.MANAGER if number == 1 else Guide.Position.GUIDE,
                        joined_on=earliest + datetime.timedelta(days=rng.randrange(span)),
                    )
                )
            self.staff_by_store.append(ids)

    # members

    def plan_members(self) -> None:
        rng = self.rng
        channels = _weighted([(c, w) for c, w, _g in JOIN_CHANNELS])
        guided = {c: g for c, _w, g in JOIN_CHANNELS}
        join_days = 365 * 3
        self.members: list[_Member] = []
        for _ in range(self.member_count):
            name, gender = self.person()
            store = self.pick(self._store_pick)
            # Slightly more recent joiners than old ones: the programme grows.
            days_ago = int(join_days * (1 - rng.random() ** 0.85)) + 1
            day = self.anchor - datetime.timedelta(days=days_ago)
            join_channel = self.pick(channels)
            joined_at = self.moment(day, STORE_HOURS_W if join_channel == Channel.STORE else ONLINE_HOURS_W)
            guide = None
            if rng.random() < guided[join_channel]:
                # Managers serve members too, but carry a lighter book than the guides.
                guide = rng.choices(self.staff_by_store[store], cum_weights=(0.5, 1.5, 2.5, 3.5, 4.5))[0]
            first_day = max(0, ORDER_WINDOW_DAYS - days_ago)
            activity = 0.0 if rng.random() < 0.10 else rng.lognormvariate(0, 0.9)
            self.members.append(
                _Member(
                    mobile=self.mobile(),
                    name=name,
                    gender=gender,
                    birthday=self.birthday(),
                    store=store,
                    joined_at=joined_at,
                    join_channel=join_channel,
                    guide=guide,
                    first_day=first_day,
                    weight=activity * (ORDER_WINDOW_DAYS - first_day) / ORDER_WINDOW_DAYS,
                )
            )

    # orders

    def _day_weights(self) -> dict[str, tuple[list[int], list[float]]]:
        """Per channel: which day of the window an order falls on (weekends, 3.8, 618, 双11, Christmas)."""
        out = {}
        for channel in (Channel.STORE, Channel.MINIPROGRAM, Channel.TMALL, Channel.JD):
            online = channel != Channel.STORE
            weights = []
            for offset in range(ORDER_WINDOW_DAYS):
                day = (self.window_start + datetime.timedelta(days=offset)).date()
                w = 1.0
                if day.weekday() >= 5:
                    w *= 1.1 if online else 1.5
                md = (day.month, day.day)
                if (11, 1) <= md <= (11, 11):
                    w *= (10 if md == (11, 11) else 4) if online else 1.5
                elif (6, 1) <= md <= (6, 18):
                    w *= (6 if md == (6, 18) else 2.5) if online else 1.3
                elif (3, 6) <= md <= (3, 8) or md == (5, 20):
                    w *= 2
                elif (12, 20) <= md <= (12, 25):
                    w *= 1.8
                weights.append(w)
            out[channel] = (list(range(ORDER_WINDOW_DAYS)), list(itertools.accumulate(weights)))
        return out

    @staticmethod
    def _is_promo(day: datetime.date) -> bool:
        md = (day.month, day.day)
        return (11, 1) <= md <= (11, 11) or (6, 1) <= md <= (6, 18)

    def _basket(self, paid_at: datetime.datetime, online: bool) -> tuple[list[tuple[int, int, int]], int]:
        rng = self.rng
        count = self.pick(LINES_W)
        picked: list[int] = []
        for product in rng.choices(self._products[0], cum_weights=self._products[1], k=count):
            if product not in picked:  # the till merges a repeated SKU into one line
                picked.append(product)
        promo = online and self._is_promo(paid_at.date())
        discounts = PROMO_W if promo else EVERYDAY_W
        percent = self.pick(discounts)
        lines = []
        for product in picked:
            quantity = self.pick(QUANTITIES_W)
            lines.append((product, quantity, self.products[product][3] * 100 * quantity * percent // 100))
        return lines, sum(line[2] for line in lines)

    def plan_orders(self) -> None:
        rng = self.rng
        days = self._day_weights()
        store_hours = STORE_HOURS_W
        online_hours = ONLINE_HOURS_W
        non_members = round(self.order_count * NON_MEMBER_SHARE)
        member_orders = self.order_count - non_members if any(m.weight for m in self.members) else 0
        non_members = self.order_count - member_orders
        orders: list[_Order] = []

        buyers = rng.choices(
            range(len(self.members)),
            cum_weights=list(itertools.accumulate(m.weight for m in self.members)),
            k=member_orders,
        )
        member_channels = _weighted(MEMBER_ORDER_CHANNELS)
        for index in buyers:
            member = self.members[index]
            channel = self.pick(member_channels)
            day = self.pick(days[channel])
            for _retry in range(3):
                if day >= member.first_day:
                    break
                day = self.pick(days[channel])
            else:
                if day < member.first_day:
                    day = rng.randrange(member.first_day, ORDER_WINDOW_DAYS)
            start = self.window_start + datetime.timedelta(days=day)
            paid_at = self.moment(start, store_hours if channel == Channel.STORE else online_hours)
            if paid_at <= member.joined_at:  # bought right after joining (never after the anchor)
                room = int((self.anchor - member.joined_at).total_seconds())
                delay = min(rng.randrange(180, 2400), max(1, room // 2))
                paid_at = member.joined_at + datetime.timedelta(seconds=delay)
            store = guide = None
            if channel == Channel.STORE:
                if rng.random() < 0.88:
                    store = member.store
                else:
                    store = rng.choice(self.stores_by_city[self.stores[member.store]["city"]])
                roll = rng.random()
                if store == member.store and member.guide is not None and roll < 0.65:
                    guide = member.guide
                elif roll < 0.85:
                    guide = rng.choice(self.staff_by_store[store])
            elif channel == Channel.MINIPROGRAM and member.guide is not None and rng.random() < 0.35:
                # A guide shared the mini-program link: the order is credited to the guide's store.
                store, guide = member.store, member.guide
            lines, amount = self._basket(paid_at, channel != Channel.STORE)
            orders.append(_Order(paid_at, channel, index, store, guide, lines, amount))

        other_channels = _weighted(NON_MEMBER_ORDER_CHANNELS)
        for _ in range(non_members):
            channel = self.pick(other_channels)
            day = self.pick(days[channel])
            start = self.window_start + datetime.timedelta(days=day)
            paid_at = self.moment(start, store_hours if channel == Channel.STORE else online_hours)
            store = guide = None
            if channel == Channel.STORE:
                store = self.pick(self._store_pick)
                if rng.random() < 0.55:
                    guide = rng.choice(self.staff_by_store[store])
            lines, amount = self._basket(paid_at, channel != Channel.STORE)
            orders.append(_Order(paid_at, channel, None, store, guide, lines, amount))

        # A few refunds: whole orders, and single lines of multi-line orders.
        for order in orders:
            roll = rng.random()
            if roll < 0.025:
                order.status, order.refunded = Order.Status.REFUNDED, order.amount
            elif roll < 0.04 and len(order.lines) > 1:
                order.status, order.refunded = Order.Status.PARTIALLY_REFUNDED, order.lines[-1][2]

        # Chronological ids and order numbers, as a real system would have issued them.
        order_index = sorted(range(len(orders)), key=lambda i: (orders[i].paid_at, i))
        self.orders = [orders[i] for i in order_index]
        self._number_orders()
        for order in self.orders:
            if order.member is not None and order.status != Order.Status.REFUNDED:
                self.members[order.member].spend_cents += order.amount - order.refunded

    def _number_orders(self) -> None:
        rng = self.rng
        per_store_day: dict[tuple[int, datetime.date], int] = {}
        taken: set[str] = set()
        for order in self.orders:
            local = order.paid_at
            if order.channel == Channel.STORE:
                key = (order.store or 0, local.date())
                per_store_day[key] = per_store_day.get(key, 0) + 1
                number = f"{self.stores[order.store or 0]['code']}-{local:%Y%m%d}-{per_store_day[key]:04d}"
            else:
                while True:
                    if order.channel == Channel.TMALL:
                        number = str(rng.randrange(10**18, 4 * 10**18))
                    elif order.channel == Channel.JD:
                        number = str(rng.randrange(2 * 10**11, 3 * 10**11))
                    else:
                        number = f"MP{local:%Y%m%d%H%M%S}{rng.randrange(10_000):04d}"
                    if number not in taken:
                        break
                taken.add(number)
            order.external_no = number

    # points, tiers, consent, tags, identities

    def plan_points(self) -> None:
        """One earn per paid member order (1 point per yuan), then some redemptions that never overdraw."""
        rng = self.rng
        self.earns: list[tuple[int, int, str, datetime.datetime, datetime.datetime]] = []
        earned: list[list[tuple[datetime.datetime, int]]] = [[] for _ in self.members]
        for order in self.orders:
            if order.member is None or order.status == Order.Status.REFUNDED:
                continue
            points = (order.amount - order.refunded) // 100
            if points <= 0:
                continue
            # Points lapse at the end of the following calendar year (积分次年年底清零).
            expires = datetime.datetime(order.paid_at.year + 1, 12, 31, 23, 59, 59, tzinfo=self.tz)
            self.earns.append((order.member, points, order.external_no, order.paid_at, expires))
            earned[order.member].append((order.paid_at, points))

        self.redemptions: list[tuple[int, int, str, str, datetime.datetime]] = []
        for index, entries in enumerate(earned):
            total = sum(p for _t, p in entries)
            if total < 500 or rng.random() > 0.3:
                continue
            points, gift = rng.choice([g for g in REDEMPTION_GIFTS if g[0] <= total])
            running, reached = 0, entries[-1][0]
            for at, amount in entries:
                running += amount
                if running >= points:
                    reached = at
                    break
            # Any moment after the balance first reached the cost keeps the ledger non-negative.
            room = int((self.anchor - reached).total_seconds()) - 3600
            if room <= 3600:
                continue
            when = reached + datetime.timedelta(seconds=rng.randrange(3600, room))
            ref = f"RD{when:%Y%m%d}{len(self.redemptions) + 1:06d}"
            self.redemptions.append((index, -points, gift, ref, when))

    def plan_tiers(self) -> None:
        thresholds = [t[3] * 100 for t in TIERS]
        for member in self.members:
            member.tier = bisect.bisect_right(thresholds, member.spend_cents) - 1

    def plan_consent(self) -> None:
        """At join most members grant SMS and WeCom marketing; some refuse; a few withdraw later."""
        rng = self.rng
        policy_switch = datetime.datetime(2024, 1, 1, tzinfo=self.tz)
        Action, Source, Method = ConsentRecord.Action, ConsentRecord.Source, ConsentRecord.Method
        self.consents: list[tuple[Any, ...]] = []
        for index, member in enumerate(self.members):
            store = self.stores[member.store]
            at_store = member.join_channel == Channel.STORE
            source = Source.STORE_POS if at_store else Source.MINIPROGRAM
            evidence = (
                {"store": store["code"], "terminal": f"POS-{rng.randrange(1, 4):02d}"}
                if at_store
                else {"page": "pages/member/join", "notice": "隐私政策及会员协议"}
            )
            policy = CURRENT_POLICY if member.joined_at >= policy_switch else EARLIER_POLICY
            grant_rate = {
                ContactChannel.SMS: 0.86,
                ContactChannel.WECOM: 0.9 if member.guide is not None else 0.6,
            }
            for channel, rate in grant_rate.items():
                action = Action.GRANT if rng.random() < rate else Action.REFUSE
                self.consents.append(
                    (
                        index,
                        channel,
                        action,
                        source,
                        Method.CHECKBOX,
                        policy,
                        evidence,
                        None,
                        member.store if at_store else None,
                        member.joined_at,
                    )
                )
                member.consent[channel] = action == Action.GRANT
                withdraw_rate = 0.06 if channel == ContactChannel.SMS else 0.03
                room = int((self.anchor - member.joined_at).total_seconds()) - 2 * 86400
                if action == Action.GRANT and room > 0 and rng.random() < withdraw_rate:
                    when = member.joined_at + datetime.timedelta(seconds=86400 + rng.randrange(room))
                    if channel == ContactChannel.SMS:
                        record = (Source.API, Method.SMS_REPLY, {"reply": "T", "gateway": "sms"}, None, None)
                    elif member.guide is not None:
                        staff = self.staff[member.guide]
                        record = (
                            Source.GUIDE,
                            Method.VERBAL,
                            {"guide": staff.employee_no},
                            member.guide,
                            member.store,
                        )
                    else:
                        record = (
                            Source.MINIPROGRAM,
                            Method.CHECKBOX,
                            {"page": "pages/member/privacy"},
                            None,
                            None,
                        )
                    source_w, method_w, evidence_w, actor, store_w = record
                    self.consents.append(
                        (
                            index,
                            channel,
                            Action.WITHDRAW,
                            source_w,
                            method_w,
                            CURRENT_POLICY,
                            evidence_w,
                            actor,
                            store_w,
                            when,
                        )
                    )
                    member.consent[channel] = False

    def plan_tags(self) -> None:
        rng = self.rng
        by_group: dict[str, list[int]] = {}
        for index, (_name, group, _d) in enumerate(TAGS):
            by_group.setdefault(group, []).append(index)
        names = [t[0] for t in TAGS]
        bought_category: list[set[str]] = [set() for _ in self.members]
        for order in self.orders:
            if order.member is not None:
                for product, _q, _a in order.lines:
                    bought_category[order.member].add(self.products[product][2])
        self.member_tags: list[tuple[int, int, str, int | None, datetime.datetime]] = []
        for index, member in enumerate(self.members):
            age = (self.today - member.birthday).days // 365
            wanted: list[int] = []
            if rng.random() < 0.35:
                wanted.append(rng.choice(by_group["肤质"]))
            if rng.random() < 0.18:
                wanted.append(rng.choice(by_group["偏好"]))
            if member.spend_cents >= 500_000 and rng.random() < 0.6:
                wanted.append(names.index("高端护肤"))
            if "香水" in bought_category[index] and rng.random() < 0.5:
                wanted.append(names.index("香水爱好者"))
            if "彩妆" in bought_category[index] and rng.random() < 0.3:
                wanted.append(names.index("彩妆达人"))
            if "礼盒" in bought_category[index] and rng.random() < 0.4:
                wanted.append(names.index("礼品购买"))
            if age < 23 and rng.random() < 0.6:
                wanted.append(names.index("学生党"))
            elif member.gender == "F" and 25 <= age <= 38 and rng.random() < 0.15:
                wanted.append(names.index("母婴"))
            elif 24 <= age <= 45 and rng.random() < 0.25:
                wanted.append(names.index("职场白领"))
            if rng.random() < 0.12:
                wanted.append(names.index("新品尝鲜"))
            if rng.random() < 0.04:
                wanted.append(names.index("团购达人"))
            room = max(1, int((self.anchor - member.joined_at).total_seconds()) - 60)
            for tag in dict.fromkeys(wanted):
                source = TAG_SOURCES[TAGS[tag][1]]
                added_by = member.guide
                if source == MemberTag.Source.GUIDE and added_by is None:
                    source = MemberTag.Source.IMPORT
                if source != MemberTag.Source.GUIDE:
                    added_by = None
                at = member.joined_at + datetime.timedelta(seconds=rng.randrange(room))
                self.member_tags.append((index, tag, source, added_by, at))

    def plan_identities(self) -> None:
        rng = self.rng
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
        Platform = ExternalIdentity.Platform
        taken: set[tuple[str, str]] = set()
        self.identities: list[tuple[int, str, str, datetime.datetime]] = []
        for index, member in enumerate(self.members):
            wanted = []
            wechat_rate = 0.9 if member.join_channel in (Channel.MINIPROGRAM, Channel.WECOM) else 0.35
            if rng.random() < wechat_rate:
                wanted.append(Platform.WECHAT_UNIONID)
            if member.join_channel == Channel.TMALL:
                wanted.append(Platform.TMALL_OUID)
            if member.join_channel == Channel.JD:
                wanted.append(Platform.JD_PIN)
            for platform in wanted:
                while True:
                    if platform == Platform.WECHAT_UNIONID:
                        external = "o" + "".join(rng.choices(alphabet, k=27))
                    elif platform == Platform.TMALL_OUID:
                        external = "AAH" + "".join(rng.choices(alphabet[:62], k=21))
                    else:
                        external = "jd_" + "".join(rng.choices(alphabet[26:62], k=12))
                    if (platform, external) not in taken:
                        taken.add((platform, external))
                        break
                self.identities.append((index, platform, external, member.joined_at))

    def plan(self) -> _Planner:
        self.plan_stores()
        self.plan_members()
        self.plan_orders()
        self.plan_points()
        self.plan_tiers()
        self.plan_consent()
        self.plan_tags()
        self.plan_identities()
        return self


# --- writing ----------------------------------------------------------------------------------


def _reserve_ids(model: type[models.Model], count: int) -> list[int]:
    """``count`` ids from the table's identity sequence, so COPY can write rows that refer to each other."""
    if count == 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [model._meta.db_table, count],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _copy(model: type[models.Model], fields: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``model``'s table; ``fields`` are model field names in row order."""
    meta = model._meta
    columns = ", ".join(connection.ops.quote_name(meta.get_field(name).column) for name in fields)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        sql = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
        # A writer thread sends while this one formats rows: the server works in parallel.
        with raw.copy(sql, writer=QueuedLibpqWriter(raw)) as copy:
            for row in rows:
                copy.write_row(row)


def demo_is_seeded() -> bool:
    """Seeded before: the marker event exists, or the demo's HQ admin does."""
    return (
        AuditEvent.objects.filter(action=SEEDED_ACTION).exists()
        or get_user_model().objects.filter(username=HQ_USERS[0][0]).exists()
    )


def demo_counts() -> dict[str, int]:
    """What the database holds now (printed after every run, seeded now or before)."""
    counts = {
        "regions": Region.objects.count(),
        "stores": Store.objects.count(),
        "staff": Guide.objects.count(),
        "members": Member.objects.count(),
        "members_with_guide": Member.objects.filter(guide__isnull=False).count(),
        "orders": Order.objects.count(),
        "member_orders": Order.objects.filter(member__isnull=False).count(),
        "order_lines": OrderLine.objects.count(),
        "points_entries": PointsEntry.objects.count(),
        "consent_records": ConsentRecord.objects.count(),
        "member_tags": MemberTag.objects.count(),
        "identities": ExternalIdentity.objects.count(),
    }
    for code, count in (
        Member.objects.values_list("tier__code").annotate(n=models.Count("pk")).order_by("tier__rank")
    ):
        counts[f"tier_{code}"] = count
    return counts


def seed_demo(
    *,
    members: int = DEFAULT_MEMBERS,
    seed: int = DEFAULT_SEED,
    orders_per_member: float = DEFAULT_ORDERS_PER_MEMBER,
    today: datetime.date | None = None,
) -> SeedResult:
    """Build the demo brand unless it is already there; safe to run again (it then adds nothing)."""
    started = time.monotonic()
    # A service: it records its own audit event, so the row-change triggers stand aside.
    with audit.app_audited():
        # Two `make demo` at once must not both seed: the second waits, then sees the marker.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('scrm.seed_demo'))")
        if demo_is_seeded():
            return SeedResult(created=False, counts=demo_counts())
        steps = _Steps()
        plan = _Planner(
            members=members,
            seed=seed,
            orders_per_member=orders_per_member,
            today=today or timezone.localdate(),
        ).plan()
        steps.done("plan")
        _write(plan, steps)
        # Metrics as of the anchor, so the same seed on the same day gives the same values.
        refresh_member_metrics(None, now=plan.anchor)
        steps.done("metrics")
        counts = demo_counts()
        audit.record(
            Actor.system("seed_demo"),
            SEEDED_ACTION,
            target_type="demo",
            target_id=seed,
            changes={"members_requested": members, "orders_per_member": orders_per_member, **counts},
        )
        steps.done("audit")
    steps.done("commit")
    return SeedResult(created=True, counts=counts, seconds=time.monotonic() - started, steps=steps.seconds)


class _Steps:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def _write(plan: _Planner, steps: _Steps) -> None:
    User = get_user_model()
    password = make_password(DEMO_PASSWORD)  # hashed once: PBKDF2 per user would take a minute
    anchor = plan.anchor
    groups = {g.name: g for g in Group.objects.filter(name__in=[r.value for r in Role])}

    regions = {r.code: r for r in Region.objects.bulk_create([Region(code=c, name=n) for c, n in REGIONS])}
    stores = Store.objects.bulk_create(
        [
            Store(
                code=s["code"],
                name=s["name"],
                region=regions[s["region"]],
                province=s["province"],
                city=s["city"],
                address=s["address"],
                opened_on=s["opened_on"],
            )
            for s in plan.stores
        ]
    )
    store_ids = [s.pk for s in stores]

    hq_users = User.objects.bulk_create(
        [
            User(username=username, first_name=label, is_staff=True, password=password, date_joined=anchor)
            for username, _role, label in HQ_USERS
        ]
    )
    staff_users = User.objects.bulk_create(
        [
            User(username=s.employee_no.lower(), first_name=s.name, password=password, date_joined=anchor)
            for s in plan.staff
        ]
    )
    memberships = [
        User.groups.through(user_id=user.pk, group_id=groups[role].pk)
        for user, (_u, role, _l) in zip(hq_users, HQ_USERS, strict=True)
    ] + [
        User.groups.through(
            user_id=user.pk,
            group_id=groups[Role.STORE_MANAGER if s.position == Guide.Position.MANAGER else Role.GUIDE].pk,
        )
        for user, s in zip(staff_users, plan.staff, strict=True)
    ]
    User.groups.through.objects.bulk_create(memberships)
    guides = Guide.objects.bulk_create(
        [
            Guide(
                user=user,
                store_id=store_ids[s.store],
                employee_no=s.employee_no,
                name=s.name,
                mobile=s.mobile,
                position=s.position,
                joined_on=s.joined_on,
            )
            for user, s in zip(staff_users, plan.staff, strict=True)
        ]
    )
    guide_ids = [g.pk for g in guides]
    guide_user_ids = [u.pk for u in staff_users]
    tiers = Tier.objects.bulk_create(
        [
            Tier(code=code, name=name, rank=rank, threshold=Decimal(threshold), benefits=benefits)
            for code, name, rank, threshold, benefits in TIERS
        ]
    )
    tags = Tag.objects.bulk_create([Tag(name=n, group=g, description=d) for n, g, d in TAGS])

    steps.done("organisation")
    member_ids = _reserve_ids(Member, len(plan.members))
    _copy(
        Member,
        (
            "id",
            "mobile",
            "name",
            "gender",
            "birthday",
            "home_store",
            "guide",
            "tier",
            "points_balance",
            "joined_at",
            "join_channel",
            "status",
            "consent_sms",
            "consent_call",
            "consent_wecom",
            "consent_email",
            "order_count",
            "total_spend",
            "orders_12m",
            "spend_12m",
            "avg_order_value",
            "lifecycle_stage",
            "rfm_cell",
            "created_at",
            "updated_at",
        ),
        (
            (
                pk,
                m.mobile,
                m.name,
                m.gender,
                m.birthday,
                store_ids[m.store],
                guide_ids[m.guide] if m.guide is not None else None,
                tiers[m.tier].pk,
                0,
                m.joined_at,
                m.join_channel,
                Member.Status.ACTIVE,
                m.consent[ContactChannel.SMS],
                False,
                m.consent[ContactChannel.WECOM],
                False,
                0,
                0,
                0,
                0,
                0,
                Member.Lifecycle.NO_PURCHASE,
                "",
                m.joined_at,
                m.joined_at,
            )
            for pk, m in zip(member_ids, plan.members, strict=True)
        ),
    )
    _copy(
        GuideAssignment,
        ("member", "guide", "started_at", "reason"),
        (
            (pk, guide_ids[m.guide], m.joined_at, GuideAssignment.Reason.JOINED)
            for pk, m in zip(member_ids, plan.members, strict=True)
            if m.guide is not None
        ),
    )

    steps.done("members")
    order_ids = _reserve_ids(Order, len(plan.orders))
    _copy(
        Order,
        (
            "id",
            "channel",
            "external_no",
            "member",
            "store",
            "guide",
            "paid_at",
            "amount",
            "refunded_amount",
            "item_count",
            "status",
            "created_at",
        ),
        (
            (
                pk,
                o.channel,
                o.external_no,
                member_ids[o.member] if o.member is not None else None,
                store_ids[o.store] if o.store is not None else None,
                guide_ids[o.guide] if o.guide is not None else None,
                o.paid_at,
                _fen(o.amount),
                _fen(o.refunded),
                sum(q for _p, q, _a in o.lines),
                o.status,
                o.paid_at,
            )
            for pk, o in zip(order_ids, plan.orders, strict=True)
        ),
    )
    steps.done("orders")
    products = plan.products
    _copy(
        OrderLine,
        ("order", "line_no", "sku", "name", "category", "quantity", "amount"),
        (
            (pk, number, products[p][0], products[p][1], products[p][2], quantity, _fen(amount))
            for pk, o in zip(order_ids, plan.orders, strict=True)
            for number, (p, quantity, amount) in enumerate(o.lines, start=1)
        ),
    )

    steps.done("order_lines")
    # The ledger trigger moves each member's balance row by row. Earns go in first, so the
    # balance only rises until the redemptions (each affordable by construction) come in.
    Kind = PointsEntry.Kind
    earns = sorted(plan.earns, key=lambda e: (e[0], e[3]))
    _copy(
        PointsEntry,
        ("member", "delta", "kind", "reason", "ref", "expires_at", "created_at"),
        (
            (member_ids[m], points, Kind.EARN, "消费积分", ref, expires, at)
            for m, points, ref, at, expires in earns
        ),
    )
    _copy(
        PointsEntry,
        ("member", "delta", "kind", "reason", "ref", "created_at"),
        (
            (member_ids[m], delta, Kind.REDEEM, f"积分兑换：{gift}", ref, at)
            for m, delta, gift, ref, at in plan.redemptions
        ),
    )

    steps.done("points")
    _copy(
        ConsentRecord,
        (
            "member",
            "channel",
            "purpose",
            "action",
            "source",
            "method",
            "policy_version",
            "evidence",
            "actor",
            "store",
            "at",
        ),
        (
            (
                member_ids[m],
                channel,
                ConsentRecord.Purpose.MARKETING,
                action,
                source,
                method,
                policy,
                Jsonb(evidence),
                guide_user_ids[actor] if actor is not None else None,
                store_ids[store] if store is not None else None,
                at,
            )
            for m, channel, action, source, method, policy, evidence, actor, store, at in plan.consents
        ),
    )
    steps.done("consent")
    _copy(
        MemberTag,
        ("member", "tag", "source", "added_by", "added_at"),
        (
            (member_ids[m], tags[t].pk, source, guide_user_ids[by] if by is not None else None, at)
            for m, t, source, by, at in plan.member_tags
        ),
    )
    _copy(
        ExternalIdentity,
        ("member", "platform", "external_id", "linked_at"),
        ((member_ids[m], platform, external, at) for m, platform, external, at in plan.identities),
    )
    steps.done("tags_identities")
