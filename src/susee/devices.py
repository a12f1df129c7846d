"""Configured devices resolved into what the pollers execute.

Each enabled device gets its profile loaded and its reads planned once, at
start-up. A device whose profile cannot be loaded is kept, with the error, so
that the service writes its Code 64 rows each tick instead of staying silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from susee.config import ConfigError, DeviceSettings, Settings
from susee.links import Endpoint, SerialEndpoint
from susee.planner import BlockRead, Finish, PlanError, finisher, plan_reads
from susee.profiles import Profile, ProfileError, load_profile
from susee.sinks import ParamRow


@dataclass(frozen=True)
class DevicePlan:
    """A device ready to poll, or carrying the reason it cannot be."""

    settings: DeviceSettings
    profile: Profile | None
    blocks: tuple[BlockRead, ...]
    profile_error: str | None = None
    # End-of-tick step (scale registers), built once from the blocks; None when not needed.
    finish: Finish | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "finish", finisher(self.blocks))

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def endpoint(self) -> Endpoint | SerialEndpoint:
        return endpoint_of(self.settings)

    @property
    def param_ids(self) -> list[str]:
        return [pid for block in self.blocks for pid in block.visible_ids]


def endpoint_of(settings: DeviceSettings) -> Endpoint | SerialEndpoint:
    """Where ``settings`` says the device is reached."""
    serial = settings.serial
    if serial is not None:
        return SerialEndpoint(serial.port, serial.baudrate, serial.parity, serial.stopbits, serial.bytesize)
    return Endpoint(settings.host or "", settings.port, settings.framer)


def plan_devices(settings: Settings, config_path: Path) -> list[DevicePlan]:
    """Resolve every enabled device; raise ConfigError for bad param ids."""
    plans = []
    profiles: dict[str, Profile | ProfileError] = {}
    # Devices of one model read the same params: plan once, share the (immutable) blocks.
    planned: dict[tuple[str, tuple[str, ...], int | None], tuple[BlockRead, ...]] = {}
    for index, device in enumerate(settings.devices):
        if not device.enabled:
            continue
        if device.profile not in profiles:
            try:
                profiles[device.profile] = load_profile(device.profile, config_path.parent)
            except ProfileError as exc:
                profiles[device.profile] = exc
        profile = profiles[device.profile]
        if isinstance(profile, ProfileError):
            plans.append(DevicePlan(device, None, (), profile_error=str(profile)))
            continue
        wanted = device.params if device.params is not None else profile.default_ids
        unknown = [pid for pid in wanted if pid not in profile.by_id]
        if unknown:
            raise ConfigError(
                f"{config_path}: devices[{index}] (id {device.id!r}): field 'params': "
                f"{', '.join(unknown)} not in profile {profile.name!r}"
            )
        if not wanted:
            raise ConfigError(f"{config_path}: devices[{index}] (id {device.id!r}): field 'params': empty")
        key = (device.profile, tuple(wanted), device.address_base)
        blocks = planned.get(key)
        if blocks is None:
            try:
                blocks = planned[key] = plan_reads(profile, wanted, device.address_base)
            except PlanError as exc:
                raise ConfigError(
                    f"{config_path}: devices[{index}] (id {device.id!r}): field 'address_base': {exc}"
                ) from exc
        plans.append(DevicePlan(device, profile, blocks))
    return plans


def param_rows(plans: list[DevicePlan]) -> list[ParamRow]:
    """The see<job>Params rows for the params in use, plus the 'driver not found' marker."""
    rows: dict[str, ParamRow] = {}
    for plan in plans:
        if plan.profile is None:
            continue
        for param_id in plan.param_ids:
            spec = plan.profile.by_id[param_id]
            rows.setdefault(param_id, ParamRow(param_id, spec.descr_ita, spec.descr_eng, spec.unit, spec.acronym))
    if any(plan.profile is None for plan in plans):
        rows.setdefault(
            "100",
            ParamRow("100", "Driver del dispositivo non trovato", "Device driver (profile) not found", "na", "DRV_NOT_FOUND"),
        )
    return list(rows.values())
