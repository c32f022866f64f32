"""Bootstrap work for the command line: the first provider, more providers, the demo data."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.api_keys import service as api_keys
from fleetplane.audit.service import Actor
from fleetplane.channels import service as channels
from fleetplane.channels.schemas import ChannelCreate, Protocol
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import Contact, CustomerCreate
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceCreate
from fleetplane.providers import service as providers
from fleetplane.registry import module_names
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorType
from fleetplane.sensors.schemas import SensorCreate

DEMO_PROVIDER = "Demo Provider"
# (name, protocol, usual port): the listeners a new platform starts with.
DEFAULT_CHANNELS = (("Wialon IPS", Protocol.WIALON_IPS, 20332), ("OsmAnd", Protocol.OSMAND, 5055))
DEMO_KEY_NAME = "demo"
# (name, type, parameter, unit): what the demo's simulated trackers report (simulator/encoding.py),
# so the playground shows sensor values, ignition, and odometer and engine hours from the device.
DEMO_SENSORS = (
    ("Ignition", SensorType.IGNITION, "ign", ""),
    ("Fuel level", SensorType.FUEL_LEVEL, "fuel", "l"),
    ("Odometer", SensorType.MILEAGE, "odometer", "km"),
    ("Engine hours", SensorType.ENGINE_HOURS, "engine_hours", "h"),
    ("External power", SensorType.VOLTAGE, "pwr_ext", "V"),
    ("Driver key", SensorType.DRIVER_KEY, "driver_key", ""),
)


@dataclass
class ProviderWithKey:
    provider_id: str
    api_key: str | None  # None when nothing new was created
    wialon_port: int | None = None  # the demo's Wialon IPS channel, for its simulated fleet

    def as_json(self) -> dict[str, str | None]:
        return {"provider_id": self.provider_id, "api_key": self.api_key}


async def init_platform(session: AsyncSession) -> tuple[ProviderWithKey, bool]:
    """The first provider and a key with every permission; (result, created)."""
    existing = await providers.first(session)
    if existing is not None:
        return ProviderWithKey(existing.id, None), False
    result = await create_provider(session, "Default Provider")
    await create_default_channels(session, Actor(provider_id=result.provider_id))
    return result, True


async def create_provider(session: AsyncSession, name: str) -> ProviderWithKey:
    provider = await providers.create(session, name)
    secret = await api_keys.create_bootstrap_key(session, provider.id, f"{name} admin key")
    return ProviderWithKey(provider.id, secret)


async def create_default_channels(session: AsyncSession, actor: Actor) -> dict[Protocol, str]:
    """A Wialon IPS channel (TCP and UDP) on 20332 and an OsmAnd one on 5055; the next free
    port when another provider of this platform already has one of those."""
    created = {}
    for name, protocol, usual_port in DEFAULT_CHANNELS:
        port = await channels.first_free_port(session, usual_port)
        channel = await channels.create(
            session, actor, ChannelCreate(name=name, protocol=protocol, port=port)
        )
        created[protocol] = channel.id
    return created


async def seed_demo(session: AsyncSession) -> ProviderWithKey:
    """The demo provider (seeded once) and a fresh demo key. The previous demo key is revoked,
    so every start prints a key that works and the key count stays at one."""
    provider = await providers.by_name(session, DEMO_PROVIDER)
    if provider is None:
        provider = await providers.create(session, DEMO_PROVIDER)
        await _seed_demo_fleet(session, Actor(provider_id=provider.id))
    actor = Actor(provider_id=provider.id)
    for key in (await session.execute(api_keys.list_query(provider.id, False))).scalars():
        if key.name == DEMO_KEY_NAME:
            await api_keys.revoke(session, actor, key.id, revoker=None)
    secret = await api_keys.create_bootstrap_key(session, provider.id, DEMO_KEY_NAME)
    wialon = [c for c in await channels.all_channels(session) if c.provider_id == provider.id]
    port = next((c.port for c in wialon if c.protocol == Protocol.WIALON_IPS), None)
    return ProviderWithKey(provider.id, secret, port)


async def _seed_demo_fleet(session: AsyncSession, actor: Actor) -> None:
    channel_ids = await create_default_channels(session, actor)
    fleets = [
        ("Baltic Logistics", "Europe/Riga", "dispatch@baltic-logistics.example"),
        ("City Couriers", "Europe/Berlin", "ops@city-couriers.example"),
    ]
    customer_ids = []
    for name, timezone, email in fleets:
        customer = await customers.create(
            session,
            actor,
            CustomerCreate(
                name=name,
                timezone=timezone,
                modules=sorted(module_names()),
                contact=Contact(name="Fleet manager", email=email),
            ),
        )
        customer_ids.append(customer.id)
    for number in range(10):
        device = await devices.create(
            session,
            actor,
            DeviceCreate(
                channel_id=channel_ids[Protocol.WIALON_IPS],
                unique_id=f"86000000000{number:04d}",
                name=f"Truck {number + 1:02d}",
                customer_id=customer_ids[number % 2] if number < 8 else None,
            ),
        )
        await _add_demo_sensors(session, actor, device.id)


async def _add_demo_sensors(session: AsyncSession, actor: Actor, device_id: str) -> None:
    for name, kind, parameter, unit in DEMO_SENSORS:
        await sensors.create(
            session,
            actor,
            SensorCreate(device_id=device_id, name=name, type=kind, parameter=parameter, unit=unit),
        )
