"""A shaped report as a bar chart (PNG or SVG), drawn with Matplotlib's Agg backend.

One chart shows the report's main figure: a bar per period, one colour per device (stacked
when the figure adds up, side by side when it is a maximum or a ratio); with no grouping, a
bar per device. The title names the report, the range in the customer's time zone and the zone.
A chart stays readable and cheap to draw: at most `MAX_DEVICES` devices (those with the
largest totals) and `MAX_PERIODS` periods, and a note under it says what was left out.

Drawing takes a few hundred milliseconds, so callers run `render` in a worker thread; the
lock keeps Matplotlib's shared state (fonts, settings) to one drawing at a time.
"""

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as ChartFigure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import FuncFormatter, MaxNLocator

from fleetplane.analytics.report import Figure, ShapedReport, Total, Unit

ChartFormat = Literal["png", "svg"]

MAX_DEVICES = 10
MAX_PERIODS = 62
PNG_DPI = 120
SIZE_INCHES = (11.0, 6.2)
# Colour-blind-safe, distinct at a glance (Okabe-Ito, then Tableau's tones).
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9",
    "#D55E00", "#F0E442", "#4E79A7", "#59A14F", "#B07AA1",
)  # fmt: skip
INK = "#1F2933"
MUTED = "#6B7785"
GRID = "#E3E8EE"
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "svg.fonttype": "none",  # text stays text: small, sharp and searchable
    "text.parse_math": False,  # a device named "$5 $van" is text, not TeX
    "svg.hashsalt": "fleetplane",  # the same chart, the same file
}
_DRAWING = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Scale:
    """How a unit reads on a chart's axis."""

    label: str
    factor: float


def _scale(unit: Unit, largest: float) -> _Scale:
    """Durations in hours (minutes when short), distances in km (metres when short)."""
    if unit == Unit.SECONDS:
        return _Scale("hours", 1 / 3600) if largest >= 2 * 3600 else _Scale("minutes", 1 / 60)
    if unit == Unit.METRES:
        return _Scale("km", 1 / 1000) if largest >= 2000 else _Scale("m", 1.0)
    labels = {
        Unit.KILOMETRES: "km",
        Unit.KMH: "km/h",
        Unit.LITRES: "litres",
        Unit.PERCENT: "%",
        Unit.COUNT: "count",
    }
    return _Scale(labels[unit], 1.0)


@dataclass(frozen=True, slots=True)
class ChartData:
    """What a chart shows: a value per (device, period), devices and periods as drawn."""

    figure: Figure
    scale: _Scale
    devices: list[tuple[str, str]]  # (id, name)
    periods: list[str]
    values: np.ndarray  # devices x periods, NaN where the figure is null
    notes: list[str]


def render(shaped: ShapedReport, chart_format: ChartFormat) -> bytes:
    data = chart_data(shaped)
    # The notes take the figure's foot; the chart fills the rest.
    foot = 0.03 * (len(data.notes) + 1) if data.notes else 0.0
    layout = ConstrainedLayoutEngine(rect=(0, foot, 1, 1 - foot))
    with _DRAWING, matplotlib.rc_context(cast(Any, STYLE)):
        figure = ChartFigure(figsize=SIZE_INCHES, facecolor="white", layout=layout)
        FigureCanvasAgg(figure)
        _draw(figure, shaped, data)
        out = io.BytesIO()
        figure.savefig(out, format=chart_format, dpi=PNG_DPI, metadata=_metadata(chart_format))
    return out.getvalue()


def chart_data(shaped: ShapedReport) -> ChartData:
    report = shaped.report
    figure = report.figure(report.chart_figure)
    devices: dict[str, str] = {}
    periods: dict[int, int] = {}  # period start -> column
    cells: dict[tuple[str, int], float] = {}
    for row in shaped.rows:
        devices.setdefault(row["device_id"], row["device_name"])
        period = periods.setdefault(_period_key(row), len(periods))
        value = row[figure.name]
        cells[(row["device_id"], period)] = np.nan if value is None else float(value)
    labels = _period_labels(shaped, len(periods))
    values = np.full((len(devices), len(periods)), np.nan)
    for index, device_id in enumerate(devices):
        for period in range(len(periods)):
            values[index, period] = cells.get((device_id, period), np.nan)
    largest = float(np.nanmax(values)) if not np.isnan(values).all() else 0.0
    scale = _scale(figure.unit, largest)
    values *= scale.factor
    notes = _no_data_notes(devices, values)
    device_list = [(device_id, _shown_name(name)) for device_id, name in devices.items()]
    device_list, values, notes = _keep_largest_devices(figure, device_list, values, notes)
    if len(labels) > MAX_PERIODS:
        left_out = len(labels) - MAX_PERIODS
        notes.append(
            f"The first {MAX_PERIODS} of {len(labels)} periods are shown ({left_out} later ones "
            "left out): group by a longer period to see the whole range."
        )
        labels, values = labels[:MAX_PERIODS], values[:, :MAX_PERIODS]
    return ChartData(figure, scale, device_list, labels, values, notes)


def _period_key(row: dict[str, Any]) -> int:
    start: datetime = row["period_start"]
    return int(start.timestamp() * 1_000_000)


def _period_labels(shaped: ShapedReport, count: int) -> list[str]:
    items = shaped.periods.items[:count]
    group_by = shaped.periods.group_by.value
    if group_by == "day":
        zone = ZoneInfo(shaped.periods.timezone)
        return [f"{p.start.astimezone(zone):%a %d %b}" for p in items]
    if group_by == "month":
        zone = ZoneInfo(shaped.periods.timezone)
        return [f"{p.start.astimezone(zone):%b %Y}" for p in items]
    return [p.label or "" for p in items]


def _no_data_notes(devices: dict[str, str], values: np.ndarray) -> list[str]:
    empty = [
        name for (_, name), row in zip(devices.items(), values, strict=True) if np.isnan(row).all()
    ]
    if not empty:
        return []
    return [f"No data for {_names(empty)}."]


def _keep_largest_devices(
    figure: Figure, devices: list[tuple[str, str]], values: np.ndarray, notes: list[str]
) -> tuple[list[tuple[str, str]], np.ndarray, list[str]]:
    if len(devices) <= MAX_DEVICES:
        return devices, values, notes
    adds_up = figure.total == Total.SUM
    filled = np.nan_to_num(values, nan=0.0 if adds_up else -np.inf)
    ranking = filled.sum(axis=1) if adds_up else filled.max(axis=1)
    kept = sorted(np.argsort(-ranking, kind="stable")[:MAX_DEVICES])
    left_out = len(devices) - MAX_DEVICES
    note = (
        f"The {MAX_DEVICES} devices with the highest {figure.title.lower()} of {len(devices)} "
        f"are shown; {left_out} left out (ask for fewer devices with device_id)."
    )
    return [devices[i] for i in kept], values[kept], [*notes, note]


def _draw(figure: ChartFigure, shaped: ShapedReport, data: ChartData) -> None:
    axes = figure.add_subplot()
    report, periods = shaped.report, shaped.periods
    zone = ZoneInfo(periods.timezone)
    figure.suptitle(
        report.title,
        x=0.01, ha="left", fontsize=16, fontweight="bold", color=INK,
    )  # fmt: skip
    axes.set_title(
        f"{_local(periods.start, zone)} to {_local(periods.end, zone)}  ·  {periods.timezone}"
        f"  ·  {_grouping(periods.group_by.value)}",
        loc="left", fontsize=10.5, color=MUTED, pad=12,
    )  # fmt: skip
    if len(data.devices) == 0 or np.isnan(data.values).all():
        axes.text(0.5, 0.5, "No data in this range", ha="center", va="center",
                  fontsize=14, color=MUTED, transform=axes.transAxes)  # fmt: skip
        axes.set_axis_off()
    elif periods.group_by.value == "none":
        _bars_per_device(axes, data)
    elif data.figure.total == Total.SUM:
        _stacked_bars(axes, data)
    else:
        _grouped_bars(axes, data)
    _style_axes(axes, f"{data.figure.title} ({data.scale.label})")
    if data.notes:
        figure.text(0.01, 0.005, "\n".join(data.notes), fontsize=8.5, color=MUTED,
                    ha="left", va="bottom", wrap=True)  # fmt: skip


def _bars_per_device(axes: Any, data: ChartData) -> None:
    shown = data.values[:, 0]
    values = np.nan_to_num(shown)
    positions = np.arange(len(values))
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(values))]
    bars = axes.bar(positions, values, color=colours, width=0.6, zorder=3)
    axes.set_xticks(positions, [name for _, name in data.devices])
    _label_bars(axes, bars, shown)
    _rotate_if_crowded(axes, [name for _, name in data.devices])


def _stacked_bars(axes: Any, data: ChartData) -> None:
    positions = np.arange(len(data.periods))
    bottom = np.zeros(len(data.periods))
    for index, (_, name) in enumerate(data.devices):
        if np.isnan(data.values[index]).all():
            continue  # no data: named in the notes, not in the legend
        values = np.nan_to_num(data.values[index])
        axes.bar(positions, values, bottom=bottom, width=0.72, label=name,
                 color=PALETTE[index % len(PALETTE)], edgecolor="white", linewidth=0.6,
                 zorder=3)  # fmt: skip
        bottom += values
    if len(data.periods) <= 31:
        _label_totals(axes, positions, bottom)
    _period_axis(axes, data, positions)


def _grouped_bars(axes: Any, data: ChartData) -> None:
    positions = np.arange(len(data.periods))
    drawn = [i for i in range(len(data.devices)) if not np.isnan(data.values[i]).all()]
    width = 0.8 / max(len(drawn), 1)
    for slot, index in enumerate(drawn):
        offset = (slot - (len(drawn) - 1) / 2) * width
        axes.bar(positions + offset, np.nan_to_num(data.values[index]), width=width * 0.95,
                 label=data.devices[index][1], color=PALETTE[index % len(PALETTE)],
                 zorder=3)  # fmt: skip
    _period_axis(axes, data, positions)


def _period_axis(axes: Any, data: ChartData, positions: np.ndarray) -> None:
    every = max(1, int(np.ceil(len(positions) / 31)))
    axes.set_xticks(positions[::every], data.periods[::every])
    _rotate_if_crowded(axes, data.periods)
    axes.set_xlim(-0.6, len(positions) - 0.4)
    if len(data.devices) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                    title="Device", alignment="left")  # fmt: skip


def _style_axes(axes: Any, label: str) -> None:
    if not axes.axison:
        return
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.grid(axis="y", color=GRID, linewidth=0.9, zorder=0)
    axes.tick_params(axis="y", length=0)
    axes.tick_params(axis="x", length=0, pad=6)
    axes.set_ylabel(label)
    axes.yaxis.set_major_locator(MaxNLocator(nbins=6, min_n_ticks=3))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _number(value)))
    axes.set_ylim(bottom=0)


def _label_bars(axes: Any, bars: Any, values: np.ndarray) -> None:
    if len(values) <= 31:
        labels = ["no data" if np.isnan(v) else _number(v) for v in values]
        axes.bar_label(bars, labels=labels, padding=3, fontsize=8.5, color=INK)


def _label_totals(axes: Any, positions: np.ndarray, totals: np.ndarray) -> None:
    for position, total in zip(positions, totals, strict=True):
        if total > 0:
            axes.annotate(_number(total), (position, total), xytext=(0, 3),
                          textcoords="offset points", ha="center", va="bottom",
                          fontsize=8, color=INK)  # fmt: skip


def _rotate_if_crowded(axes: Any, labels: Sequence[str]) -> None:
    longest = max((len(label) for label in labels), default=0)
    if len(labels) * longest > 90:
        for label in axes.get_xticklabels():
            label.set_rotation(40)
            label.set_horizontalalignment("right")


def _number(value: float) -> str:
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _shown_name(name: str) -> str:
    # Matplotlib leaves labels starting with "_" out of legends.
    return f"\u200b{name}" if name.startswith("_") else name


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5])
    return shown if len(names) <= 5 else f"{shown} and {len(names) - 5} more"


def _grouping(group_by: str) -> str:
    return "whole range" if group_by == "none" else f"by {group_by}"


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return f"{instant.astimezone(zone):%d %b %Y %H:%M}"


def _metadata(chart_format: ChartFormat) -> dict[str, Any]:
    # No creation date, so the same report gives the same file.
    if chart_format == "svg":
        return {"Date": None, "Creator": "Fleetplane"}
    return {"Software": "Fleetplane"}
