"""OsmAnd over HTTP: query/form fields and the JSON body, with errors naming the field."""

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetplane.ingest.protocols.osmand import (
    OsmandError,
    parse_osmand_fields,
    parse_osmand_json,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TRACCAR_CLIENT = {
    "id": "phone-1",
    "timestamp": "1714564800",
    "lat": "52.5200",
    "lon": "13.4050",
    "speed": "10",
    "bearing": "90.5",
    "altitude": "34.0",
    "accuracy": "4.5",
    "batt": "87.0",
    "charge": "true",
}


def test_traccar_client_fields() -> None:
    unique_id, message = parse_osmand_fields(TRACCAR_CLIENT, NOW)
    assert unique_id == "phone-1"
    assert message.device_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert not message.device_time_missing
    assert (message.lat, message.lon) == (52.52, 13.405)
    assert message.speed == pytest.approx(18.52)  # 10 knots
    assert message.course == 90.5
    assert message.altitude == 34.0
    assert message.received_at == NOW
    assert message.params == {"accuracy": 4.5, "batt": 87.0, "charge": 1}


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("1714564800", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("1714564800.5", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("1714564800250", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T14:00:00 02:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01 12:00:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123Z", datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)),
    ],
)
def test_timestamps(timestamp: str, expected: datetime) -> None:
    _, message = parse_osmand_fields({"id": "a", "timestamp": timestamp}, NOW)
    assert message.device_time == expected


@pytest.mark.parametrize(
    "timestamp",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59 -14:00"],
)
def test_timestamps_without_a_utc_value_name_the_field(timestamp: str) -> None:
    with pytest.raises(OsmandError) as refused:
        parse_osmand_fields({"id": "a", "timestamp": timestamp}, NOW)
    assert refused.value.field == "timestamp"
    with pytest.raises(OsmandError) as refused:
        parse_osmand_json({"device_id": "a", "location": {"timestamp": timestamp}}, NOW)
    assert refused.value.field == "location.timestamp"


def test_missing_timestamp_and_position() -> None:
    _, message = parse_osmand_fields({"deviceid": "a"}, NOW)
    assert message.device_time == NOW and message.device_time_missing
    assert message.lat is None and message.lon is None


def test_deviceid_is_an_alias_of_id() -> None:
    assert parse_osmand_fields({"deviceid": "x1", "lat": "1", "lon": "2"}, NOW)[0] == "x1"
    assert parse_osmand_fields({"id": "a", "deviceid": "b"}, NOW)[0] == "a"


def test_heading_is_an_alias_of_bearing() -> None:
    assert parse_osmand_fields({"id": "a", "heading": "45"}, NOW)[1].course == 45


def test_negative_speed_and_bearing_mean_unknown() -> None:
    _, message = parse_osmand_fields({"id": "a", "speed": "-1", "bearing": "-1"}, NOW)
    assert message.speed is None and message.course is None


def test_hdop_and_other_fields_become_parameters() -> None:
    fields = {
        "id": "a",
        "hdop": "1.2",
        "driverUniqueId": "D-7",
        "odometer": "12345",
        "temp": "21.5",
        "motion": "false",
        "signs": "+-5",
        "big": str(2**64),
        "notanumber": "nan",
        "empty": "",
        "x" * 39: "too long a name",
        "long": "y" * 1345,
    }
    _, message = parse_osmand_fields(fields, NOW)
    assert message.hdop == 1.2
    assert message.params == {
        "driverUniqueId": "D-7",
        "odometer": 12345,
        "temp": 21.5,
        "motion": "false",
        "signs": "+-5",
        "big": str(2**64),
        "notanumber": "nan",
    }


def test_at_most_200_parameters() -> None:
    fields = {"id": "a"} | {f"p{i}": str(i) for i in range(300)}
    assert len(parse_osmand_fields(fields, NOW)[1].params) == 200


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "id"),
        ({"id": ""}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"id": "a", "lat": "north", "lon": "1"}, "lat"),
        ({"id": "a", "lat": "91", "lon": "1"}, "lat"),
        ({"id": "a", "lat": "1", "lon": "-181"}, "lon"),
        ({"id": "a", "lat": "1"}, "lon"),
        ({"id": "a", "lon": "1"}, "lat"),
        ({"id": "a", "lat": "nan", "lon": "1"}, "lat"),
        ({"id": "a", "timestamp": "yesterday"}, "timestamp"),
        ({"id": "a", "timestamp": "-5"}, "timestamp"),
        ({"id": "a", "timestamp": "1e30"}, "timestamp"),
        ({"id": "a", "speed": "fast"}, "speed"),
        ({"id": "a", "bearing": "400"}, "bearing"),
        ({"id": "a", "heading": "x"}, "heading"),
        ({"id": "a", "altitude": "high"}, "altitude"),
        ({"id": "a", "accuracy": "good"}, "accuracy"),
        ({"id": "a", "batt": "full"}, "batt"),
        ({"id": "a", "charge": "maybe"}, "charge"),
        ({"id": "a", "hdop": "-1"}, "hdop"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, str], field: str) -> None:
    with pytest.raises(OsmandError) as raised:
        parse_osmand_fields(fields, NOW)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


# -- JSON ------------------------------------------------------------------------------------

JSON_BODY = {
    "device_id": "phone-2",
    "location": {
        "timestamp": "2024-05-01T12:00:00.000Z",
        "coords": {
            "latitude": 52.52,
            "longitude": 13.405,
            "speed": 5.0,
            "heading": 180,
            "altitude": 40.5,
            "accuracy": 3,
            "speed_accuracy": 0.5,
        },
        "battery": {"level": 0.42, "is_charging": False},
        "is_moving": True,
        "odometer": 1234.5,
        "activity": {"type": "in_vehicle", "confidence": 90},
        "extras": None,
        "list": [1, 2],
    },
}


def test_json_body() -> None:
    unique_id, message = parse_osmand_json(orjson.dumps(JSON_BODY), NOW)
    assert unique_id == "phone-2"
    assert message.device_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert (message.lat, message.lon) == (52.52, 13.405)
    assert message.speed == pytest.approx(18.0)  # 5 m/s
    assert message.course == 180
    assert message.altitude == 40.5
    assert message.params == {
        "accuracy": 3,
        "batt": 42.0,
        "charge": 0,
        "speed_accuracy": 0.5,
        "is_moving": 1,
        "odometer": 1234.5,
        "activity.type": "in_vehicle",
        "activity.confidence": 90,
    }


def test_json_body_as_text_or_mapping() -> None:
    assert parse_osmand_json(orjson.dumps(JSON_BODY).decode(), NOW)[0] == "phone-2"
    assert parse_osmand_json(JSON_BODY, NOW)[0] == "phone-2"


def test_json_minimal_and_numeric_id() -> None:
    unique_id, message = parse_osmand_json({"device_id": 12345, "location": {}}, NOW)
    assert unique_id == "12345"
    assert message.device_time_missing and message.lat is None


def test_json_unknown_battery_level_and_negative_speed() -> None:
    body = {
        "device_id": "a",
        "location": {
            "timestamp": 1714564800000,
            "coords": {"latitude": 1, "longitude": 2, "speed": -1, "heading": -1},
            "battery": {"level": -1},
        },
    }
    _, message = parse_osmand_json(body, NOW)
    assert message.device_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert message.speed is None and message.course is None
    assert "batt" not in message.params


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (b'"text"', "body"),
        ({"location": {}}, "device_id"),
        ({"device_id": True, "location": {}}, "device_id"),
        ({"device_id": "a"}, "location"),
        ({"device_id": "a", "location": [{}]}, "location"),
        ({"device_id": "a", "location": {"coords": 5}}, "location.coords"),
        ({"device_id": "a", "location": {"battery": "full"}}, "location.battery"),
        (
            {"device_id": "a", "location": {"coords": {"latitude": "x", "longitude": 1}}},
            "location.coords.latitude",
        ),
        (
            {"device_id": "a", "location": {"coords": {"latitude": 1}}},
            "location.coords.longitude",
        ),
        (
            {"device_id": "a", "location": {"coords": {"latitude": 1, "longitude": 200}}},
            "location.coords.longitude",
        ),
        (
            {"device_id": "a", "location": {"coords": {"speed": True}}},
            "location.coords.speed",
        ),
        ({"device_id": "a", "location": {"timestamp": "soon"}}, "location.timestamp"),
        ({"device_id": "a", "location": {"timestamp": True}}, "location.timestamp"),
        ({"device_id": "a", "location": {"timestamp": [1]}}, "location.timestamp"),
        (
            {"device_id": "a", "location": {"battery": {"level": "half"}}},
            "location.battery.level",
        ),
        (
            {"device_id": "a", "location": {"battery": {"is_charging": "perhaps"}}},
            "location.battery.is_charging",
        ),
        ({"device_id": 10**400, "location": {}}, "device_id"),
        ({"device_id": "a", "location": {"timestamp": 10**400}}, "location.timestamp"),
        ({"device_id": "a", "location": {"timestamp": 1e308}}, "location.timestamp"),
        (
            {"device_id": "a", "location": {"coords": {"altitude": 10**400}}},
            "location.coords.altitude",
        ),
    ],
)
def test_json_errors_name_the_field(body, field: str) -> None:
    with pytest.raises(OsmandError) as raised:
        parse_osmand_json(body, NOW)
    assert raised.value.field == field


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=12))
def test_any_fields_give_a_message_or_a_named_error(fields: dict[str, str]) -> None:
    try:
        unique_id, message = parse_osmand_fields({"id": "dev", **fields}, NOW)
    except OsmandError as error:
        # the field itself, or the missing half of a position
        assert error.field in fields or error.field in ("lat", "lon")
    else:
        assert unique_id
        assert message.device_time.tzinfo is not None


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(2**64), 2**63])
    | st.floats()
    | st.text(max_size=10)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


KNOWN_NAMES = st.sampled_from(
    [
        *("timestamp", "coords", "battery", "latitude", "longitude", "speed", "heading"),
        *("altitude", "accuracy", "level", "is_charging", "other"),
    ]
)
NAMED_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(KNOWN_NAMES, children, max_size=6)
    ),
    max_leaves=16,
)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES | NAMED_VALUES)
def test_any_json_gives_a_message_or_a_named_error(location) -> None:
    try:
        parse_osmand_json({"device_id": "dev", "location": location}, NOW)
    except OsmandError as error:
        assert error.field.startswith("location")
