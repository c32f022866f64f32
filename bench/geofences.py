"""Which of a customer's geofences hold each position: batched point checks per second through
`geofences.geometry.GeofenceIndex`, the test the visits step makes on every slice of a round.

    fleetplane bench geofences [--geofences 10000] [--batch 100000] [--seconds 5]

Builds `--geofences` geofences over a region of 200 x 200 km around Riga, a third each of
circles (radius 50 m to 2 km), polygons (irregular rings of 5 to 12 vertices, 100 m to 3 km
across, every other one with a hole) and corridors (lines of 2 to 6 positions over up to
10 km, 20 to 200 m wide), through `build_area` as the API does, and an index of them from their
WKB as the step reads them. Then it tests random positions over the region in batches of
`--batch` (`GeofenceIndex.pairs`) for `--seconds`, and prints the positions tested per second
and the share of positions inside at least one geofence, timed in CPU time of the process.
CPU only, one core; no database.
"""

import time
from typing import Any

import numpy as np
import shapely
from rich.console import Console
from rich.table import Table

from fleetplane.geofences.geometry import GeofenceIndex, build_area

CENTRE = (24.1, 56.95)  # lon, lat
HALF_LON, HALF_LAT = 1.65, 0.9  # about 200 x 200 km
METRES_PER_DEGREE_LAT = 111_000.0


def _offsets(rng: np.random.Generator, metres: float, count: int, lat: float) -> np.ndarray:
    """`count` (dlon, dlat) degrees within about `metres`."""
    dy = rng.uniform(-metres, metres, count) / METRES_PER_DEGREE_LAT
    dx = rng.uniform(-metres, metres, count) / (METRES_PER_DEGREE_LAT * np.cos(np.radians(lat)))
    return np.column_stack([dx, dy])


def _polygon(rng: np.random.Generator, lon: float, lat: float, hole: bool) -> dict:
    vertices = int(rng.integers(5, 13))
    radius = rng.uniform(50, 1500)
    step = 2 * np.pi / vertices
    angles = np.arange(vertices) * step + rng.uniform(0, step / 3, vertices)
    scale = rng.uniform(0.6, 1.0, vertices) * radius / METRES_PER_DEGREE_LAT
    ring = np.column_stack(
        [lon + scale * np.cos(angles) / np.cos(np.radians(lat)), lat + scale * np.sin(angles)]
    )
    rings = [[*ring.tolist(), ring[0].tolist()]]
    if hole:
        small = 0.25 * radius / METRES_PER_DEGREE_LAT
        square = [(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]
        rings.append([[lon + small * x / np.cos(np.radians(lat)), lat + small * y]
                      for x, y in square])  # fmt: skip
    return {"type": "Polygon", "coordinates": rings}


def make_geofences(
    count: int, seed: int = 7, half_lon: float = HALF_LON, half_lat: float = HALF_LAT
) -> list[dict[str, Any]]:
    """`count` geofences as the API takes them (`geometry`, `radius_m` or `width_m`), a third
    each of circles, polygons (every other one with a hole) and corridors, over a region of
    `half_lon` x `half_lat` degrees either side of the centre."""
    rng = np.random.default_rng(seed)
    made: list[dict[str, Any]] = []
    for index in range(count):
        lon = CENTRE[0] + rng.uniform(-half_lon, half_lon)
        lat = CENTRE[1] + rng.uniform(-half_lat, half_lat)
        kind = index % 3
        if kind == 0:
            point = {"type": "Point", "coordinates": [lon, lat]}
            made.append({"geometry": point, "radius_m": rng.uniform(50, 2000)})
        elif kind == 1:
            made.append({"geometry": _polygon(rng, lon, lat, hole=index % 2 == 0)})
        else:
            steps = _offsets(rng, 2000, int(rng.integers(1, 6)), lat)
            origin = np.array([lon, lat])
            line = np.vstack([origin, origin + np.cumsum(steps, axis=0)])
            geometry = {"type": "LineString", "coordinates": line.tolist()}
            made.append({"geometry": geometry, "width_m": rng.uniform(20, 200)})
    return made


def make_areas(count: int, seed: int = 7) -> list[shapely.Geometry]:
    return [build_area(**geofence) for geofence in make_geofences(count, seed)]


def main(geofences: int, batch: int, seconds: float, console: Console) -> int:
    started = time.perf_counter()
    areas = make_areas(geofences)
    built = time.perf_counter() - started
    wkbs = [shapely.to_wkb(area) for area in areas]
    ids = [f"geo_{index:026d}" for index in range(geofences)]
    started = time.perf_counter()
    index = GeofenceIndex.from_wkb(ids, wkbs)
    indexed = time.perf_counter() - started
    rng = np.random.default_rng(11)

    def positions() -> tuple[np.ndarray, np.ndarray]:
        lat = CENTRE[1] + rng.uniform(-HALF_LAT, HALF_LAT, batch)
        lon = CENTRE[0] + rng.uniform(-HALF_LON, HALF_LON, batch)
        return lat, lon

    index.pairs(*positions())  # warm up
    tested = inside = 0
    spent = 0.0
    while spent < seconds:
        lat, lon = positions()
        started = time.process_time()  # CPU time: other work on the machine does not count
        position, _ = index.pairs(lat, lon)
        spent += time.process_time() - started
        tested += batch
        inside += len(np.unique(position))
    rate = tested / spent
    table = Table(title=f"Geofence point checks ({geofences:,} geofences, batches of {batch:,})")
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row("geofences built (build_area)", f"{built:.1f} s")
    table.add_row("index from WKB (GeofenceIndex.from_wkb)", f"{indexed * 1000:.0f} ms")
    table.add_row("positions tested", f"{tested:,}")
    table.add_row("inside at least one", f"{inside / tested:.1%}")
    table.add_row("point checks per second", f"{rate:,.0f}")
    console.print(table)
    console.print(f"point checks per second: {rate:,.0f}")
    return 0
