"""Distances on the WGS 84 ellipsoid: one formula, for one pair of points (`distance_m`), for
pairs of point arrays (`distances_m`) and along a path (`path_distances_m`), used by everything
that measures a distance (the live odometer, the jump filter, trips).

The formula is Lambert's (Andoyer-Lambert): the great-circle distance between the points'
reduced latitudes with a first-order correction for the flattening. Against exact geodesics
its error is about 1e-5 of the distance or less (tests/core/test_geo.py checks it against
GeographicLib), where a sphere is off by up to 0.5 %. It is closed-form, so it vectorises, and
costs about 2 microseconds in plain Python.

With h = sin²(s/2) of the central angle s between the reduced latitudes b1, b2:
    d = a (s - f/2 (X + Y)),  X = (s - sin s) ((sin b1 + sin b2)/2)² / (1 - h),
                              Y = (s + sin s) ((sin b2 - sin b1)/2)² / h
"""

from math import asin, atan, cos, radians, sin, sqrt, tan

import numpy as np
import numpy.typing as npt

# WGS 84
SEMI_MAJOR_AXIS_M = 6_378_137.0
FLATTENING = 1 / 298.257223563
# Near the antipode the correction's denominator vanishes; no vehicle goes there in one step.
_TINY = 1e-300

FloatArray = npt.NDArray[np.float64]


# A latitude's terms in the formula: the reduced latitude, its sine and its cosine.
Reduced = tuple[float, float, float]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The distance in metres between two points (degrees) on the WGS 84 ellipsoid."""
    return distance_reduced_m(reduced(lat1), lon1, reduced(lat2), lon2)


def reduced(lat: float) -> Reduced:
    """A latitude's own terms, for `distance_reduced_m`: along a path each point's are then
    computed once, not once per segment on each side."""
    beta = atan((1 - FLATTENING) * tan(radians(lat)))
    return beta, sin(beta), cos(beta)


def distance_reduced_m(first: Reduced, lon1: float, second: Reduced, lon2: float) -> float:
    """`distance_m` from the points' `reduced` latitudes: the same value, to the last bit."""
    beta1, sin_beta1, cos_beta1 = first
    beta2, sin_beta2, cos_beta2 = second
    half_dlambda = sin(radians(lon2 - lon1) / 2)
    h = sin((beta2 - beta1) / 2) ** 2 + cos_beta1 * cos_beta2 * half_dlambda**2
    h = min(h, 1.0)
    if h <= 0.0:
        return 0.0
    root = sqrt(h)
    sigma = 2 * asin(root)
    sin_sigma = 2 * root * sqrt(1 - h)
    x = (sigma - sin_sigma) * ((sin_beta1 + sin_beta2) / 2) ** 2 / max(1 - h, _TINY)
    y = (sigma + sin_sigma) * ((sin_beta2 - sin_beta1) / 2) ** 2 / h
    return SEMI_MAJOR_AXIS_M * (sigma - FLATTENING / 2 * (x + y))


def distances_m(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray
) -> FloatArray:
    """`distance_m` element by element over arrays of degrees (NaN where a point is NaN)."""
    beta1, beta2 = _reduced(lat1), _reduced(lat2)
    return _lambert(beta1, np.sin(beta1), np.cos(beta1), beta2, lon2 - lon1)


def path_distances_m(lat: FloatArray, lon: FloatArray) -> FloatArray:
    """The distances between successive points of a path (one fewer than the points): the
    same values as `distances_m`, each point's own terms computed once."""
    beta = _reduced(lat)
    return _lambert(beta, np.sin(beta), np.cos(beta), None, np.diff(lon))


def _reduced(lat: FloatArray) -> FloatArray:
    reduced: FloatArray = np.arctan((1 - FLATTENING) * np.tan(np.radians(lat)))
    return reduced


def _lambert(
    beta: FloatArray,
    sin_beta: FloatArray,
    cos_beta: FloatArray,
    beta2: FloatArray | None,
    dlon: FloatArray,
) -> FloatArray:
    """Pairs (beta, beta2) when beta2 is given, else successive elements of beta."""
    if beta2 is None:
        beta1, beta2 = beta[:-1], beta[1:]
        sin1, sin2 = sin_beta[:-1], sin_beta[1:]
        cos_product = cos_beta[:-1] * cos_beta[1:]
    else:
        beta1, sin1, sin2 = beta, sin_beta, np.sin(beta2)
        cos_product = cos_beta * np.cos(beta2)
    h = np.sin((beta2 - beta1) / 2) ** 2 + cos_product * np.sin(np.radians(dlon) / 2) ** 2
    h = np.minimum(h, 1.0)
    same = h <= 0.0
    h = np.where(same, 1.0, h)
    root = np.sqrt(h)
    sigma = 2 * np.arcsin(root)
    sin_sigma = 2 * root * np.sqrt(1 - h)
    x = (sigma - sin_sigma) * ((sin1 + sin2) / 2) ** 2 / np.maximum(1 - h, _TINY)
    y = (sigma + sin_sigma) * ((sin2 - sin1) / 2) ** 2 / h
    result: FloatArray = np.where(same, 0.0, SEMI_MAJOR_AXIS_M * (sigma - FLATTENING / 2 * (x + y)))
    return result
