"""Writes of the dashboard: recomputing the facts on demand and exporting campaign results (audited)."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import xlsxwriter
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from campaigns.models import Campaign, CampaignRun, Task
from scrm import audit
from scrm.audit import Actor

from .refresh import refresh_dashboard
from .results import results_for


def refresh_now(*, actor: Actor) -> dict[str, int]:
    """What beat does every half hour, now (the button on the dashboard)."""
    return refresh_dashboard(actor=actor, full=False)


def _rate(numerator: Any, denominator: Any) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.0001"))


def _row(row: dict[str, Any]) -> dict[str, Any]:
    created = row.get("created", 0)
    return {
        **row,
        "sales": Decimal(row.get("sales", "0")),
        "orders": row.get("orders", 0),
        "members": row.get("members", 0),
        "reach_rate": _rate(row.get("reached", 0), created),
        "on_time_rate": _rate(row.get("on_time", 0), created),
        "conversion": _rate(row.get("members", 0), row.get("reached", 0)),
    }


def presentable(data: dict[str, Any]) -> dict[str, Any]:
    """The stored JSON with numbers as Decimals and the rates the pages show."""
    tasks = data["tasks"]
    attributed = data["attributed"]
    uplift = data["uplift"]
    treated, holdout = uplift["treated"], uplift["holdout"]
    conversion, sales = uplift.get("conversion"), uplift.get("sales_per_member")
    return {
        **data,
        "computed_at": parse_datetime(data["computed_at"]),
        "tasks": _row({**tasks, **attributed}),
        "attributed": {**attributed, "sales": Decimal(attributed["sales"])},
        "stores": [_row(r) for r in data["stores"]],
        "guides": [_row(r) for r in data["guides"]],
        "uplift": {
            "treated": {
                **treated,
                "sales": Decimal(treated["sales"]),
                "conversion": _rate(treated["buyers"], treated["members"]),
                "sales_per_member": _rate(treated["sales"], treated["members"]),
            },
            "holdout": {
                **holdout,
                "sales": Decimal(holdout["sales"]),
                "conversion": _rate(holdout["buyers"], holdout["members"]),
                "sales_per_member": _rate(holdout["sales"], holdout["members"]),
            },
            "conversion": conversion,
            "sales_per_member": sales,
            "has_holdout": holdout["members"] > 0,
            "small_holdout": 0 < holdout["members"] < 100,
        },
    }


# --------------------------------------------------------------------------------------------------
# Excel


def _pct(value: Any) -> float | None:
    return None if value is None else float(value)


@audit.service
def export_results(campaign: Campaign, run: CampaignRun | None, *, actor: Actor) -> bytes:
    """The results as an xlsx workbook: summary, uplift, per store, per guide. Text is always written
    as text (never a formula), as in every export of the project."""
    data = presentable(results_for(campaign, run))
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(
        buffer, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    )
    bold = book.add_format({"bold": True})
    money = book.add_format({"num_format": "#,##0.00"})
    percent = book.add_format({"num_format": "0.0%"})

    def write(sheet, row: int, col: int, value: Any, fmt=None) -> None:
        if value is None:
            sheet.write_blank(row, col, None)
        elif isinstance(value, str):
            sheet.write_string(row, col, value)
        elif isinstance(value, bool):
            sheet.write_boolean(row, col, value)
        else:
            sheet.write_number(row, col, float(value), fmt)

    summary = book.add_worksheet(_("Summary")[:31])
    tasks = data["tasks"]
    labels_outcome = dict(Task.Outcome.choices)
    labels_reason = dict(Task.CancelReason.choices)
    lines: list[tuple[str, Any, Any]] = [
        (_("Campaign"), campaign.name, None),
        (_("Run"), str(run.occurrence) if run else _("All runs"), None),
        (_("Attribution window (days)"), data["attribution_days"], None),
        (_("Tasks created"), tasks["created"], None),
        (_("Tasks done"), tasks["done"], None),
        (_("Done on time"), tasks["on_time"], None),
        (_("Expired"), tasks["expired"], None),
        (_("Cancelled"), tasks["cancelled"], None),
        (_("Still open"), tasks["open"], None),
        (_("Members reached"), tasks["reached"], None),
        (_("Reach rate"), _pct(tasks["reach_rate"]), percent),
        (_("Attributed orders"), data["attributed"]["orders"], None),
        (_("Members who bought"), data["attributed"]["members"], None),
        (_("Attributed sales"), data["attributed"]["sales"], money),
        (_("Conversion of reached members"), _pct(tasks["conversion"]), percent),
    ]
    lines += [
        (_("Outcome: %(outcome)s") % {"outcome": labels_outcome.get(k, k)}, v, None)
        for k, v in data["outcomes"].items()
    ]
    lines += [
        (_("Cancelled: %(reason)s") % {"reason": labels_reason.get(k, k)}, v, None)
        for k, v in data["cancel_reasons"].items()
    ]
    summary.set_column(0, 0, 34)
    summary.set_column(1, 1, 24)
    for i, (label, value, fmt) in enumerate(lines):
        summary.write_string(i, 0, str(label), bold)
        write(summary, i, 1, value, fmt)

    uplift_sheet = book.add_worksheet(_("Uplift")[:31])
    uplift = data["uplift"]
    headers = [
        _("Measure"),
        _("Treated"),
        _("Holdout"),
        _("Difference"),
        _("Lower bound (95%)"),
        _("Upper bound (95%)"),
        _("p-value"),
        _("Significant"),
    ]
    for col, header in enumerate(headers):
        uplift_sheet.write_string(0, col, str(header), bold)
    uplift_sheet.set_column(0, 0, 26)
    uplift_sheet.set_column(1, 7, 16)
    write(uplift_sheet, 1, 0, str(_("Members")))
    write(uplift_sheet, 1, 1, uplift["treated"]["members"])
    write(uplift_sheet, 1, 2, uplift["holdout"]["members"])
    for row, (label, key, fmt) in enumerate(
        [(_("Conversion"), "conversion", percent), (_("Sales per member"), "sales_per_member", money)],
        start=2,
    ):
        write(uplift_sheet, row, 0, str(label))
        comparison = uplift[key]
        if comparison:
            for col, field in enumerate(("treated", "holdout", "difference", "low", "high"), start=1):
                write(uplift_sheet, row, col, comparison[field], fmt)
            write(uplift_sheet, row, 6, comparison["p_value"])
            write(uplift_sheet, row, 7, str(_("yes") if comparison["significant"] else _("no")))

    def table(title: str, rows: list[dict[str, Any]], first: list[tuple[str, str]]) -> None:
        sheet = book.add_worksheet(title[:31])
        columns = [
            *first,
            (_("Tasks created"), "created"),
            (_("Done"), "done"),
            (_("Done on time"), "on_time"),
            (_("Expired"), "expired"),
            (_("Cancelled"), "cancelled"),
            (_("Reached"), "reached"),
            (_("Reach rate"), "reach_rate"),
            (_("Members who bought"), "members"),
            (_("Attributed orders"), "orders"),
            (_("Attributed sales"), "sales"),
            (_("Conversion of reached members"), "conversion"),
        ]
        for col, (header, _key) in enumerate(columns):
            sheet.write_string(0, col, str(header), bold)
        sheet.set_column(0, len(columns) - 1, 14)
        for r, row in enumerate(rows, start=1):
            for col, (_header, key) in enumerate(columns):
                value = row.get(key)
                fmt = percent if key in ("reach_rate", "conversion") else money if key == "sales" else None
                write(sheet, r, col, value if value is not None else None, fmt)

    table(_("Stores"), data["stores"], [(_("Store code"), "code"), (_("Store"), "name")])
    guides = [{**g, "name": g["name"] or str(_("Manager's queue"))} for g in data["guides"]]
    table(_("Guides"), guides, [(_("Store"), "store"), (_("Guide"), "name")])
    book.close()
    audit.record(
        actor,
        "campaign_results.exported",
        target=campaign,
        changes={
            "run": run.pk if run else None,
            "stores": len(data["stores"]),
            "guides": len(data["guides"]),
        },
    )
    return buffer.getvalue()
