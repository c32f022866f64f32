from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetplane.core.schemas import NON_BLANK_LINE_PATTERN, RequestBody, ResponseBody, name_field

Shape = Literal["circle", "polygon", "corridor"]

MAX_RADIUS_M = 1_000_000.0
MAX_WIDTH_M = 100_000.0
MAX_SPEED_LIMIT = 500.0
MAX_GROUPS = 100
MAX_IMPORT = 10_000
MAX_DESCRIPTION = 2000
COLOR_PATTERN = r"^#[0-9A-Fa-f]{6}$"
# Text that may span lines, but holds no NUL (PostgreSQL stores none).
NO_NUL_PATTERN = r"^[^\x00]*$"

Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Position = Annotated[
    list[Coordinate],
    Field(
        min_length=2,
        max_length=3,
        description="`[longitude, latitude]` in degrees (WGS 84): longitude -180 to 180, "
        "latitude -90 to 90; an altitude may follow and is ignored.",
    ),
]
Ring = Annotated[
    list[Position],
    Field(
        min_length=4,
        description="A closed linear ring: the last position repeats the first. The first "
        "ring of a polygon is its outline, the others are holes.",
    ),
]
PolygonCoordinates = Annotated[list[Ring], Field(min_length=1)]
BoundingBox = Annotated[
    list[Coordinate] | None,
    Field(default=None, description="Ignored: the bounds are worked out from the coordinates."),
]


class PointGeometry(RequestBody):
    """A circle's centre; the geofence's `radius_m` is its radius."""

    type: Literal["Point"]
    coordinates: Position
    bbox: BoundingBox = None


class LineStringGeometry(RequestBody):
    """A corridor's line (along the geodesics between its positions); the geofence's
    `width_m` is its full width."""

    type: Literal["LineString"]
    coordinates: Annotated[list[Position], Field(min_length=2)]
    bbox: BoundingBox = None


class PolygonGeometry(RequestBody):
    type: Literal["Polygon"]
    coordinates: PolygonCoordinates
    bbox: BoundingBox = None


class MultiPolygonGeometry(RequestBody):
    """Polygons that do not overlap."""

    type: Literal["MultiPolygon"]
    coordinates: Annotated[list[PolygonCoordinates], Field(min_length=1)]
    bbox: BoundingBox = None


Geometry = Annotated[
    PointGeometry | LineStringGeometry | PolygonGeometry | MultiPolygonGeometry,
    Field(discriminator="type"),
]

GEOMETRY_HELP = (
    "GeoJSON geometry: a `Point` (a circle, with `radius_m`), a `LineString` (a corridor, "
    "with `width_m`), a `Polygon` or a `MultiPolygon` (holes allowed). Polygon edges are "
    "straight in longitude and latitude, as in GeoJSON; a ring that crosses the antimeridian "
    "(two positions more than 180° of longitude apart) crosses it the short way. Rings must "
    "be closed and must not cross themselves."
)
RADIUS_HELP = "A circle's radius in metres (on the WGS 84 ellipsoid); only with a `Point`."
WIDTH_HELP = (
    "A corridor's full width in metres: a position within `width_m / 2` of the line is "
    "inside; only with a `LineString`."
)
SPEED_LIMIT_HELP = "The speed limit inside the geofence, km/h (for speeding rules and reports)."
ADDRESS_HELP = (
    "Use the geofence's name as an address: trips starting or ending inside it are named after it."
)
DWELL_HELP = (
    "The dwell delay in seconds: a visit counts (is listed, and its enter and exit are "
    "announced) only once the device has been inside this long; 0 counts every visit."
)
MAX_DWELL_S = 7 * 86_400
GROUPS_HELP = "The groups the geofence is in (ids of the customer's geofence groups)."


def _radius(**field: Any) -> Any:
    return Field(gt=0, le=MAX_RADIUS_M, allow_inf_nan=False, description=RADIUS_HELP, **field)


def _width(**field: Any) -> Any:
    return Field(gt=0, le=MAX_WIDTH_M, allow_inf_nan=False, description=WIDTH_HELP, **field)


def _speed_limit(**field: Any) -> Any:
    return Field(
        gt=0, le=MAX_SPEED_LIMIT, allow_inf_nan=False, description=SPEED_LIMIT_HELP, **field
    )


def _dwell(**field: Any) -> Any:
    return Field(ge=0, le=MAX_DWELL_S, description=DWELL_HELP, **field)


def _color(**field: Any) -> Any:
    return Field(pattern=COLOR_PATTERN, description="`#RRGGBB`, for maps.", **field)


def _description(**field: Any) -> Any:
    return Field(max_length=MAX_DESCRIPTION, pattern=NO_NUL_PATTERN, **field)


GroupIds = Annotated[
    list[Annotated[str, Field(max_length=40, pattern=NON_BLANK_LINE_PATTERN)]],
    Field(max_length=MAX_GROUPS, description=GROUPS_HELP),
]


class GeofenceCreate(RequestBody):
    name: str = name_field()
    description: str | None = _description(default=None)
    geometry: Geometry = Field(description=GEOMETRY_HELP)
    radius_m: float | None = _radius(default=None)
    width_m: float | None = _width(default=None)
    color: str | None = _color(default=None)
    group_ids: GroupIds = Field(default_factory=list)
    is_address: bool = Field(default=False, description=ADDRESS_HELP)
    speed_limit: float | None = _speed_limit(default=None)
    dwell_s: int = _dwell(default=0)


class GeofenceUpdate(RequestBody):
    """Only the fields sent change. A new `geometry` of another shape drops the old shape's
    `radius_m` or `width_m`, and needs its own."""

    name: str | None = name_field(default=None)
    description: str | None = _description(default=None)
    geometry: Geometry | None = Field(default=None, description=GEOMETRY_HELP)
    radius_m: float | None = _radius(default=None)
    width_m: float | None = _width(default=None)
    color: str | None = _color(default=None)
    group_ids: GroupIds | None = Field(
        default=None, description=GROUPS_HELP + " Replaces the list."
    )
    is_address: bool | None = Field(default=None, description=ADDRESS_HELP)
    speed_limit: float | None = _speed_limit(default=None)
    dwell_s: int | None = _dwell(default=None)


class GeometryOut(ResponseBody):
    type: Literal["Point", "LineString", "Polygon", "MultiPolygon"]
    coordinates: list[Any]


class GeofenceOut(ResponseBody):
    id: str
    name: str
    description: str | None
    shape: Shape = Field(description="`circle`, `polygon` or `corridor`, from the geometry.")
    geometry: GeometryOut
    radius_m: float | None = Field(description=RADIUS_HELP)
    width_m: float | None = Field(description=WIDTH_HELP)
    color: str | None
    group_ids: list[str] = Field(description=GROUPS_HELP)
    is_address: bool = Field(description=ADDRESS_HELP)
    speed_limit: float | None = Field(description=SPEED_LIMIT_HELP)
    dwell_s: int = Field(description=DWELL_HELP)
    area_m2: float = Field(description="The surface inside, in square metres.")
    created_at: datetime
    updated_at: datetime


class GeofenceList(ResponseBody):
    items: list[GeofenceOut]


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


class GroupCreate(RequestBody):
    name: str = name_field()
    description: str | None = _description(default=None)
    color: str | None = _color(default=None)


class GroupUpdate(RequestBody):
    name: str | None = name_field(default=None)
    description: str | None = _description(default=None)
    color: str | None = _color(default=None)


class GroupOut(ResponseBody):
    id: str
    name: str
    description: str | None
    color: str | None
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------------------------
# Import and export (GeoJSON FeatureCollection)
# --------------------------------------------------------------------------------------------


class ImportedProperties(BaseModel):
    """What a feature's `properties` say of its geofence; other properties are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = name_field(
        default=None, description="The geofence's name; none: `Geofence <n>` (n from 1)."
    )
    description: str | None = _description(default=None)
    radius_m: float | None = _radius(default=None)
    width_m: float | None = _width(default=None)
    color: str | None = _color(default=None)
    is_address: bool = Field(default=False, description=ADDRESS_HELP)
    speed_limit: float | None = _speed_limit(default=None)
    dwell_s: int = _dwell(default=0)
    groups: list[Annotated[str, name_field()]] = Field(
        default_factory=list,
        max_length=MAX_GROUPS,
        description="Names of geofence groups to put it in: the customer's group of that "
        "name, made when there is none.",
    )


class ImportedFeature(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["Feature"]
    id: str | int | None = Field(
        default=None, description="Ignored: imported geofences get new ids."
    )
    geometry: Geometry
    properties: ImportedProperties | None = None


class FeatureCollectionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["FeatureCollection"]
    features: list[ImportedFeature] = Field(max_length=MAX_IMPORT)


class ImportResult(ResponseBody):
    created: int
    ids: list[str] = Field(description="The new geofences' ids, in the features' order.")


class FeatureProperties(ResponseBody):
    name: str
    description: str | None
    shape: Shape
    radius_m: float | None
    width_m: float | None
    color: str | None
    is_address: bool
    speed_limit: float | None
    dwell_s: int
    group_ids: list[str]
    groups: list[str] = Field(description="The groups' names.")


class FeatureOut(ResponseBody):
    type: Literal["Feature"]
    id: str
    geometry: GeometryOut
    properties: FeatureProperties


class FeatureCollectionOut(ResponseBody):
    type: Literal["FeatureCollection"]
    features: list[FeatureOut]


# --------------------------------------------------------------------------------------------
# Visits
# --------------------------------------------------------------------------------------------


class VisitOut(ResponseBody):
    id: str
    device_id: str
    geofence_id: str
    geofence_name: str
    enter: datetime = Field(description="The time of the first message inside.")
    exit: datetime | None = Field(
        description="The time of the first message outside; null while the device is inside."
    )
    duration_s: float = Field(
        description="From `enter` to `exit`; while inside, to the newest message inside."
    )
    distance_m: float = Field(
        description="The length of the track inside: the geodesic segments between "
        "consecutive messages inside, in metres."
    )
    enter_lat: float
    enter_lon: float
    exit_lat: float | None
    exit_lon: float | None
