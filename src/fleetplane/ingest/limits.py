"""What anyone who reaches a device port may hold: connections, time, unfinished files.

Device ports are open to the internet and nothing on them is authenticated before a login, so
every resource a sender can make the process hold is capped (#7). Connections are counted per
remote address, per channel and for the whole process; the process cap stays well below the
open-file limit so the API, the database and the file store always have handles left.
"""

import ipaddress
from dataclasses import dataclass
from typing import Any

from fleetplane.config import IPNetwork, Settings, open_file_limit, parse_networks
from fleetplane.core.files import FileStore, SpoolFile

# Open files kept for everything but device connections: at least this many, and at least a
# quarter of the limit (API clients, database connections, the log, stored files, spools).
MIN_RESERVED_FILES = 256


def connection_budget(open_files: int) -> int:
    """Device connections a process with `open_files` handles may hold."""
    return max(1, open_files - max(MIN_RESERVED_FILES, open_files // 4))


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    connections_total: int
    connections_per_channel: int
    connections_per_address: int
    unlimited_networks: tuple[IPNetwork, ...]
    login_timeout: float
    idle_timeout: float
    unfinished_file_bytes: int
    osmand_max_body: int
    osmand_max_header: int
    auto_register_per_minute: int
    auto_register_max_devices: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "DeviceLimits":
        total = settings.device_connections_total or connection_budget(open_file_limit())
        per_channel = settings.device_connections_per_channel or max(1, total // 2)
        return cls(
            connections_total=total,
            connections_per_channel=min(per_channel, total),
            connections_per_address=settings.device_connections_per_address,
            unlimited_networks=parse_networks(settings.device_connections_unlimited_networks),
            login_timeout=settings.device_login_timeout_seconds,
            idle_timeout=settings.device_idle_timeout_seconds,
            unfinished_file_bytes=settings.device_unfinished_file_bytes,
            osmand_max_body=settings.osmand_max_body_bytes,
            osmand_max_header=settings.osmand_max_header_bytes,
            auto_register_per_minute=settings.auto_register_per_minute,
            auto_register_max_devices=settings.auto_register_max_devices,
        )

    @property
    def sweep_interval(self) -> float:
        """How often connections are checked against the timeouts: a quarter of the shorter."""
        return min(5.0, max(0.05, min(self.login_timeout, self.idle_timeout) / 4))


class ProcessConnections:
    """Open device connections of the whole process, against its cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class ChannelConnections:
    """Admits or refuses one channel's new connections; counts them in the channel's counters
    (`connections`, `connections_refused`)."""

    def __init__(self, limits: DeviceLimits, process: ProcessConnections, counters: Any) -> None:
        self._limits = limits
        self._process = process
        self._counters = counters
        self._open = 0
        self._by_address: dict[str, int] = {}

    def admit(self, host: str | None) -> bool:
        """True: count the connection (and `release` it at its end). False: close it now."""
        address = self._limited_address(host)
        full = (
            self._open >= self._limits.connections_per_channel
            or self._process.open >= self._process.limit
            or (
                address is not None
                and self._by_address.get(address, 0) >= self._limits.connections_per_address
            )
        )
        if full:
            self._counters.connections_refused += 1
            return False
        self._open += 1
        self._process.open += 1
        self._counters.connections += 1
        if address is not None:
            self._by_address[address] = self._by_address.get(address, 0) + 1
        return True

    def release(self, host: str | None) -> None:
        self._open -= 1
        self._process.open -= 1
        self._counters.connections = max(0, self._counters.connections - 1)
        address = self._limited_address(host)
        if address is not None:
            left = self._by_address.get(address, 1) - 1
            if left:
                self._by_address[address] = left
            else:
                self._by_address.pop(address, None)

    def _limited_address(self, host: str | None) -> str | None:
        """The address the per-address limit counts, or None when it does not apply."""
        if not host:
            return None
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._limits.unlimited_networks):
            return None
        return str(address)


class UnfinishedFiles:
    """Images and tachograph files being received, spooled to disk block by block, with a cap
    on the bytes each device has unfinished (over all its connections)."""

    def __init__(self, files: FileStore, max_bytes_per_device: int) -> None:
        self._files = files
        self.max_bytes_per_device = max_bytes_per_device
        self._bytes: dict[str, int] = {}

    def clear(self) -> None:
        """Removes spools a previous run left behind (their transfers cannot resume)."""
        self._files.clear_spools()

    def open(self, device_id: str) -> "DeviceSpool":
        return DeviceSpool(self, device_id, self._files.spool())

    def reserve(self, device_id: str, size: int) -> bool:
        held = self._bytes.get(device_id, 0)
        if held + size > self.max_bytes_per_device:
            return False
        self._bytes[device_id] = held + size
        return True

    def release(self, device_id: str, size: int) -> None:
        left = self._bytes.get(device_id, 0) - size
        if left > 0:
            self._bytes[device_id] = left
        else:
            self._bytes.pop(device_id, None)


class DeviceSpool:
    """One unfinished file of one device on disk (the session's `BlockSpool`)."""

    def __init__(self, ledger: UnfinishedFiles, device_id: str, file: SpoolFile) -> None:
        self._ledger = ledger
        self._device_id = device_id
        self._file = file

    @property
    def size(self) -> int:
        return self._file.size

    def append(self, block: bytes) -> str | None:
        if not self._ledger.reserve(self._device_id, len(block)):
            limit = self._ledger.max_bytes_per_device
            return f"the device's unfinished files would exceed {limit} bytes"
        self._file.append(block)
        return None

    def read(self) -> bytes:
        return self._file.read()

    def discard(self) -> None:
        if not self._file.discarded:
            self._ledger.release(self._device_id, self._file.size)
            self._file.discard()
