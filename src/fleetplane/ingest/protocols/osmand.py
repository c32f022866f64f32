"""OsmAnd over HTTP: one position per request, from phone tracking apps (Traccar Client and
others). Pure: the caller passes the request's fields or body and answers the HTTP request.

Two shapes are accepted:

- query string or form fields (`parse_osmand_fields`): `id` (or `deviceid`), `lat`, `lon`,
  `timestamp` (unix seconds, milliseconds, or ISO 8601), `speed` (knots), `bearing` (or
  `heading`), `altitude`, `accuracy`, `batt`, `charge`, `hdop`; any other field becomes a
  parameter;
- a JSON body (`parse_osmand_json`): `{"device_id", "location": {"timestamp", "coords":
  {"latitude", "longitude", "speed" (m/s), "heading", "altitude", "accuracy"}, "battery":
  {"level", "is_charging"}}}`.

A bad value of a field we interpret raises `OsmandError` naming that field (for a problem+json
answer). Choices where the protocol is loose:

- No `lat`/`lon` at all: a message without a position (like Wialon's `NA;NA`); only one of them
  is an error naming the missing one. No `timestamp`: the receive time, flagged as such.
- A timestamp of 10**11 or more is in milliseconds (10**11 seconds is the year 5138). An ISO
  time without an offset is UTC. `2024-05-01T10:00:00 02:00` is read as `+02:00`: form
  decoding turns an unescaped `+` into a space.
- A negative speed or heading means "unknown" (mobile location APIs report -1), so it is None.
- Parameters: `accuracy` (metres), `batt` (percent; the JSON battery level, a 0..1 fraction, is
  multiplied by 100), `charge` (1 or 0, from true/false/1/0). Other fields keep their name;
  their value becomes an int, a float or a string, in that order of preference. Empty values,
  names longer than 38 characters, strings longer than 1,344 characters and JSON arrays or
  nulls are dropped rather than refused, so one odd extra field never loses a position; at
  most 200 parameters are kept. JSON objects nested in `location` are flattened as
  `outer.inner`, booleans become 1/0.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from fleetplane.core.timeutil import checked_utc
from fleetplane.telemetry import Message, ParamValue

KNOTS_TO_KMH = 1.852
METRES_PER_SECOND_TO_KMH = 3.6
MAX_UNIQUE_ID = 64
MAX_PARAMS = 200
MAX_PARAM_NAME = 38
MAX_PARAM_STRING = 1344
_MILLISECONDS_FROM = 10**11
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_HUGE = 1e300

_QUERY_FIELDS = frozenset(
    {"id", "deviceid", "lat", "lon", "timestamp", "speed", "bearing", "heading", "altitude"}
    | {"accuracy", "batt", "charge", "hdop"}
)
_JSON_LOCATION_FIELDS = frozenset({"timestamp", "coords", "battery"})
_JSON_COORDS_FIELDS = frozenset(
    {"latitude", "longitude", "speed", "heading", "altitude", "accuracy"}
)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class OsmandError(ValueError):
    """A field we interpret has a value we cannot use; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# -- values ----------------------------------------------------------------------------------


def _number(value: Any, field: str) -> float | None:
    """A finite number from a form string or a JSON value; None when absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise OsmandError(field, "must be a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise OsmandError(field, f"not a number: {_preview(value)}") from None
    if not -_HUGE < number < _HUGE:
        raise OsmandError(field, "must be a finite number")
    return number


def _preview(value: Any) -> str:
    if isinstance(value, int):
        return "a huge integer"
    return repr(str(value)[:40])


def _in_range(value: Any, field: str, low: float, high: float) -> float | None:
    number = _number(value, field)
    if number is not None and not low <= number <= high:
        raise OsmandError(field, f"must be between {low:g} and {high:g}")
    return number


def _unknown_if_negative(value: Any, field: str, high: float = _HUGE) -> float | None:
    number = _number(value, field)
    if number is None or number < 0:
        return None
    if number > high:
        raise OsmandError(field, f"must be at most {high:g}")
    return number


def _unique_id(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**MAX_UNIQUE_ID:
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise OsmandError(field, "a device id is required")
    value = value.strip()
    if len(value) > MAX_UNIQUE_ID or not value.isprintable() or any(c.isspace() for c in value):
        raise OsmandError(field, f"not a device id: at most {MAX_UNIQUE_ID} printable characters")
    return value


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise OsmandError(field, "must be unix seconds, milliseconds or ISO 8601")
    if isinstance(value, int | float):
        if not -_HUGE < value < _HUGE:
            raise OsmandError(field, "unix time out of range")
        return _from_epoch(float(value), field)
    if not isinstance(value, str):
        raise OsmandError(field, "must be unix seconds, milliseconds or ISO 8601")
    try:
        seconds = float(value)
    except ValueError:
        return _from_iso(value.strip(), field)
    return _from_epoch(seconds, field)


def _from_epoch(seconds: float, field: str) -> datetime:
    if not 0 <= seconds < _HUGE:
        raise OsmandError(field, "must be a positive unix time")
    if seconds >= _MILLISECONDS_FROM:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise OsmandError(field, "unix time out of range") from None


def _from_iso(text: str, field: str) -> datetime:
    candidates = [text]
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        candidates.append(f"{text[:-6]}+{text[-5:]}")
    for candidate in candidates:
        try:
            moment = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        try:
            return checked_utc(moment)
        except ValueError as error:
            raise OsmandError(field, str(error)) from None
    raise OsmandError(field, f"not unix seconds, milliseconds or ISO 8601: {text[:40]!r}")


def _switch(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise OsmandError(field, "must be true or false")


def _param_value(value: Any) -> ParamValue | None:
    """The stored form of an extra field's value; None to drop it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, float):
        return value if -_HUGE < value < _HUGE else None
    if not isinstance(value, str) or not value or len(value) > MAX_PARAM_STRING:
        return None
    return _typed_text(value)


def _typed_text(text: str) -> ParamValue:
    stripped = text.strip()
    try:
        number = int(stripped)
    except ValueError:
        pass
    else:
        return number if _INT64_MIN <= number <= _INT64_MAX else text
    try:
        decimal = float(stripped)
    except ValueError:
        return text
    return decimal if -_HUGE < decimal < _HUGE else text


def _add_param(params: dict[str, ParamValue], name: str, value: Any) -> None:
    if len(params) >= MAX_PARAMS or not name or len(name) > MAX_PARAM_NAME:
        return
    stored = _param_value(value)
    if stored is not None:
        params[name] = stored


def _position(lat: Any, lon: Any, lat_field: str, lon_field: str) -> tuple[float | None, ...]:
    latitude = _in_range(lat, lat_field, -90, 90)
    longitude = _in_range(lon, lon_field, -180, 180)
    if latitude is None and longitude is not None:
        raise OsmandError(lat_field, "required with a longitude")
    if longitude is None and latitude is not None:
        raise OsmandError(lon_field, "required with a latitude")
    return latitude, longitude


# -- the two request shapes ------------------------------------------------------------------


def parse_osmand_fields(fields: Mapping[str, str], received_at: datetime) -> tuple[str, Message]:
    """Query string or form fields -> (device unique id, message)."""
    id_field = "deviceid" if not fields.get("id") and fields.get("deviceid") else "id"
    unique_id = _unique_id(fields.get(id_field), id_field)
    lat, lon = _position(fields.get("lat"), fields.get("lon"), "lat", "lon")
    device_time = _timestamp(fields.get("timestamp"), "timestamp")
    speed_knots = _unknown_if_negative(fields.get("speed"), "speed")
    course_field = "bearing" if fields.get("bearing") not in (None, "") else "heading"
    params: dict[str, ParamValue] = {}
    _add_param(params, "accuracy", _number(fields.get("accuracy"), "accuracy"))
    _add_param(params, "batt", _number(fields.get("batt"), "batt"))
    _add_param(params, "charge", _switch(fields.get("charge"), "charge"))
    for name, value in fields.items():
        if name not in _QUERY_FIELDS:
            _add_param(params, name, value)
    message = Message(
        device_time or received_at,
        received_at,
        lat,
        lon,
        altitude=_number(fields.get("altitude"), "altitude"),
        speed=None if speed_knots is None else speed_knots * KNOTS_TO_KMH,
        course=_unknown_if_negative(fields.get(course_field), course_field, 360),
        hdop=_in_range(fields.get("hdop"), "hdop", 0, _HUGE),
        params=params,
        device_time_missing=device_time is None,
    )
    return unique_id, message


def parse_osmand_json(
    body: bytes | str | Mapping[str, Any], received_at: datetime
) -> tuple[str, Message]:
    """The JSON body variant -> (device unique id, message)."""
    document = _json_object(body)
    unique_id = _unique_id(document.get("device_id"), "device_id")
    location = _object(document.get("location"), "location", required=True)
    coords = _object(location.get("coords"), "location.coords")
    battery = _object(location.get("battery"), "location.battery")
    lat, lon = _position(
        coords.get("latitude"),
        coords.get("longitude"),
        "location.coords.latitude",
        "location.coords.longitude",
    )
    device_time = _timestamp(location.get("timestamp"), "location.timestamp")
    speed = _unknown_if_negative(coords.get("speed"), "location.coords.speed")
    params: dict[str, ParamValue] = {}
    _add_param(params, "accuracy", _number(coords.get("accuracy"), "location.coords.accuracy"))
    level = _number(battery.get("level"), "location.battery.level")
    if level is not None and 0 <= level <= 1:
        _add_param(params, "batt", round(level * 100, 2))
    _add_param(
        params, "charge", _switch(battery.get("is_charging"), "location.battery.is_charging")
    )
    _add_extras(params, coords, _JSON_COORDS_FIELDS)
    _add_extras(params, location, _JSON_LOCATION_FIELDS)
    message = Message(
        device_time or received_at,
        received_at,
        lat,
        lon,
        altitude=_number(coords.get("altitude"), "location.coords.altitude"),
        speed=None if speed is None else speed * METRES_PER_SECOND_TO_KMH,
        course=_unknown_if_negative(coords.get("heading"), "location.coords.heading", 360),
        params=params,
        device_time_missing=device_time is None,
    )
    return unique_id, message


def _json_object(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise OsmandError("body", f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise OsmandError("body", "must be a JSON object")
    return document


def _object(value: Any, field: str, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise OsmandError(field, "must be a JSON object")
    return value


def _add_extras(
    params: dict[str, ParamValue], members: Mapping[str, Any], known: frozenset[str]
) -> None:
    for name, value in members.items():
        if name in known:
            continue
        if isinstance(value, Mapping):
            for inner, inner_value in value.items():
                if not isinstance(inner_value, Mapping):
                    _add_param(params, f"{name}.{inner}", inner_value)
        else:
            _add_param(params, name, value)
