"""Message histories for the reports, stored as the intake stores them, and checks every
report answer must pass."""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import Api, RunningServer, Tenant, run_in_db
from fleetplane.devices import service as devices
from fleetplane.messages import service as messages
from fleetplane.telemetry import Message

REPORTS_PATH = "/module/analytics/reports"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def message(
    at: str,
    *,
    speed: float | None = None,
    lat: float | None = None,
    lon: float | None = None,
    filtered: bool = False,
    **params: float,
) -> Message:
    time = utc(at)
    stored = Message(device_time=time, received_at=time, speed=speed, lat=lat, lon=lon)
    stored.params.update(params)
    stored.filtered = filtered
    return stored


def store(server: RunningServer, device_id: str, history: Sequence[Message]) -> None:
    """Writes the messages with the bulk writer the intake uses."""

    async def write(session: AsyncSession) -> None:
        seq = (await devices.seqs_of(session, [device_id]))[device_id]
        await messages.insert_rows(session, [messages.to_row(seq, m) for m in history])

    run_in_db(server.settings, write)


def add_sensor(
    tenant: Tenant, device_id: str, sensor_type: str, parameter: str, **extra: Any
) -> None:
    body = {
        "device_id": device_id,
        "name": sensor_type,
        "type": sensor_type,
        "parameter": parameter,
    }
    response = tenant.api.post("/api/sensors", json=body | extra)
    assert response.status_code == 201, response.text


def set_timezone(tenant: Tenant, customer_index: int, timezone: str) -> None:
    customer_id = tenant.customers[customer_index]["id"]
    response = tenant.api.patch(f"/api/customers/{customer_id}", json={"timezone": timezone})
    assert response.status_code == 200, response.text


def device_of(tenant: Tenant, customer_index: int = 0, number: int = 0) -> str:
    return str(tenant.devices[tenant.customers[customer_index]["id"]][number]["id"])


def get_report(api: Api, report: str, **query: Any) -> httpx.Response:
    params = {("from" if name == "from_" else name): value for name, value in query.items()}
    return api.get(f"{REPORTS_PATH}/{report}", params=params)


def report_json(api: Api, report: str, **query: Any) -> dict[str, Any]:
    response = get_report(api, report, **query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert_totals_are_the_rows_added_up(body)
    return body


def assert_totals_are_the_rows_added_up(body: dict[str, Any]) -> None:
    """Every total equals its rows summed (as the decimals they show) or their maximum; a
    ratio's, and each row's, is its figures' ratio (to the shown decimals)."""
    for figure in body["figures"]:
        name = figure["name"]
        values = [row[name] for row in body["rows"] if row[name] is not None]
        if figure["total"] == "none":
            assert name not in body["totals"]
        elif figure["total"] == "ratio":
            for values_of in (*body["rows"], body["totals"]):
                assert_ratio(figure, values_of)
        elif figure["total"] == "max":
            assert body["totals"][name] == (max(values) if values else None)
        else:
            exact = sum((Decimal(str(value)) for value in values), Decimal(0))
            assert Decimal(str(body["totals"][name])) == exact, (name, body["totals"], values)


def figures_by_period(body: dict[str, Any], name: str) -> dict[str | None, Any]:
    return {row["period"]: row[name] for row in body["rows"]}


def assert_ratio(figure: dict[str, Any], values: dict[str, Any]) -> None:
    """A ratio figure's value is its numerator over its denominator times its factor, as
    shown (to its last digit: whole, or one decimal)."""
    ratio = figure["ratio"]
    numerator = values[ratio["numerator"]]
    denominator = 1 if ratio["denominator"] is None else values[ratio["denominator"]]
    shown = values[figure["name"]]
    if numerator is None or not denominator:
        assert shown is None, (figure["name"], values)
        return
    expected = numerator / denominator * ratio["factor"]
    assert shown is not None, (figure["name"], values)
    last_digit = 0.5 if isinstance(shown, int) else 0.05
    assert abs(shown - expected) <= last_digit + 1e-9, (figure["name"], values)
