"""The `analytics` module: reports over the customer's devices, as JSON, CSV, XLSX or a
chart. Read-only: it computes from what other modules store."""

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Path, Query, Response
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from fleetplane import module_catalog
from fleetplane.analytics import charts, exports, service
from fleetplane.analytics.periods import GroupBy
from fleetplane.analytics.report import ReportParameters, ShapedReport
from fleetplane.analytics.reports import REPORTS
from fleetplane.analytics.schemas import ReportOut
from fleetplane.core.auth import CustomerContext
from fleetplane.core.modules import Module
from fleetplane.core.pagination import json_response
from fleetplane.core.schemas import UtcDateTime

module = Module(module_catalog.ANALYTICS)
router = module.router


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"
    PNG = "png"
    SVG = "svg"


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MEDIA_TYPES = {
    Format.CSV: "text/csv; charset=utf-8",
    Format.XLSX: XLSX_TYPE,
    Format.PNG: "image/png",
    Format.SVG: "image/svg+xml",
}
# Files written in a worker thread: a chart or a big workbook takes a while to make.
WRITERS: dict[Format, Callable[[ShapedReport], bytes]] = {
    Format.CSV: exports.write_csv,
    Format.XLSX: exports.write_xlsx,
    Format.PNG: lambda shaped: charts.render(shaped, "png"),
    Format.SVG: lambda shaped: charts.render(shaped, "svg"),
}
# An SVG opened on its own runs nothing and loads nothing.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
DeviceId = Annotated[str, StringConstraints(max_length=64)]


def _reports_text() -> str:
    lines = []
    for report in REPORTS.values():
        figures = ", ".join(f"`{f.name}` ({f.unit.value})" for f in report.figures)
        parameters = ", ".join(f"`{name}`" for name in report.parameters)
        line = f"- `{report.name}`: {report.description}"
        if figures:
            line += f" Figures: {figures}."
        if parameters:
            line += f" Parameters: {parameters}."
        lines.append(line)
    return "\n".join(lines)


@router.get(
    "/reports/{report}",
    response_model=ReportOut,
    summary="A report over the customer's devices",
    responses={
        200: {
            "description": "The report, in the format asked for.",
            "content": {media_type: {} for media_type in MEDIA_TYPES.values()},
        }
    },
    description=f"""A row per device and period with the report's figures, and their totals
(sums, or maxima where a figure is a maximum; `totals` equals the rows added up; an average
or a share, a `ratio` figure, is worked out from the totals of the figures it is made of).
Periods are days, weeks (Monday to Sunday) or months of the customer's `timezone`, or the
whole range (`group_by=none`); the first and last are cut to `from` and `to`. The range is at
most 366 days. A message on a period boundary belongs to the period it starts; the time
between two messages, or a trip or parking, that crosses a boundary is split at it.

`format`: `json`; `csv` (the JSON's fields, UTC times); `xlsx` (a workbook with units, number
formats and a totals row); `png` or `svg` (a bar chart of the report's main figure per period
and device, at most {charts.MAX_DEVICES} devices and {charts.MAX_PERIODS} periods, the chart
saying what it left out).

Reports:

{_reports_text()}""",
)
async def get_report(
    report: Annotated[
        str, Path(description="The report.", json_schema_extra={"enum": list(REPORTS)})
    ],
    from_: Annotated[UtcDateTime, Query(alias="from", description="Inclusive.")],
    to: Annotated[UtcDateTime, Query(description="Exclusive.")],
    ctx: CustomerContext = module.requires("read:analytics"),
    device_id: Annotated[
        list[DeviceId] | None,
        Query(max_length=1000, description="May repeat; none: all the customer's devices."),
    ] = None,
    group_by: Annotated[GroupBy, Query(description="Periods of the rows.")] = GroupBy.NONE,
    format: Annotated[Format, Query(description="The answer's format.")] = Format.JSON,
    threshold: Annotated[float, Query(gt=0, le=1000, description="speeding: km/h.")] = 90.0,
    min_idle_s: Annotated[
        float, Query(ge=0, le=86_400, description="idling: the shortest idle period counted.")
    ] = 300.0,
    fill_threshold: Annotated[
        float, Query(gt=0, le=100_000, description="fuel: litres a fill adds at least.")
    ] = 10.0,
    drain_threshold: Annotated[
        float, Query(gt=0, le=100_000, description="fuel: litres a drain takes at least.")
    ] = 10.0,
    fuel_window_s: Annotated[
        float, Query(gt=0, le=86_400, description="fuel: the longest a fill or drain takes.")
    ] = 900.0,
    smoothing: Annotated[
        int, Query(ge=1, le=101, description="fuel: messages in the median filter.")
    ] = 5,
) -> Response:
    parameters = ReportParameters(
        threshold=threshold,
        min_idle_s=min_idle_s,
        fill_threshold=fill_threshold,
        drain_threshold=drain_threshold,
        fuel_window_s=fuel_window_s,
        smoothing=smoothing,
    )
    shaped = await service.run(
        ctx.session,
        ctx.provider_id,
        ctx.customer_id,
        report,
        device_ids=device_id,
        start=from_,
        end=to,
        group_by=group_by,
        parameters=parameters,
    )
    if format == Format.JSON:
        return json_response(shaped.as_json())
    body = await run_in_threadpool(WRITERS[format], shaped)
    return Response(body, media_type=MEDIA_TYPES[format], headers=_file_headers(shaped, format))


def _file_headers(shaped: ShapedReport, file_format: Format) -> dict[str, Any]:
    periods = shaped.periods
    name = f"{shaped.report.name}-{periods.start:%Y%m%d}-{periods.end:%Y%m%d}.{file_format}"
    # Shown where it can be (a browser, the playground); a workbook can only be saved.
    disposition = "attachment" if file_format == Format.XLSX else "inline"
    headers = {"Content-Disposition": f'{disposition}; filename="{name}"'}
    if file_format == Format.SVG:
        headers["Content-Security-Policy"] = SVG_POLICY
    return headers
