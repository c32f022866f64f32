"""Distances on the WGS 84 ellipsoid, checked against GeographicLib's exact geodesics: within
0.01 % for every pair of points a vehicle can report (the rules ask for 0.5 %), the same from
the scalar, pairwise and path forms."""

import math

import numpy as np
from geographiclib.geodesic import Geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.core.geo import distance_m, distances_m, path_distances_m

EXACT = Geodesic.WGS84
TOLERANCE = 1e-4  # relative

latitudes = st.floats(-85, 85)
longitudes = st.floats(-180, 180)
# From millimetres to a few thousand kilometres.
steps = st.floats(1e-8, 30).flatmap(lambda scale: st.tuples(st.just(scale), st.floats(-1, 1)))


@settings(max_examples=2000, deadline=None)
@given(latitudes, longitudes, steps, steps)
def test_distance_is_within_a_hundredth_of_a_percent_of_the_geodesic(
    lat: float, lon: float, north: tuple[float, float], east: tuple[float, float]
) -> None:
    lat2 = max(-89.0, min(89.0, lat + north[0] * north[1]))
    lon2 = lon + east[0] * east[1]
    exact = EXACT.Inverse(lat, lon, lat2, lon2)["s12"]
    scalar = distance_m(lat, lon, lat2, lon2)
    pairwise = distances_m(*(np.array([value]) for value in (lat, lon, lat2, lon2)))[0]
    path = path_distances_m(np.array([lat, lat2]), np.array([lon, lon2]))[0]
    for found in (scalar, pairwise, path):
        assert math.isclose(found, exact, rel_tol=TOLERANCE, abs_tol=1e-6)


def test_known_distances() -> None:
    # One degree of latitude at the equator and at the pole, one of longitude at 60° N.
    assert math.isclose(distance_m(0, 0, 1, 0), 110_574.389, rel_tol=1e-5)
    assert math.isclose(distance_m(89, 0, 90, 0), 111_693.865, rel_tol=1e-5)
    assert math.isclose(distance_m(60, 0, 60, 1), EXACT.Inverse(60, 0, 60, 1)["s12"], rel_tol=1e-6)
    assert distance_m(56.9, 24.1, 56.9, 24.1) == 0.0


def test_the_array_forms_agree_and_carry_missing_points_as_nan() -> None:
    lat = np.array([56.9, 56.91, np.nan, 56.92, 56.93])
    lon = np.array([24.1, 24.12, 24.13, 24.14, 24.1])
    path = path_distances_m(lat, lon)
    pairs = distances_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    np.testing.assert_allclose(path, pairs, rtol=1e-12)
    assert np.isnan(path[1]) and np.isnan(path[2])
    assert path[0] == distance_m(56.9, 24.1, 56.91, 24.12) or math.isclose(
        path[0], distance_m(56.9, 24.1, 56.91, 24.12), rel_tol=1e-12
    )
