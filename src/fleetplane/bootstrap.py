"""Bootstrap work for the command line: the first provider, more providers, the demo data."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from itertools import islice

from sqlalchemy.ext.asyncio import AsyncSession

from fleetplane.api_keys import service as api_keys
from fleetplane.audit.service import Actor
from fleetplane.automations import service as automations
from fleetplane.automations.schemas import AutomationCreate
from fleetplane.channels import service as channels
from fleetplane.channels.models import Channel
from fleetplane.channels.schemas import ChannelCreate, ChannelUpdate, Protocol
from fleetplane.channels.service import ChannelPolicy
from fleetplane.customers import service as customers
from fleetplane.customers.schemas import Contact, CustomerCreate, CustomerUpdate
from fleetplane.devices import service as devices
from fleetplane.devices.schemas import DeviceCreate
from fleetplane.drivers import service as drivers
from fleetplane.drivers.schemas import DriverCreate
from fleetplane.geofences import service as geofences
from fleetplane.geofences.schemas import GeofenceCreate
from fleetplane.module_catalog import module_names
from fleetplane.providers import service as providers
from fleetplane.sensors import service as sensors
from fleetplane.sensors.calculation import SensorType
from fleetplane.sensors.schemas import SensorCreate
from fleetplane.simulator.route import RIGA
from fleetplane.simulator.runner import DEFAULT_SEED, device_driver_keys

DEMO_PROVIDER = "Demo Provider"
# (name, protocol, usual port): the listeners a new platform starts with.
DEFAULT_CHANNELS = (("Wialon IPS", Protocol.WIALON_IPS, 20332), ("OsmAnd", Protocol.OSMAND, 5055))
USUAL_PORTS = {protocol: port for _, protocol, port in DEFAULT_CHANNELS}
DEMO_KEY_NAME = "demo"
# How many ports from the usual one the demo tries before it leaves a channel where it is.
DEMO_PORT_TRIES = 100
# (port, transport) -> why a listener could not bind it on this machine now, or None.
PortProbe = Callable[[int, str], str | None]
# (name, type, parameter, unit): what the demo's simulated trackers report (simulator/encoding.py),
# so the playground shows sensor values, ignition, and the device's own odometer (`odometer_km`)
# and hour meter (`engine_hours_sensor`) beside the hours counted from ignition.
DEMO_SENSORS = (
    ("Ignition", SensorType.IGNITION, "ign", ""),
    ("Fuel level", SensorType.FUEL_LEVEL, "fuel", "l"),
    ("Odometer", SensorType.MILEAGE, "odometer", "km"),
    ("Engine hours", SensorType.ENGINE_HOURS, "engine_hours", "h"),
    ("External power", SensorType.VOLTAGE, "pwr_ext", "V"),
    ("Driver key", SensorType.DRIVER_KEY, "driver_key", ""),
)


# The drivers of each demo customer's trucks (the usual one, then the relief driver), with
# the iButtons the simulated trackers report (`simulator.runner.device_driver_keys`).
DEMO_DRIVER_NAMES = (
    ("Jānis Bērziņš", "Anna Kalniņa", "Mārtiņš Ozols", "Līga Liepiņa",
     "Edgars Kļaviņš", "Ilze Zariņa", "Andris Krūmiņš", "Dace Vītola"),
    ("Lukas Schmidt", "Mia Wagner", "Jonas Becker", "Lea Hoffmann",
     "Felix Schulz", "Emma Koch", "Paul Richter", "Hannah Klein"),
)  # fmt: skip


@dataclass(frozen=True)
class MovedChannel:
    """A demo channel that listens elsewhere than usual, because its usual port is taken."""

    name: str
    usual_port: int
    port: int
    reason: str


@dataclass
class ProviderWithKey:
    provider_id: str
    api_key: str | None  # None when nothing new was created
    wialon_port: int | None = None  # the demo's Wialon IPS channel, for its simulated fleet
    moved: list[MovedChannel] = field(default_factory=list)  # the demo's, off taken ports

    def as_json(self) -> dict[str, str | None]:
        return {"provider_id": self.provider_id, "api_key": self.api_key}


async def init_platform(
    session: AsyncSession, policy: ChannelPolicy
) -> tuple[ProviderWithKey, bool]:
    """The first provider and a key with every permission; (result, created)."""
    existing = await providers.first(session)
    if existing is not None:
        return ProviderWithKey(existing.id, None), False
    result = await create_provider(session, "Default Provider")
    await create_default_channels(session, Actor(provider_id=result.provider_id), policy)
    return result, True


async def create_provider(session: AsyncSession, name: str) -> ProviderWithKey:
    provider = await providers.create(session, name)
    secret = await api_keys.create_bootstrap_key(session, provider.id, f"{name} admin key")
    return ProviderWithKey(provider.id, secret)


async def create_default_channels(
    session: AsyncSession, actor: Actor, policy: ChannelPolicy
) -> dict[Protocol, str]:
    """A Wialon IPS channel (TCP and UDP) on 20332 and an OsmAnd one on 5055; the next free
    device port when another provider of this platform already has one of those (or the
    platform's device ports leave them out)."""
    created = {}
    for name, protocol, usual_port in DEFAULT_CHANNELS:
        port = await channels.first_free_port(session, policy, usual_port)
        channel = await channels.create(
            session, actor, ChannelCreate(name=name, protocol=protocol, port=port), policy
        )
        created[protocol] = channel.id
    return created


async def seed_demo(
    session: AsyncSession, policy: ChannelPolicy, cannot_bind: PortProbe
) -> ProviderWithKey:
    """The demo provider (seeded once) and a fresh demo key. The previous demo key is revoked,
    so every start prints a key that works and the key count stays at one. The demo's
    channels go to the first ports from their usual ones that this machine has free now."""
    provider = await providers.by_name(session, DEMO_PROVIDER)
    if provider is None:
        provider = await providers.create(session, DEMO_PROVIDER)
        await _seed_demo_fleet(session, Actor(provider_id=provider.id), policy)
    actor = Actor(provider_id=provider.id)
    await _enable_new_modules(session, actor)
    await _add_demo_places_and_rules(session, actor)
    for key in (await session.execute(api_keys.list_query(provider.id, False))).scalars():
        if key.name == DEMO_KEY_NAME:
            await api_keys.revoke(session, actor, key.id, revoker=None)
    secret = await api_keys.create_bootstrap_key(session, provider.id, DEMO_KEY_NAME)
    demo = [c for c in await channels.all_channels(session) if c.provider_id == provider.id]
    moved = [
        found
        for channel in demo
        if (found := await _onto_free_port(session, actor, channel, policy, cannot_bind))
    ]
    port = next((c.port for c in demo if c.protocol == Protocol.WIALON_IPS), None)
    return ProviderWithKey(provider.id, secret, port, moved)


async def _enable_new_modules(session: AsyncSession, actor: Actor) -> None:
    """The demo customers have every module, also those added since the demo was seeded."""
    every = module_names()
    statement = customers.list_query(actor.provider_id)
    for customer in (await session.execute(statement)).scalars():
        if not every <= set(customer.modules):
            modules = sorted(every | set(customer.modules))
            await customers.update(session, actor, customer.id, CustomerUpdate(modules=modules))


# Where the demo's trucks drive (the simulation keeps them within 6 km of Riga's centre): a
# depot round the centre they keep leaving and coming back to, and a corridor along a main road
# across the city. Positions are (lon, lat), as GeoJSON has them.
DEMO_LAT, DEMO_LON = RIGA
DEMO_DEPOT = {"type": "Point", "coordinates": [DEMO_LON, DEMO_LAT]}
DEMO_DEPOT_RADIUS_M = 1500.0
DEMO_CORRIDOR = {
    "type": "LineString",
    "coordinates": [
        [DEMO_LON - 0.09, DEMO_LAT - 0.01],
        [DEMO_LON, DEMO_LAT],
        [DEMO_LON + 0.09, DEMO_LAT + 0.01],
    ],
}
DEMO_CORRIDOR_WIDTH_M = 300.0
# The simulated trucks cruise at up to 90 km/h on arterial roads.
DEMO_SPEED_LIMIT_KMH = 80


async def _add_demo_places_and_rules(session: AsyncSession, actor: Actor) -> None:
    """The demo customers' depot and corridor, and two automations that fire as the
    simulated trucks drive (speeding, leaving the depot), for customers that have no geofence
    yet (also a demo seeded before geofences existed)."""
    for customer in (await session.execute(customers.list_query(actor.provider_id))).scalars():
        listed = geofences.list_query(actor.provider_id, customer.id).limit(1)
        if (await session.execute(listed)).first() is not None:
            continue
        depot = GeofenceCreate.model_validate(
            {
                "name": "Depot",
                "geometry": DEMO_DEPOT,
                "radius_m": DEMO_DEPOT_RADIUS_M,
                "color": "#2e7d32",
                "is_address": True,
            }
        )
        corridor = GeofenceCreate.model_validate(
            {
                "name": "City corridor",
                "geometry": DEMO_CORRIDOR,
                "width_m": DEMO_CORRIDOR_WIDTH_M,
                "color": "#1565c0",
                "speed_limit": 50,
            }
        )
        depot_id = (await geofences.create(session, actor, customer.id, depot)).id
        await geofences.create(session, actor, customer.id, corridor)
        for rule in _demo_rules(depot_id):
            await automations.create(session, actor, customer.id, rule)


def _demo_rules(depot_id: str) -> list[AutomationCreate]:
    notify = [{"type": "notification"}]
    return [
        AutomationCreate.model_validate(rule)
        for rule in (
            {
                "name": f"Speeding over {DEMO_SPEED_LIMIT_KMH} km/h",
                "trigger": {"type": "speeding", "speed": DEMO_SPEED_LIMIT_KMH},
                "conditions": {"min_duration_s": 10, "cooldown_s": 300},
                "actions": notify,
            },
            {
                "name": "Left the depot",
                "trigger": {"type": "geofence_exit", "geofence_ids": [depot_id]},
                "actions": notify,
            },
        )
    ]


async def _onto_free_port(
    session: AsyncSession,
    actor: Actor,
    channel: Channel,
    policy: ChannelPolicy,
    cannot_bind: PortProbe,
) -> MovedChannel | None:
    """Moves a demo channel to the first port from its usual one that no other channel has
    and this machine can bind; what moved, when it is not on its usual port."""
    if not channel.enabled:
        return None
    usual = USUAL_PORTS.get(Protocol(channel.protocol), channel.port)
    taken = await channels.used_ports(session) - {channel.port}
    candidates = (port for port in policy.ports_from(usual) if port not in taken)
    for port in islice(candidates, DEMO_PORT_TRIES):
        if cannot_bind(port, channel.transport) is None:
            break
    else:
        return None  # nothing free nearby: the gateway reports the channel's failure
    if port != channel.port:
        update = ChannelUpdate(port=port)
        await channels.update(session, actor, channel.id, update, policy)
    if port == usual:
        return None
    reason = policy.why_not(usual) or (
        "used by another channel" if usual in taken else cannot_bind(usual, channel.transport)
    )
    return MovedChannel(channel.name, usual, port, reason or "taken")


async def _seed_demo_fleet(session: AsyncSession, actor: Actor, policy: ChannelPolicy) -> None:
    channel_ids = await create_default_channels(session, actor, policy)
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
        if number < 8:
            await _add_demo_drivers(session, actor, customer_ids[number % 2], number)


async def _add_demo_sensors(session: AsyncSession, actor: Actor, device_id: str) -> None:
    for name, kind, parameter, unit in DEMO_SENSORS:
        await sensors.create(
            session,
            actor,
            SensorCreate(device_id=device_id, name=name, type=kind, parameter=parameter, unit=unit),
        )


async def _add_demo_drivers(
    session: AsyncSession, actor: Actor, customer_id: str, number: int
) -> None:
    """Truck `number`'s two drivers, whose keys its simulated tracker reports (the demo's
    trackers are the simulation's devices in order, with its default seed)."""
    names = DEMO_DRIVER_NAMES[number % 2]
    keys = device_driver_keys(DEFAULT_SEED, number)
    for shift, key in enumerate(keys):
        place = number // 2 * 2 + shift
        data = DriverCreate(
            name=names[place],
            key_codes=[key],
            license_number=f"DL{number:02d}{shift}0{place:03d}",
            license_expires=date(2027 + place % 4, 1 + (3 * place) % 12, 15),
            custom_fields={"employee_number": f"E-{101 + 10 * (number % 2) + place}"},
        )
        await drivers.create(session, actor, customer_id, data)
