"""What a tracker protocol hands to storage, whatever the protocol.

The types are plain slotted dataclasses: they are created once per decoded message on the
hottest path of the platform, so they carry no validation of their own (the decoders validate)
and no per-instance dictionary.

They sit beside the domains rather than in `ingest/`: the protocol decoders make them and the
domains that store and derive data (devices, messages, video, tachograph) read them, so no
domain imports the intake to know what a message is.
"""

from dataclasses import dataclass, field
from datetime import datetime

ParamValue = int | float | str


@dataclass(slots=True)
class Message:
    """One decoded position/sensor report.

    Position fields are None when the device had no value (no fix, `NA`, an empty field).
    `adc` keeps the device's positions: the n-th analog input is `adc[n - 1]`, and an input the
    device marked as not available inside the list is None.
    """

    device_time: datetime
    received_at: datetime
    lat: float | None = None
    lon: float | None = None
    altitude: float | None = None
    speed: float | None = None
    course: float | None = None
    satellites: float | None = None
    hdop: float | None = None
    inputs: int | None = None
    outputs: int | None = None
    adc: tuple[float | None, ...] = ()
    driver_key: str | None = None
    params: dict[str, ParamValue] = field(default_factory=dict)
    # Storage treats late (black box) data differently: derived data must be recomputed.
    from_black_box: bool = False
    # The device sent no time, so device_time is the receive time: not a real device clock.
    device_time_missing: bool = False
    # Set by the device's validity filter: the message is kept but derived data ignores it.
    filtered: bool = False

    @property
    def has_position(self) -> bool:
        return self.lat is not None and self.lon is not None


@dataclass(slots=True, frozen=True)
class DriverMessage:
    """A chat message typed by the driver on the device."""

    text: str
    received_at: datetime


@dataclass(slots=True, frozen=True)
class ImageFile:
    """A photo assembled from all of its blocks.

    `name` is the device's file name as sent: a label, never a path on disk.
    """

    name: str
    taken_at: datetime
    data: bytes
    received_at: datetime


@dataclass(slots=True, frozen=True)
class TachographFile:
    """A downloaded driver card / vehicle unit file (`.ddd`), assembled from its blocks.

    `name` is `driverid_yyyymmdd_hhmmss.ddd`, safe to use as a file name.
    """

    name: str
    driver_id: str
    downloaded_at: datetime
    data: bytes
    received_at: datetime
