"""Which geofences hold a position (`geofences.geometry`): each shape at its boundary, measured
on the WGS 84 ellipsoid with GeographicLib (inside at 99.5 % of the radius or half-width,
outside at 100.5 %), holes, the antimeridian and the poles, many positions at once."""

from itertools import pairwise
from typing import Any

import numpy as np
import pytest
import shapely
from geographiclib.geodesic import Geodesic

from fleetplane.geofences.geometry import GeofenceIndex, GeometryError, area_m2, build_area

GEODESIC = Geodesic.WGS84
INSIDE, OUTSIDE = 0.995, 1.005  # the accuracy promised: 0.5 % of a distance in metres
BEARINGS = np.arange(0.0, 360.0, 7.5)


def index_of(geometry: dict[str, Any], **sizes: float) -> GeofenceIndex:
    return GeofenceIndex(["fence"], [build_area(geometry, **sizes)])


def inside(index: GeofenceIndex, points: list[tuple[float, float]]) -> list[bool]:
    """For each (lat, lon), whether it is inside the index's one geofence."""
    lat, lon = np.array(points, dtype=float).reshape(-1, 2).T
    return [bool(ids) for ids in index.containing(lat, lon)]


def around(lat: float, lon: float, distance_m: float) -> list[tuple[float, float]]:
    """Points at `distance_m` along geodesics from (lat, lon), every 7.5 degrees."""
    points = []
    for bearing in BEARINGS:
        moved = GEODESIC.Direct(lat, lon, bearing, distance_m)
        points.append((moved["lat2"], moved["lon2"]))
    return points


def circle(lat: float, lon: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


@pytest.mark.parametrize(
    ("lat", "lon", "radius_m"),
    [
        (56.9496, 24.1052, 150.0),  # a depot in Riga
        (-33.86, 151.21, 25_000.0),  # a city
        (0.0, 0.0, 5.0),  # tiny, on the equator
        (69.65, 18.96, 900_000.0),  # very large, far north
    ],
)
def test_circle_boundary(lat: float, lon: float, radius_m: float) -> None:
    index = index_of(circle(lat, lon), radius_m=radius_m)
    assert all(inside(index, around(lat, lon, radius_m * INSIDE)))
    assert not any(inside(index, around(lat, lon, radius_m * OUTSIDE)))
    assert inside(index, [(lat, lon)]) == [True]


def _offset(lat: float, lon: float, bearing: float, distance_m: float) -> tuple[float, float]:
    moved = GEODESIC.Direct(lat, lon, bearing, distance_m)
    return moved["lat2"], moved["lon2"]


def corridor_sides(
    line: list[list[float]], half_width_m: float, fraction: float
) -> list[tuple[float, float]]:
    """Points at `fraction` along each geodesic segment of the line, `half_width_m` to the
    left and right of it."""
    points = []
    for (lon1, lat1), (lon2, lat2) in pairwise(line):
        segment = GEODESIC.InverseLine(lat1, lon1, lat2, lon2)
        at = segment.Position(segment.s13 * fraction)
        for side in (90.0, -90.0):
            points.append(_offset(at["lat2"], at["lon2"], at["azi2"] + side, half_width_m))
    return points


@pytest.mark.parametrize(
    ("line", "width_m"),
    [
        ([[24.0, 56.9], [24.5, 57.2], [25.5, 57.0]], 40.0),  # a road
        ([[-10.0, 40.0], [30.0, 60.0]], 100.0),  # 2,700 km in one geodesic
        ([[13.4, 52.5], [13.41, 52.5], [13.41, 52.51]], 6.0),  # a narrow lane with a corner
    ],
)
def test_corridor_boundary(line: list[list[float]], width_m: float) -> None:
    index = index_of({"type": "LineString", "coordinates": line}, width_m=width_m)
    for fraction in (0.1, 0.37, 0.5, 0.93):
        assert all(inside(index, corridor_sides(line, width_m / 2 * INSIDE, fraction)))
        assert not any(inside(index, corridor_sides(line, width_m / 2 * OUTSIDE, fraction)))
    # Round ends: beyond the last position along the line's direction.
    (lon1, lat1), (lon2, lat2) = line[-2], line[-1]
    heading = GEODESIC.Inverse(lat1, lon1, lat2, lon2)["azi2"]
    assert inside(index, [_offset(lat2, lon2, heading, width_m / 2 * INSIDE)]) == [True]
    assert inside(index, [_offset(lat2, lon2, heading, width_m / 2 * OUTSIDE)]) == [False]


def test_polygon_with_hole_boundaries() -> None:
    outline = [[24.0, 56.0], [24.2, 56.0], [24.2, 56.1], [24.0, 56.1], [24.0, 56.0]]
    hole = [[24.05, 56.02], [24.15, 56.02], [24.15, 56.08], [24.05, 56.08], [24.05, 56.02]]
    index = index_of({"type": "Polygon", "coordinates": [outline, hole]})
    e = 1e-7  # about a centimetre
    assert (
        inside(
            index,
            [
                (56.0 + e, 24.1),  # just inside the south edge
                (56.05, 24.0 + e),  # just inside the west edge
                (56.02 - e, 24.1),  # just south of the hole
                (56.05, 24.15 + e),  # just east of the hole
                (56.0, 24.1),  # on the edge: inside
                (56.02, 24.1),  # on the hole's edge: inside
            ],
        )
        == [True] * 6
    )
    assert (
        inside(
            index,
            [
                (56.0 - e, 24.1),  # just outside the south edge
                (56.05, 24.2 + e),  # just outside the east edge
                (56.02 + e, 24.1),  # just inside the hole
                (56.05, 24.1),  # the hole's middle
                (56.05, 24.15 - e),
            ],
        )
        == [False] * 5
    )


def test_multipolygon_with_hole() -> None:
    square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    hole = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6], [0.4, 0.4]]
    far = [[[10.0, 10.0], [11.0, 10.0], [11.0, 11.0], [10.0, 10.0]]]
    index = index_of({"type": "MultiPolygon", "coordinates": [[square, hole], far]})
    assert inside(index, [(0.2, 0.2), (0.5, 0.5), (10.2, 10.8), (10.8, 10.2), (5.0, 5.0)]) == [
        True, False, True, False, False,
    ]  # fmt: skip


def test_circle_across_the_antimeridian() -> None:
    lat, lon, radius_m = -16.5, 179.999, 2_000.0  # Fiji
    index = index_of(circle(lat, lon), radius_m=radius_m)
    within = around(lat, lon, radius_m * INSIDE)
    assert {np.sign(point_lon) for _, point_lon in within} == {-1.0, 1.0}  # both sides
    assert all(inside(index, within))
    assert not any(inside(index, around(lat, lon, radius_m * OUTSIDE)))
    assert inside(index, [(lat, 180.0), (lat, -180.0), (lat, 180.0 - 360.0 * 2)]) == [True] * 3


def test_polygon_and_corridor_across_the_antimeridian() -> None:
    # A ring whose positions are more than 180 degrees of longitude apart crosses the short way.
    ring = [[179.5, -1.0], [-179.5, -1.0], [-179.5, 1.0], [179.5, 1.0], [179.5, -1.0]]
    polygon = index_of({"type": "Polygon", "coordinates": [ring]})
    assert (
        inside(polygon, [(0, 179.9), (0, -179.9), (0, 180), (0, -180), (0.99, -179.51)])
        == [True] * 5
    )
    assert inside(polygon, [(0, 0), (0, 179.4), (0, -179.4), (1.01, 180)]) == [False] * 4
    line = [[179.9, 10.0], [-179.8, 10.1]]
    corridor = index_of({"type": "LineString", "coordinates": line}, width_m=30.0)
    for fraction in (0.2, 1 / 3, 0.5):  # a third of the way is right at 180
        assert all(inside(corridor, corridor_sides(line, 15.0 * INSIDE, fraction)))
        assert not any(inside(corridor, corridor_sides(line, 15.0 * OUTSIDE, fraction)))


@pytest.mark.parametrize(("lat", "lon"), [(89.95, 10.0), (-89.9, -135.0), (90.0, 0.0)])
def test_circle_round_a_pole(lat: float, lon: float) -> None:
    radius_m = 20_000.0  # reaches past the pole
    index = index_of(circle(lat, lon), radius_m=radius_m)
    assert all(inside(index, around(lat, lon, radius_m * INSIDE)))
    assert not any(inside(index, around(lat, lon, radius_m * OUTSIDE)))
    pole = 90.0 if lat > 0 else -90.0
    assert (
        inside(index, [(pole, 0.0), (pole, 123.0), (pole - np.sign(pole) * 0.05, lon + 180)])
        == [True] * 3
    )


def test_circle_near_a_pole_that_leaves_it_out() -> None:
    lat, lon, radius_m = 89.5, 40.0, 20_000.0  # 55 km from the pole
    index = index_of(circle(lat, lon), radius_m=radius_m)
    assert all(inside(index, around(lat, lon, radius_m * INSIDE)))
    assert not any(inside(index, around(lat, lon, radius_m * OUTSIDE)))
    assert inside(index, [(90.0, 0.0), (89.5, 40.0 + 180.0)]) == [False, False]


def test_polygon_round_a_pole() -> None:
    ring = [[0.0, 85.0], [90.0, 85.0], [180.0, 85.0], [-90.0, 85.0], [0.0, 85.0]]
    index = index_of({"type": "Polygon", "coordinates": [ring]})
    assert inside(index, [(90.0, 0.0), (89.0, 33.0), (86.0, -120.0), (85.01, 45.0)]) == [True] * 4
    assert inside(index, [(84.0, 0.0), (84.9, 45.0), (-89.0, 0.0)]) == [False] * 3


def test_circle_area_is_pi_r_squared() -> None:
    area = build_area(circle(56.9, 24.1), radius_m=1000.0)
    assert area_m2(area) == pytest.approx(np.pi * 1000.0**2, rel=1e-3)


def test_many_positions_many_geofences() -> None:
    """A batch against several geofences at once, checked position by position against the
    geodesic distance to each circle's centre."""
    rng = np.random.default_rng(7)
    centres = rng.uniform([56.8, 23.9], [57.0, 24.3], size=(50, 2))
    radii = rng.uniform(200.0, 3_000.0, size=50)
    ids = [f"c{n}" for n in range(50)]
    index = GeofenceIndex(
        ids,
        [
            build_area(circle(lat, lon), radius_m=r)
            for (lat, lon), r in zip(centres, radii, strict=True)
        ],
    )
    lat = rng.uniform(56.8, 57.0, 2_000)
    lon = rng.uniform(23.9, 24.3, 2_000)
    lat[:3], lon[:3] = np.nan, np.nan  # a position without a fix is in none
    found = index.containing(lat, lon)
    assert found[:3] == [[], [], []]
    for p in range(3, 2_000):
        distances = [GEODESIC.Inverse(c[0], c[1], lat[p], lon[p])["s12"] for c in centres]
        expected = {ids[n] for n, d in enumerate(distances) if d <= radii[n] * INSIDE}
        unexpected = {ids[n] for n, d in enumerate(distances) if d >= radii[n] * OUTSIDE}
        assert expected <= set(found[p]) and not unexpected & set(found[p]), p
    position, fences = index.pairs(lat, lon)
    assert len(position) == len(fences)
    assert len(position) == sum(len(ids) for ids in found) > 100
    assert list(position) == sorted(position)


def test_the_grid_finds_what_testing_every_area_finds() -> None:
    """The index's candidates come from a grid of cells: over small and wide areas (one as
    wide as a continent, kept out of the grid), one across the antimeridian, one round a pole,
    and positions on and off the grid, it answers exactly what testing every position against
    every area answers."""
    rng = np.random.default_rng(11)
    areas = [
        build_area(circle(lat, lon), radius_m=r)
        for lat, lon, r in zip(
            rng.uniform(50, 60, 300), rng.uniform(10, 30, 300), rng.uniform(100, 50_000, 300),
            strict=True,
        )
    ]  # fmt: skip
    areas += [
        build_area({"type": "Polygon", "coordinates": [[[-10, 35], [40, 35], [40, 70],
                                                         [-10, 70], [-10, 35]]]}),
        build_area(circle(0.0, 179.99), radius_m=20_000),
        build_area(circle(89.9, 0.0), radius_m=30_000),
        build_area({"type": "LineString", "coordinates": [[12, 52], [18, 55], [25, 54]]},
                   width_m=2_000),
    ]  # fmt: skip
    index = GeofenceIndex([f"a{n}" for n in range(len(areas))], areas)
    lat = np.concatenate([rng.uniform(45, 65, 20_000), rng.uniform(-90, 90, 2_000),
                          [0.0, 0.05, 89.95, np.nan]])  # fmt: skip
    lon = np.concatenate([rng.uniform(5, 35, 20_000), rng.uniform(-180, 180, 2_000),
                          [-179.99, 179.95, 120.0, 10.0]])  # fmt: skip
    position, fence = index.pairs(lat, lon)
    all_areas = np.asarray(areas, dtype=object)
    every = shapely.intersects_xy(all_areas[None, :], lon[:, None], lat[:, None])
    expected_position, expected_fence = np.nonzero(every)
    assert position.tolist() == expected_position.tolist()
    assert fence.tolist() == expected_fence.tolist()
    assert len(position) > 20_000  # the continent holds most of them


def test_an_empty_index_holds_nothing() -> None:
    index = GeofenceIndex([], [])
    assert index.containing([1.0, 2.0], [3.0, 4.0]) == [[], []]


@pytest.mark.parametrize(
    ("geometry", "sizes", "loc", "words"),
    [
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            {}, ("coordinates",), "crosses itself",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
            {}, ("coordinates", 0), "not closed",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 91], [0, 0]]]},
            {}, ("coordinates", 0, 2, 1), "latitude 91.0 is out of range",
        ),
        (
            {"type": "LineString", "coordinates": [[0, 0], [181, 0]]},
            {"width_m": 10}, ("coordinates", 1, 0), "longitude 181.0 is out of range",
        ),
        (
            {"type": "Point", "coordinates": [0, 0]},
            {"radius_m": 0}, ("radius_m",), "greater than 0",
        ),
        ({"type": "Point", "coordinates": [0, 0]}, {}, ("radius_m",), "needs radius_m"),
        (
            {"type": "LineString", "coordinates": [[0, 0], [1, 0]]},
            {"width_m": -5}, ("width_m",), "greater than 0",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]],
                                                [[5, 5], [6, 5], [6, 6], [5, 5]]]},
            {}, ("coordinates",), "hole lies outside",
        ),
        (
            {"type": "MultiPolygon", "coordinates": [[[[0, 0], [2, 0], [2, 2], [0, 0]]],
                                                     [[[1, 0], [3, 0], [3, 2], [1, 0]]]]},
            {}, ("coordinates",), "near longitude",
        ),
    ],
)  # fmt: skip
def test_invalid_geometry_names_the_problem(
    geometry: dict[str, Any], sizes: dict[str, float], loc: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(GeometryError) as raised:
        build_area(geometry, **sizes)
    assert raised.value.loc == loc
    assert words in raised.value.msg
