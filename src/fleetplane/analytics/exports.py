"""A shaped report written as CSV or as an XLSX workbook.

Both hold exactly the rows of the JSON answer. The CSV is for programs: the JSON's field
names as its header, the figures in the API's units, times in UTC. The workbook is for
people: a header naming each figure with its unit, durations as hours:minutes:seconds,
thousands separated, the periods' starts in the customer's time zone, and a totals row
(spreadsheet formulas, holding the API's totals as their values).

Text from users (a device's name) is never taken for a formula: in the CSV, a text cell that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'` (as OWASP
advises against CSV injection: a spreadsheet opening the file shows it as text); in the
workbook, text is written as strings, which a spreadsheet never evaluates.
"""

import csv
import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import xlsxwriter
from xlsxwriter.utility import xl_range

from fleetplane.analytics.report import Figure, ShapedReport, Total, Unit, Value

SECONDS_PER_DAY = 86_400
PERIOD_FIELDS = ("device_id", "device_name", "period", "period_start", "period_end")
# What a spreadsheet reads as the start of a formula (or of a command, for some).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def rfc3339(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def write_csv(shaped: ShapedReport) -> bytes:
    figures = [figure.name for figure in shaped.report.figures]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*PERIOD_FIELDS, *figures])
    for row in shaped.rows:
        writer.writerow(
            [
                as_text(row["device_id"]),
                as_text(row["device_name"]),
                as_text(row["period"] or ""),
                rfc3339(row["period_start"]),
                rfc3339(row["period_end"]),
                *("" if row[name] is None else row[name] for name in figures),
            ]
        )
    return out.getvalue().encode("utf-8")


def as_text(value: str) -> str:
    """A text cell of the CSV that no spreadsheet takes for a formula."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


# How each unit shows in the workbook: the header's unit, the cell format, and the factor
# from the API's unit to the cell's value (a duration is a fraction of a day in a sheet).
_SHEET_UNITS: dict[Unit, tuple[str, str, float]] = {
    Unit.SECONDS: ("h:mm:ss", "[h]:mm:ss", 1 / SECONDS_PER_DAY),
    Unit.METRES: ("m", "#,##0", 1.0),
    Unit.KILOMETRES: ("km", "#,##0.0", 1.0),
    Unit.KMH: ("km/h", "#,##0.0", 1.0),
    Unit.LITRES: ("l", "#,##0.0", 1.0),
    Unit.PERCENT: ("%", "0.0", 1.0),
    Unit.COUNT: ("", "#,##0", 1.0),
}
_TEXT_COLUMNS = ("Device", "Device id", "Period", "Period start", "Period end")


def write_xlsx(shaped: ShapedReport) -> bytes:
    out = io.BytesIO()
    workbook = xlsxwriter.Workbook(out, {"in_memory": True})
    styles = _styles(workbook)
    _report_sheet(workbook, styles, shaped)
    _about_sheet(workbook, styles, shaped)
    workbook.close()
    return out.getvalue()


def _styles(workbook: Any) -> dict[str, Any]:
    header = {"bold": True, "bg_color": "#1F3A5F", "font_color": "#FFFFFF", "text_wrap": True}
    total = {"bold": True, "top": 2, "bg_color": "#EEF2F7"}
    styles = {
        "header": workbook.add_format({**header, "valign": "vcenter"}),
        "header_number": workbook.add_format({**header, "align": "right", "valign": "vcenter"}),
        "time": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"}),
        "total_label": workbook.add_format(total),
        "title": workbook.add_format({"bold": True, "font_size": 14}),
        "label": workbook.add_format({"bold": True}),
    }
    for unit, (_, number_format, _) in _SHEET_UNITS.items():
        styles[unit] = workbook.add_format({"num_format": number_format})
        styles[f"total {unit}"] = workbook.add_format({**total, "num_format": number_format})
    return styles


def _report_sheet(workbook: Any, styles: dict[str, Any], shaped: ShapedReport) -> None:
    sheet = workbook.add_worksheet("Report")
    figures = shaped.report.figures
    zone = ZoneInfo(shaped.periods.timezone)
    first_figure = len(_TEXT_COLUMNS)
    for column, title in enumerate(_TEXT_COLUMNS):
        sheet.write_string(0, column, title, styles["header"])
    for offset, figure in enumerate(figures):
        sheet.write_string(0, first_figure + offset, _header(figure), styles["header_number"])
    for index, row in enumerate(shaped.rows, start=1):
        sheet.write_string(index, 0, row["device_name"])
        sheet.write_string(index, 1, row["device_id"])
        sheet.write_string(index, 2, row["period"] or "")
        sheet.write_datetime(index, 3, _local(row["period_start"], zone), styles["time"])
        sheet.write_datetime(index, 4, _local(row["period_end"], zone), styles["time"])
        for offset, figure in enumerate(figures):
            value = _cell_value(figure, row[figure.name])
            if value is not None:
                sheet.write_number(index, first_figure + offset, value, styles[figure.unit])
    last = len(shaped.rows)
    _totals_row(sheet, styles, shaped, last + 1, first_figure)
    sheet.set_row(0, 30)
    sheet.freeze_panes(1, 1)
    sheet.autofilter(0, 0, max(last, 1), first_figure + len(figures) - 1)
    sheet.set_column(0, 0, 24)
    sheet.set_column(1, 1, 14)
    sheet.set_column(2, 2, 12)
    sheet.set_column(3, 4, 17)
    sheet.set_column(first_figure, first_figure + len(figures) - 1, 16)


def _totals_row(
    sheet: Any, styles: dict[str, Any], shaped: ShapedReport, at: int, first_figure: int
) -> None:
    sheet.write_string(at, 0, "Total", styles["total_label"])
    for column in range(1, first_figure):
        sheet.write_blank(at, column, None, styles["total_label"])
    for offset, figure in enumerate(shaped.report.figures):
        column = first_figure + offset
        style = styles[f"total {figure.unit}"]
        total = _cell_value(figure, shaped.totals.get(figure.name))
        if figure.total == Total.NONE or total is None or at == 1:
            sheet.write_blank(at, column, None, style)
            continue
        sheet.write_formula(at, column, _total_formula(shaped, figure, at), style, total)


def _total_formula(shaped: ShapedReport, figure: Figure, at: int) -> str:
    """The totals row's formula of a figure over its column (rows 1 to `at` - 1); a ratio's
    is made of its figures' totals, in the sheet's units."""

    def over(name: str, function: str = "SUM") -> str:
        column = len(_TEXT_COLUMNS) + [f.name for f in shaped.report.figures].index(name)
        return f"{function}({xl_range(1, column, at - 1, column)})"

    if figure.ratio is None:
        return "=" + over(figure.name, "MAX" if figure.total == Total.MAX else "SUM")
    ratio = figure.ratio
    # cell = API value x unit factor, so the ratio's factor in sheet units is this.
    numerator = shaped.report.figure(ratio.numerator)
    factor = ratio.factor * _factor(figure) / _factor(numerator)
    if ratio.denominator is None:
        return f"={over(ratio.numerator)}*{_number(factor)}"
    denominator = shaped.report.figure(ratio.denominator)
    factor *= _factor(denominator)
    below = over(ratio.denominator)
    return f'=IF({below}=0,"",{over(ratio.numerator)}/{below}*{_number(factor)})'


def _number(value: float) -> str:
    """A number as a formula writes it (an exponent as `E`)."""
    return repr(value).upper()


def _about_sheet(workbook: Any, styles: dict[str, Any], shaped: ShapedReport) -> None:
    sheet = workbook.add_worksheet("About")
    periods = shaped.periods
    zone = ZoneInfo(periods.timezone)
    sheet.write_string(0, 0, shaped.report.title, styles["title"])
    facts: list[tuple[str, Any]] = [
        ("Report", shaped.report.name),
        ("From", _local(periods.start, zone)),
        ("To", _local(periods.end, zone)),
        ("Time zone", periods.timezone),
        ("Grouped by", periods.group_by.value),
        *((name, value) for name, value in shaped.parameters.items()),
        ("About", shaped.report.description),
    ]
    for index, (label, value) in enumerate(facts, start=2):
        sheet.write_string(index, 0, label, styles["label"])
        if isinstance(value, datetime):
            sheet.write_datetime(index, 1, value, styles["time"])
        elif isinstance(value, str):
            sheet.write_string(index, 1, value)
        else:
            sheet.write_number(index, 1, value)
    sheet.set_column(0, 0, 16)
    sheet.set_column(1, 1, 100)


def _header(figure: Figure) -> str:
    unit = _SHEET_UNITS[figure.unit][0]
    return f"{figure.title} ({unit})" if unit else figure.title


def _cell_value(figure: Figure, value: Value) -> float | None:
    if value is None:
        return None
    return value * _factor(figure)


def _factor(figure: Figure) -> float:
    """From the API's unit of the figure to its cell's."""
    return _SHEET_UNITS[figure.unit][2]


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    """The instant as the customer's wall-clock time (a sheet's times have no zone)."""
    return instant.astimezone(zone).replace(tzinfo=None)
