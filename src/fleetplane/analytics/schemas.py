"""The report answer as the OpenAPI document describes it (the JSON format)."""

from datetime import datetime

from pydantic import ConfigDict, Field

from fleetplane.core.schemas import ResponseBody


class RatioOut(ResponseBody):
    numerator: str = Field(description="A figure of the same row.")
    denominator: str | None = Field(description="A figure of the same row; null: none.")
    factor: float


class FigureOut(ResponseBody):
    name: str = Field(description="The field holding it in each row and in `totals`.")
    title: str
    unit: str = Field(description="`s`, `m`, `km`, `km/h`, `l`, `%` or `count`.")
    total: str = Field(
        description="How the rows total: `sum`, `max`, `none` (no total), or `ratio` (an "
        "average or a share: `numerator` / `denominator` x `factor`, in each row of the row's "
        "figures and in `totals` of their totals)."
    )
    ratio: RatioOut | None = Field(None, description="What a `ratio` figure is made of.")


class ReportRowOut(ResponseBody):
    """A device's figures in one period; the figures are the fields `figures` names (null: no
    data for the figure, e.g. the device has no sensor for it)."""

    model_config = ConfigDict(extra="allow")

    device_id: str
    device_name: str
    period_start: datetime = Field(description="UTC; the range's `from` for the first period.")
    period_end: datetime = Field(description="UTC, exclusive; `to` for the last period.")
    period: str | None = Field(
        description="The local day (`2026-11-03`), ISO week (`2026-W45`) or month "
        "(`2026-11`); null when not grouped."
    )


class ReportOut(ResponseBody):
    model_config = ConfigDict(populate_by_name=True)

    report: str
    title: str
    from_: datetime = Field(alias="from")
    to: datetime
    group_by: str
    timezone: str = Field(description="The customer's time zone, in which periods are cut.")
    parameters: dict[str, float | int] = Field(description="The report's own parameters.")
    figures: list[FigureOut]
    rows: list[ReportRowOut]
    totals: dict[str, float | int | None] = Field(
        description="Each figure's rows added up (or their maximum), to the last digit."
    )
