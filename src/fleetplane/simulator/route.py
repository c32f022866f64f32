"""Plausible vehicle days around a city: road-like routes, trips, stops, parkings and sensors.

Pure and deterministic: the same seed gives the same vehicle, whatever the message interval
(motion and sensor noise draw from separate random streams, so sampling more or less often
does not change where the vehicle goes).

The vehicle is stepped one simulated second at a time and sampled every `interval` seconds.
Streets form a slightly irregular grid: straight blocks between intersections, where the
vehicle goes on or turns by about 90 degrees. City streets are driven at 30-50 km/h and
arterial roads at 60-90 km/h, with acceleration, braking before turns, and red lights
(stops shorter than 5 minutes, engine on). A trip ends in a parking of at least 5 minutes with
the ignition off, where the vehicle refuels when the tank is low. The vehicle stays within a
radius of the centre by turning towards it when it strays.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

RIGA = (56.9496, 24.1052)
EARTH_RADIUS_M = 6_371_008.8

ACCELERATION = 1.5  # m/s², a loaded van pulling away
DECELERATION = 2.0  # m/s², ordinary braking
TURN_SPEED_KMH = (12.0, 22.0)
PARKING_IDLE_SECONDS = (5, 20)  # engine still running after arriving
WARM_UP_SECONDS = (15, 60)  # engine running before pulling away
RED_LIGHT_SECONDS = (10, 90)
HALT_SECONDS = (120, 240)  # a drop-off with the engine running, still well below a parking
HALT_CHANCE = 0.05  # per red light: the driver stays longer
DRIVER_CHANGE_CHANCE = 0.25  # per parking: the vehicle's other driver takes over


class Activity(Enum):
    DRIVING = "driving"
    STOPPED = "stopped"  # speed 0, ignition on: a red light, a short halt, warming up
    PARKED = "parked"  # ignition off


@dataclass(frozen=True, slots=True)
class RoadType:
    name: str
    cruise_kmh: tuple[float, float]
    block_metres: tuple[float, float]  # distance between intersections
    straight_on: float  # chance of going straight on at an intersection
    red_light: float  # chance of stopping at an intersection


CITY = RoadType("city", (30.0, 50.0), (120.0, 450.0), 0.55, 0.25)
ARTERIAL = RoadType("arterial", (60.0, 90.0), (400.0, 1600.0), 0.8, 0.12)


@dataclass(frozen=True, slots=True)
class VehicleProfile:
    """What kind of vehicle, and how its day goes. Start values are drawn when None."""

    tank_litres: float = 120.0
    litres_per_100km: float = 30.0
    idle_litres_per_hour: float = 1.5
    refuel_below: float = 0.2  # share of the tank
    radius_metres: float = 6000.0
    trip_metres: tuple[float, float] = (2000.0, 12000.0)
    parking_minutes: tuple[float, float] = (6.0, 25.0)
    no_fix_chance: float = 0.005  # per sample: entering a tunnel or an urban canyon
    start_fuel: float | None = None
    start_odometer_km: float | None = None
    start_engine_hours: float | None = None


@dataclass(frozen=True, slots=True)
class Fix:
    """One report as a tracker sends it, rounded to the device's resolution.

    Position, speed, course and altitude are None when the receiver has no fix.
    """

    time: datetime
    lat: float | None
    lon: float | None
    speed: int | None  # km/h
    course: int | None  # degrees, 0..359
    altitude: int | None  # metres
    satellites: int
    hdop: float | None
    ignition: bool
    fuel: float  # litres, 0.1
    power: float  # external supply, volts, 0.01
    odometer: float  # km, 0.001
    engine_hours: float  # hours, 0.01
    driver_key: str | None  # the driver's iButton while the engine runs (see `driver_keys`)
    activity: Activity
    road: str | None  # the road type while driving

    @property
    def has_fix(self) -> bool:
        return self.lat is not None and self.lon is not None


# --------------------------------------------------------------------------------------------
# Spherical geometry
# --------------------------------------------------------------------------------------------


def great_circle_metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of the Earth's mean radius."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def destination(lat: float, lon: float, bearing: float, metres: float) -> tuple[float, float]:
    """The point `metres` away along the great circle leaving at `bearing` degrees."""
    phi1, lambda1 = math.radians(lat), math.radians(lon)
    theta = math.radians(bearing)
    delta = metres / EARTH_RADIUS_M
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lambda2 = lambda1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * sin_phi2,
    )
    return math.degrees(phi2), (math.degrees(lambda2) + 540) % 360 - 180


def initial_bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlambda = math.radians(lon2 - lon1)
    y = math.sin(dlambda) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlambda)
    return math.degrees(math.atan2(y, x)) % 360


def _angle_between(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


# --------------------------------------------------------------------------------------------
# The vehicle
# --------------------------------------------------------------------------------------------


def ibutton_code(rng: random.Random) -> str:
    """A 1-Wire key id as trackers print it: family 01, 48-bit serial, then its CRC-8."""
    key = bytes([0x01]) + rng.getrandbits(48).to_bytes(6, "little")
    return (key + bytes([_maxim_crc8(key)])).hex().upper()


def _maxim_crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def _given_or_drawn(value: float | None, rng: random.Random, low: float, high: float) -> float:
    return value if value is not None else rng.uniform(low, high)


@dataclass(slots=True)
class _Leg:
    """A straight block between two intersections."""

    road: RoadType
    heading: float
    length: float
    cruise: float  # m/s


class _Vehicle:
    """Vehicle state, advanced one second per step of `seconds()`."""

    def __init__(self, seed: int | str, centre: tuple[float, float], profile: VehicleProfile):
        self._motion = random.Random(f"{seed}:motion")
        self.sensors = random.Random(f"{seed}:sensors")
        self.centre = centre
        self.profile = profile
        rng = self._motion
        # Start somewhere in the inner part of the area, on a street grid of its own angle.
        distance = profile.radius_metres * 0.6 * math.sqrt(rng.random())
        self.leg_start = destination(*centre, rng.uniform(0, 360), distance)
        self.grid_angle = rng.uniform(0, 90)
        self.heading = self.grid_angle + 90 * rng.randrange(4)
        self.along = 0.0  # metres from leg_start along heading
        self.speed = 0.0  # m/s
        self.ignition = False
        self.activity = Activity.PARKED
        self.road: RoadType | None = None
        # Two drivers share the vehicle, each with an iButton: the usual one and a relief
        # driver who takes over at some parkings. Their own random stream, so that the
        # vehicle goes where it went before drivers changed.
        self._drivers = random.Random(f"{seed}:drivers")
        self.driver_keys = (ibutton_code(rng), ibutton_code(self._drivers))
        self.driver_key = self.driver_keys[0]
        tank = profile.tank_litres
        self.fuel = _given_or_drawn(profile.start_fuel, rng, 0.35 * tank, 0.95 * tank)
        self.odometer = _given_or_drawn(profile.start_odometer_km, rng, 20e3, 250e3) * 1000
        self.engine_seconds = _given_or_drawn(profile.start_engine_hours, rng, 500, 9000) * 3600

    @property
    def position(self) -> tuple[float, float]:
        if self.along == 0:
            return self.leg_start
        return destination(*self.leg_start, self.heading, self.along)

    # -- the day: parkings, warm-ups, trips ------------------------------------------------------

    def seconds(self) -> Iterator[None]:
        rng = self._motion
        yield from self._park(rng.randint(0, 240))  # caught in the middle of a parking
        while True:
            yield from self._stand(rng.randint(*WARM_UP_SECONDS))
            yield from self._trip()
            yield from self._stand(rng.randint(*PARKING_IDLE_SECONDS))
            minutes = rng.uniform(*self.profile.parking_minutes)
            self._maybe_change_drivers()
            yield from self._park(round(minutes * 60), refuel=self._fuel_is_low())

    def _maybe_change_drivers(self) -> None:
        if self._drivers.random() < DRIVER_CHANGE_CHANCE:
            first, relief = self.driver_keys
            self.driver_key = relief if self.driver_key == first else first

    def _fuel_is_low(self) -> bool:
        return self.fuel < self.profile.refuel_below * self.profile.tank_litres

    def _park(self, seconds: int, refuel: bool = False) -> Iterator[None]:
        self.ignition, self.activity, self.speed, self.road = False, Activity.PARKED, 0.0, None
        target = self.profile.tank_litres * self._motion.uniform(0.92, 0.99)
        pump_rate = self._motion.uniform(0.4, 0.7)  # litres per second
        for second in range(seconds):
            # Fuelling starts after a minute (getting out, paying) and stops at the target.
            if refuel and second >= 60 and self.fuel < target:
                self.fuel = min(target, self.fuel + pump_rate)
            yield

    def _stand(self, seconds: int) -> Iterator[None]:
        """Standing still with the engine running."""
        self.ignition, self.activity, self.speed, self.road = True, Activity.STOPPED, 0.0, None
        for _ in range(seconds):
            self._run_engine(0.0)
            yield

    def _run_engine(self, metres: float) -> None:
        """One second with the engine on, covering `metres`."""
        self.engine_seconds += 1
        self.odometer += metres
        profile = self.profile
        if metres:
            burnt = metres * profile.litres_per_100km / 100_000
        else:
            burnt = profile.idle_litres_per_hour / 3600
        self.fuel = max(0.0, self.fuel - burnt)

    def _trip(self) -> Iterator[None]:
        rng = self._motion
        remaining = rng.uniform(*self.profile.trip_metres)
        leg = self._new_leg(self.heading, self._pick_road())
        self._enter(leg)
        while True:
            remaining -= leg.length
            if remaining <= 0:
                yield from self._drive(leg, 0.0)
                return
            after = self._next_leg(leg)
            red_light = rng.random() < leg.road.red_light
            turning = _angle_between(after.heading, leg.heading) > 45
            yield from self._drive(leg, self._end_speed(leg, after, red_light, turning))
            if red_light:
                halt = rng.random() < HALT_CHANCE
                yield from self._stand(rng.randint(*(HALT_SECONDS if halt else RED_LIGHT_SECONDS)))
            self._enter(after)
            leg = after

    def _end_speed(self, leg: _Leg, after: _Leg, red_light: bool, turning: bool) -> float:
        if red_light:
            return 0.0
        if turning:
            return self._motion.uniform(*TURN_SPEED_KMH) / 3.6
        return min(leg.cruise, after.cruise)

    def _drive(self, leg: _Leg, end_speed: float) -> Iterator[None]:
        """Along the leg at up to its cruise speed, arriving at `end_speed` (m/s)."""
        self.ignition, self.activity, self.road = True, Activity.DRIVING, leg.road
        while leg.length - self.along > 0.01:
            remaining = leg.length - self.along
            # The fastest speed from which braking still ends at end_speed by the intersection.
            can_stop_from = math.sqrt(end_speed**2 + 2 * DECELERATION * remaining)
            self.speed = min(self.speed + ACCELERATION, leg.cruise, can_stop_from)
            step = min(self.speed, remaining)
            self.along += step
            self._run_engine(step)
            yield
        self.speed = min(self.speed, end_speed)

    def _enter(self, leg: _Leg) -> None:
        self.leg_start = self.position
        self.heading = leg.heading
        self.along = 0.0

    # -- the street grid -------------------------------------------------------------------------

    def _new_leg(self, heading: float, road: RoadType) -> _Leg:
        rng = self._motion
        cruise = rng.uniform(*road.cruise_kmh) / 3.6
        return _Leg(road, heading % 360, rng.uniform(*road.block_metres), cruise)

    def _next_leg(self, leg: _Leg) -> _Leg:
        rng = self._motion
        straight_on = rng.random() < leg.road.straight_on
        heading = self._choose_heading(leg, straight_on)
        road = leg.road if straight_on and rng.random() < 0.9 else self._pick_road()
        return self._new_leg(heading, road)

    def _choose_heading(self, leg: _Leg, straight_on: bool) -> float:
        """The heading after the intersection at the end of `leg` (the leg being entered)."""
        rng = self._motion
        side = self.grid_angle + 90 * round((leg.heading - self.grid_angle) / 90)
        choices = [side, side + 90, side - 90]  # straight on, right, left (never a U-turn)
        end = destination(*self.leg_start, leg.heading, leg.length)
        if great_circle_metres(*end, *self.centre) > self.profile.radius_metres:
            home = initial_bearing(*end, *self.centre)
            best = min(choices, key=lambda option: _angle_between(option, home))
        elif straight_on:
            best = side
        else:
            best = rng.choice(choices[1:])
        return best + rng.uniform(-8, 8)  # streets are not ruled lines

    def _pick_road(self) -> RoadType:
        return ARTERIAL if self._motion.random() < 0.3 else CITY


# --------------------------------------------------------------------------------------------
# Sampling: what the tracker reports every `interval` seconds
# --------------------------------------------------------------------------------------------


class _Receiver:
    """GPS reception: satellites drift, and a fix is occasionally lost for up to a minute."""

    def __init__(self, rng: random.Random, no_fix_chance: float) -> None:
        self._rng = rng
        self._no_fix_chance = no_fix_chance
        self._satellites = rng.randint(8, 12)
        self._no_fix_until: datetime | None = None

    def read(self, now: datetime) -> tuple[bool, int, float | None]:
        """(has fix, satellites, HDOP)."""
        rng = self._rng
        if self._no_fix_until is None and rng.random() < self._no_fix_chance:
            self._no_fix_until = now + timedelta(seconds=rng.randint(15, 60))
        if self._no_fix_until is not None:
            if now < self._no_fix_until:
                return False, rng.randint(0, 3), None
            self._no_fix_until = None
        self._satellites = max(5, min(15, self._satellites + rng.choice((-1, 0, 0, 1))))
        hdop = max(0.5, 0.4 + 6 / self._satellites + rng.uniform(-0.1, 0.1))
        return True, self._satellites, round(hdop, 1)


def _altitude(lat: float, lon: float) -> int:
    """Riga is flat: a gentle, position-bound 4-18 m."""
    return round(11 + 7 * math.sin(lat * 300) * math.cos(lon * 170))


def driver_keys(seed: int | str) -> tuple[str, str]:
    """The iButton codes of the two drivers of the vehicle of `seed` (the usual one first):
    what `vehicle_fixes(seed, ...)` reports as `driver_key` while the engine runs."""
    return _Vehicle(seed, RIGA, VehicleProfile()).driver_keys


def vehicle_fixes(
    seed: int | str,
    start: datetime,
    interval: int = 10,
    centre: tuple[float, float] = RIGA,
    profile: VehicleProfile = VehicleProfile(),
) -> Iterator[Fix]:
    """An endless, time-ordered stream of one vehicle's reports, `interval` seconds apart.

    `start` should be a whole second in UTC: device times have no fractions.
    """
    if interval < 1:
        raise ValueError("the message interval is at least one second")
    vehicle = _Vehicle(seed, centre, profile)
    receiver = _Receiver(vehicle.sensors, profile.no_fix_chance)
    steps = vehicle.seconds()
    elapsed = 0
    while True:
        time = start + timedelta(seconds=elapsed)
        yield _sample(vehicle, receiver, time)
        for _ in range(interval):
            next(steps)
        elapsed += interval


def _sample(vehicle: _Vehicle, receiver: _Receiver, time: datetime) -> Fix:
    has_fix, satellites, hdop = receiver.read(time)
    lat, lon = vehicle.position
    noise = vehicle.sensors.uniform(-0.08, 0.08)
    power = 14.05 + noise if vehicle.ignition else 12.55 + noise  # alternator vs battery
    return Fix(
        time=time,
        lat=lat if has_fix else None,
        lon=lon if has_fix else None,
        speed=round(vehicle.speed * 3.6) if has_fix else None,
        course=round(vehicle.heading) % 360 if has_fix else None,
        altitude=_altitude(lat, lon) if has_fix else None,
        satellites=satellites,
        hdop=hdop,
        ignition=vehicle.ignition,
        fuel=round(vehicle.fuel, 1),
        power=round(power, 2),
        odometer=round(vehicle.odometer / 1000, 3),
        engine_hours=round(vehicle.engine_seconds / 3600, 2),
        driver_key=vehicle.driver_key if vehicle.ignition else None,
        activity=vehicle.activity,
        road=vehicle.road.name if vehicle.road is not None else None,
    )
