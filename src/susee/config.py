"""Validated settings: one pydantic-settings object built from site.yaml.

Precedence, highest first: environment (``SUSEE_`` prefix, ``__`` for nesting),
a ``.env`` file, a secrets directory, then the YAML file. The original susee's
``user_db``, ``pswd_db``, ``host_db`` and ``port_db`` are accepted too.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from susee.bus_key import BusKey, serial_bus, tcp_bus
from susee.validation import describe_errors

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,16}$")
DATABASE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}$")
# idDevice and idParam: varchar(20) columns, shown in logs and checked again by
# the MariaDB sink before it stores them (sinks.prepared): never a quote,
# backslash, space or control character. Checked with fullmatch: '$' alone
# would let a trailing newline in.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,20}$")
MYSQL_SCHEMES = ("mysql", "mariadb", "mysql+aiomysql")
# The writer's default queue: QUEUE_TICKS ticks of every device, so that a
# database pause of a few periods, or a live batch waiting behind a replay
# batch, never spills to the spool; a device-tick of the PAC3200 default set
# is ~1 KiB in memory, so 5 ticks cost ~5 KiB per meter. QUEUE_MIN keeps
# small sites as they were (10,000 device-ticks).
QUEUE_TICKS = 5
QUEUE_MIN = 10_000
# libyaml's loader parses a 5,000-device site 4x faster than the pure-Python one.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_SECRETS_DIR = Path("/run/secrets")  # where Docker and Kubernetes mount secrets
# An HTTP token shorter than this is guessable by brute force over the network.
MIN_TOKEN_CHARS = 16


class ConfigError(Exception):
    """The configuration is invalid; the message names file, device and field."""


class StartError(Exception):
    """Valid settings, but something they name cannot be used now (a port in use); the message says what to do."""


class _Section(BaseModel):
    # Frozen once loaded: a resolved variant (a worker's spool folder) is a copy, never an assignment.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    """Where rows go: ``mysql://user@host:port[/name]`` or ``sqlite:///file.db``."""

    url: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    name: str | None = None  # default seedb<job_id>
    connect_timeout: float = Field(default=5.0, gt=0)
    # A healthy database commits a batch in milliseconds: a write with no answer
    # after this is a hung server, and the batch goes to the spool (where it is
    # safer than in memory). It also bounds how long rows wait in memory behind
    # a hung write. The one timeout of a write (the sink sets none of its own).
    write_timeout: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            scheme = value.split("://", 1)[0].lower() if "://" in value else ""
            if scheme not in (*MYSQL_SCHEMES, "sqlite"):
                raise ValueError(f"url must start with mysql:// or sqlite:///, got {_mask_url(value)!r}")
            problem = _sqlite_url_problem(value) if scheme == "sqlite" else _mysql_url_problem(value)
            if problem:
                raise ValueError(f"{problem} in {_mask_url(value)!r}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not DATABASE_NAME_PATTERN.fullmatch(value):
            raise ValueError("database name must match ^[A-Za-z0-9_]{1,64}$")
        return value


class SerialSettings(_Section):
    """A serial port with a Modbus RTU line (RS485) behind it, and its framing."""

    port: str = Field(min_length=1)  # /dev/ttyUSB0, /dev/serial/by-id/..., COM3
    baudrate: int = Field(default=9600, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_letter(cls, value: object) -> object:
        if isinstance(value, str):
            return {"NONE": "N", "EVEN": "E", "ODD": "O"}.get(value.upper(), value.upper())
        return value


class DeviceSettings(_Section):
    """One meter: where it is and which profile decodes it."""

    id: str
    profile: str = "pac3200"
    host: str | None = None  # Modbus TCP; exactly one of host and serial
    port: int = Field(default=502, ge=1, le=65535)
    serial: SerialSettings | None = None  # Modbus RTU on a serial line
    framer: Literal["socket", "rtu"] = "socket"  # rtu: RTU frames over TCP, as serial servers speak
    # Seconds of silence on the bus after each transaction (RS485 turnaround);
    # a bus keeps the largest value of its devices.
    inter_request_delay: float = Field(default=0.0, ge=0, le=10)
    unit: int = Field(default=1, ge=0, le=255)
    timeout: float = Field(default=1.0, gt=0, le=60)
    enabled: bool = True
    params: list[str] | None = None
    # Register numbering of this device's manual, overriding the profile's (0 or 1).
    address_base: Literal[0, 1] | None = None
    # Labels for reports, e.g. {building: A, use: hvac}: `susee report --by tag:building`.
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: object) -> object:
        return _refuse_number(value, "id", "d01")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not ID_PATTERN.fullmatch(value):
            raise ValueError("device id must be 1-20 characters of letters, digits, _ . : -")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _params_text(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) else v for v in value]
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_text(cls, value: object) -> object:
        if isinstance(value, dict):  # {floor: 2} means "2"
            return {str(k): str(v) if isinstance(v, (int, float)) else v for k, v in value.items()}
        return value

    @field_validator("serial", mode="before")
    @classmethod
    def _serial_shorthand(cls, value: object) -> object:
        return {"port": value} if isinstance(value, str) else value  # serial: /dev/ttyUSB0 = 9600 8N1

    @model_validator(mode="after")
    def _one_transport(self) -> DeviceSettings:
        if self.host is None and self.serial is None:
            raise ValueError("field 'host': required, or 'serial' for a Modbus RTU line")
        if self.host is not None and self.serial is not None:
            raise ValueError("field 'serial': give either host (Modbus TCP) or serial (Modbus RTU), not both")
        if self.serial is not None:
            if "port" in self.model_fields_set:
                raise ValueError("field 'port': is the TCP port of host; a serial device's port goes in serial.port")
            if "framer" in self.model_fields_set:
                raise ValueError("field 'framer': only for host/port devices; a serial line always speaks RTU")
        return self

    @property
    def bus(self) -> BusKey:
        """Devices with equal ``bus`` share one connection: a serial port or a host:port."""
        return serial_bus(self.serial.port) if self.serial is not None else tcp_bus(self.host or "", self.port)


def check_buses(devices: list[DeviceSettings]) -> None:
    """Raise ValueError naming both devices when devices sharing a bus disagree on its framing."""
    first: dict[BusKey, int] = {}
    for index, device in enumerate(devices):
        if not device.enabled:
            continue
        other_index = first.setdefault(device.bus, index)
        if other_index == index:
            continue
        other = devices[other_index]
        if device.serial is not None and other.serial is not None:
            pairs = [(f"serial.{name}", getattr(device.serial, name), getattr(other.serial, name))
                     for name in ("baudrate", "parity", "stopbits", "bytesize")]
        else:
            pairs = [("framer", device.framer, other.framer)]
        for field, mine, theirs in pairs:
            if mine != theirs:
                raise ValueError(
                    f"devices[{index}] (id {device.id!r}): field {field!r}: {mine} differs from {theirs} of "
                    f"devices[{other_index}] (id {other.id!r}) on the same {device.bus}"
                )


def check_virtual_meters(virtual_meters: dict[str, str], device_ids: Mapping[str, int]) -> None:
    """Raise ValueError naming the virtual meter whose name or expression is wrong."""
    from susee.expressions import ExpressionError, parse_expression

    for name, expression in virtual_meters.items():
        where = f"virtual_meters.{name}"
        if not ID_PATTERN.fullmatch(name):
            raise ValueError(f"{where}: name must be 1-20 characters of letters, digits, _ . : -")
        if name in device_ids:
            raise ValueError(f"{where}: name is already a device id")
        try:
            terms = parse_expression(expression)
        except ExpressionError as exc:
            raise ValueError(f"{where}: {exc}") from None
        unknown = [device for _, device in terms if device not in device_ids]
        if unknown:
            raise ValueError(f"{where}: {', '.join(map(repr, unknown))} not a device id")


class WriterSettings(_Section):
    """Batching of rows into the database."""

    batch_rows: int = Field(default=2000, ge=1)  # flush when this many rows wait
    batch_age: float = Field(default=1.0, gt=0)  # or when the oldest waited this long (s)
    # Device-ticks held in memory before they spill to the spool; by default
    # sized from the site (see queue_capacity), so a large site never spills
    # in normal running.
    queue_size: int | None = Field(default=None, ge=1)

    def queue_capacity(self, devices: int) -> int:
        """``queue_size``, or by default ``QUEUE_TICKS`` ticks of every device (at least ``QUEUE_MIN``)."""
        if self.queue_size is not None:
            return self.queue_size
        return max(QUEUE_MIN, QUEUE_TICKS * devices)


class SpoolSettings(_Section):
    """The durable local buffer for rows the database did not take."""

    # Default: spool/<config file name>-<job_id> beside the config file, so two
    # sites in one folder never share a spool; relative = to the config file.
    path: Path | None = None
    max_bytes: int = Field(default=1 << 30, gt=0)  # 1 GiB
    when_full: Literal["stop_polling", "drop_oldest"] = "stop_polling"


class StorageSettings(_Section):
    """How long data is kept, and the 15-minute rollups (see README "Storage")."""

    raw_keep_days: int | None = Field(default=None, ge=1)  # None: keep every sample for ever
    rollup_keep_days: int | None = Field(default=None, ge=1)  # None: keep every rollup for ever
    rollups: bool = True  # maintain see<job>Q15; off only to measure what it costs
    rollup_every: float = Field(default=30.0, gt=0)  # s between passes over the buckets written to
    # s between recomputations of the bucket still being written (closed buckets: once)
    rollup_open_every: float = Field(default=300.0, gt=0)
    partitions_ahead_days: int = Field(default=7, ge=1)  # day partitions of Raw made ahead (MariaDB)


class SimulatorSettings(_Section):
    """An in-process PAC3200 simulator, for the demo and trials."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=5020, ge=1, le=65535)
    units: str = "1-3"

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value not in ("127.0.0.1", "localhost", "::1") and not value.startswith("127."):
            raise ValueError("the simulator only listens on a loopback address")
        return value

    @field_validator("units", mode="before")
    @classmethod
    def _units_text(cls, value: object) -> object:
        if isinstance(value, int):
            return str(value)
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return value

    @field_validator("units")
    @classmethod
    def _units_shape(cls, value: str) -> str:
        if not re.fullmatch(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*", value):
            raise ValueError("units must look like 1-3 or 1,4,7")
        return value


class HttpSettings(_Section):
    """The live page, health checks and metrics (``susee.web``), served by the service itself."""

    enabled: bool = True
    listen: str = "127.0.0.1:8050"  # host:port, [v6]:port; port 0 = any free port (tests)
    # Bearer token or basic-auth password; required off loopback (see _guarded).
    token: SecretStr | None = None
    allow_anonymous: bool = False  # explicitly serve a non-loopback address without a token
    # The Device page's consumption bands: none (one band, "all"), arera or a YAML calendar
    # (relative to the config file; checked when the service starts, see susee.web.consumption).
    tariff: str = Field(default="none", min_length=1)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host_port(value)  # raises ValueError with the reason
        return value

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (a random secret, not a word)")
        return value

    @model_validator(mode="after")
    def _guarded(self) -> HttpSettings:
        # Anyone on the network could read the site's data: a token, or an explicit choice not to.
        if self.enabled and not is_loopback(host_port(self.listen)[0]) and self.token is None \
                and not self.allow_anonymous:
            raise ValueError(
                f"listen {self.listen!r} is reachable from other machines: set http.token "
                "(SUSEE_HTTP__TOKEN in the environment, .env or the secrets dir) or http.allow_anonymous: true"
            )
        return self


def host_port(listen: str) -> tuple[str, int]:
    """``'127.0.0.1:8050'`` -> ('127.0.0.1', 8050); ``'[::1]:8050'`` -> ('::1', 8050); ValueError otherwise."""
    host, colon, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:8050 or [::1]:8050)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class Settings(BaseSettings):
    """Everything the service needs, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="SUSEE_",
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        # A .env is often shared with other tools: ignore its unrelated keys
        # instead of failing on them (extra="forbid"); SUSEE_ typos still fail.
        dotenv_filtering="match_prefix",
        frozen=True,  # see _Section
    )

    job_id: str = "000"
    sample_time: float = Field(default=10, ge=1)
    sample_shift: float = Field(default=0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    shutdown_timeout: float = Field(default=10.0, gt=0)  # s to flush the queue at stop, then spill
    # Processes that poll, each a share of the buses with its own database
    # connection and spool: one core is enough for a few thousand meters at
    # 1 s; "auto" takes one per CPU (never more than there are buses).
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    # Seconds between two status lines in the log (ticks, rows, failing
    # devices, Delay, database, spool): one line however many devices; 0: none.
    status_every: float = Field(default=60.0, ge=0)
    simulator: SimulatorSettings | None = None
    http: HttpSettings = Field(default_factory=HttpSettings)
    devices: list[DeviceSettings] = Field(default_factory=list)
    # Reports: the site's IANA time zone (intervals and tariff bands follow its
    # civil time; rows stay in UTC) and meters computed from real ones, e.g.
    # {unmetered: "main - hvac - lighting"} (see susee.expressions).
    timezone: str = "UTC"
    # The site's tariff bands (none, arera or a YAML calendar beside the config): the
    # daily rollups are kept per band of it, and it is `susee report`'s default --tariff.
    tariff: str = Field(default="none", min_length=1)
    virtual_meters: dict[str, str] = Field(default_factory=dict)

    # The original susee's .env names.
    user_db: str | None = Field(default=None, validation_alias="user_db")
    pswd_db: SecretStr | None = Field(default=None, validation_alias="pswd_db")
    host_db: str | None = Field(default=None, validation_alias="host_db")
    port_db: int | None = Field(default=None, validation_alias="port_db")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML arrives as init kwargs; the environment must override it.
        # Secret files are named like the variables, e.g. susee_database__password.
        secrets = NestedSecretsSettingsSource(file_secret_settings)
        return env_settings, dotenv_settings, secrets, init_settings

    @field_validator("workers", mode="before")
    @classmethod
    def _worker_count(cls, value: object) -> object:
        # One clear message instead of one per member of the union.
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
            return int(value)  # from the environment: SUSEE_WORKERS=4
        raise ValueError("must be a whole number >= 1 or 'auto'")

    @field_validator("job_id", mode="before")
    @classmethod
    def _job_text(cls, value: object) -> object:
        return _refuse_number(value, "job_id", "010")

    @field_validator("job_id")
    @classmethod
    def _job_identifier(cls, value: str) -> str:
        # The job id becomes part of database and table names.
        if not JOB_ID_PATTERN.fullmatch(value):
            raise ValueError("job_id must match ^[A-Za-z0-9_]{1,16}$")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Rome, UTC)") from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.sample_shift >= self.sample_time:
            raise ValueError("sample_shift: must be >= 0 and < sample_time")
        if abs(self.sample_time * 1e6 - round(self.sample_time * 1e6)) > 1e-3:
            raise ValueError("sample_time: resolution is one microsecond")
        seen: dict[str, int] = {}
        for index, device in enumerate(self.devices):
            if device.id in seen:
                raise ValueError(f"devices[{index}] (id {device.id!r}): field 'id': duplicate of devices[{seen[device.id]}]")
            seen[device.id] = index
        check_buses(self.devices)
        check_virtual_meters(self.virtual_meters, seen)
        if self.database.url is None and self.host_db is None:
            raise ValueError("database.url: required (or host_db/port_db from the original susee .env)")
        if self.workers != 1 and self.database_url.startswith("sqlite"):
            raise ValueError("workers: more than one needs a MariaDB database (SQLite takes one writer at a time)")
        return self

    @property
    def database_url(self) -> str:
        """``database.url``, or the one the original susee's host_db/port_db give."""
        if self.database.url is not None:
            return self.database.url
        return f"mysql://{self.host_db}:{self.port_db or 3306}"

    def resolved(self, config_path: Path) -> Settings:
        """These settings as the site runs them: relative paths (SQLite file, spool) taken from the config file's folder."""
        # The default spool is per site (config file name and job): two sites in one folder never share one.
        default_spool = Path("spool") / f"{Path(config_path).stem}-{self.job_id}"
        return resolved_paths(self, Path(os.path.abspath(config_path.parent)), default_spool)

    def with_spool(self, folder: Path) -> Settings:
        """A copy whose spool is ``folder``."""
        return self.model_copy(update={"spool": self.spool.model_copy(update={"path": folder})})

    def database_target(self) -> DatabaseTarget:
        """Where to connect, with credentials merged from every source."""
        return DatabaseTarget.from_settings(self)


@dataclass(frozen=True)
class DatabaseTarget:
    """A parsed database location; ``str()`` never shows the password."""

    kind: Literal["mysql", "sqlite"]
    database: str
    host: str = ""
    port: int = 3306
    user: str = ""
    password: SecretStr | None = None
    path: Path | None = None
    connect_timeout: float = 5.0
    socket: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseTarget:
        db = settings.database
        url = settings.database_url
        parts = urlsplit(url)
        default_name = f"seedb{settings.job_id}"
        if parts.scheme == "sqlite":
            # sqlite:///relative.db, sqlite:////absolute/path.db
            raw_path = url[len("sqlite:///"):]
            if not raw_path:
                raise ConfigError("database.url: sqlite URL needs a file, e.g. sqlite:///susee.db")
            return cls(kind="sqlite", database=db.name or default_name, path=Path(raw_path))
        name = db.name or parts.path.lstrip("/") or default_name
        if not DATABASE_NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"database.url: database name {name!r} must match ^[A-Za-z0-9_]{{1,64}}$")
        password = db.password or settings.pswd_db
        if password is None and parts.password:
            password = SecretStr(unquote(parts.password))
        query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        return cls(
            kind="mysql",
            database=name,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=db.user or (unquote(parts.username) if parts.username else None) or settings.user_db or "root",
            password=password,
            connect_timeout=db.connect_timeout,
            socket=query.get("unix_socket"),
        )

    def identity(self, job_id: str) -> str:
        """Which database and job rows are for (never user or password): what the spool records."""
        if self.kind == "sqlite":
            return f"sqlite {Path(self.path).absolute()} job {job_id}"
        where = f"socket {self.socket}" if self.socket else f"{self.host}:{self.port}"
        return f"mysql {where}/{self.database} job {job_id}"

    def __str__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        secret = ":***" if self.password is not None and self.password.get_secret_value() else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{self.database}"


def _mysql_url_problem(url: str) -> str | None:
    """What makes a mysql:// URL unusable (bad port, broken IPv6 literal), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port could not be cast...", "Port out of range"
        return f"url is not a valid database URL ({exc})"
    if port == 0:
        return "url port must be 1-65535"
    if parts.netloc and not parts.hostname:
        return "url has no host name"
    return None


def _sqlite_url_problem(url: str) -> str | None:
    """An in-memory SQLite database keeps nothing: refuse it, as anything but a file."""
    path = url[len("sqlite:///"):] if url.lower().startswith("sqlite:///") else ""
    if not path:
        return "url needs a file, e.g. sqlite:///susee.db"
    if path == ":memory:" or "mode=memory" in path:
        return "url: an in-memory SQLite database loses every row at exit; give a file, e.g. sqlite:///susee.db"
    return None


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # a broken IPv6 literal: nothing to mask that can be found
        return url.split("@", 1)[-1] if "@" in url else url
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``path``; raise ConfigError naming file, device and field.

    The settings are as written; ``Settings.resolved(path)`` gives the copy
    whose relative paths are taken from the file's folder.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    try:
        data = load_yaml(text, str(path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    unquoted = unquoted_ids(text, data)
    if unquoted:
        raise ConfigError(f"{path}: " + "\n  ".join(unquoted))
    env_files = [p for p in (path.parent / ".env", Path.cwd() / ".env") if p.is_file()]
    secrets_dir = Path((environ or os.environ).get("SUSEE_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    try:
        settings = Settings(
            **data,
            _env_file=tuple(env_files) or None,
            _secrets_dir=secrets_dir if secrets_dir.is_dir() else None,
        )
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "\n  ".join(describe_errors(exc, data, "devices", Settings))) from exc
    return settings


def load_yaml(text: str, source: str) -> object:
    """``yaml.load`` whose errors name ``source`` (the file), not "<unicode string>"."""
    try:
        return yaml.load(text, Loader=YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        # libyaml's marks are read-only: replace them with named copies.
        for attribute in ("context_mark", "problem_mark"):
            mark = getattr(exc, attribute)
            if mark is not None:
                setattr(exc, attribute, yaml.Mark(source, mark.index, mark.line, mark.column, None, None))
        raise


def resolved_paths(settings: Settings, folder: Path, default_spool: Path = Path("spool")) -> Settings:
    """A copy of ``settings`` whose SQLite file and spool folder are absolute, relative ones taken from ``folder``
    (the spool ``default_spool`` when not set)."""
    database = settings.database
    url = database.url or ""
    if url.startswith("sqlite:///"):
        file = url[len("sqlite:///"):]
        if file and not Path(file).is_absolute():
            database = database.model_copy(update={"url": f"sqlite:///{folder / file}"})
    spool = settings.spool.model_copy(update={"path": folder / (settings.spool.path or default_spool)})
    http = settings.http.model_copy(update={"tariff": _tariff_beside(settings.http.tariff, folder)})
    tariff = _tariff_beside(settings.tariff, folder)
    return settings.model_copy(update={"database": database, "spool": spool, "http": http, "tariff": tariff})


def _tariff_beside(tariff: str, folder: Path) -> str:
    """A tariff setting with a relative calendar file taken from ``folder`` (none and arera as they are)."""
    if tariff.lower() in ("none", "arera") or Path(tariff).is_absolute():
        return tariff
    return str(folder / tariff)


def unquoted_ids(text: str, data: Mapping) -> list[str]:
    """One line per id that YAML read as a number, quoting it as written in ``text``.

    YAML reads an unquoted ``010`` as the octal number 8, ``000`` as 0 and
    ``01`` as 1: the id would silently become another one (job 8 writes to
    ``seedb8``). Ids are text, so a number is refused with the quoted fix.
    """
    found: list[tuple[str, tuple[str | int, ...], str]] = []
    if _is_number(data.get("job_id")):
        found.append(("field 'job_id'", ("job_id",), "job_id"))
    devices = data.get("devices")
    for index, device in enumerate(devices if isinstance(devices, list) else []):
        if isinstance(device, Mapping) and _is_number(device.get("id")):
            found.append((f"devices[{index}] (id {device['id']!r}): field 'id'", ("devices", index, "id"), "id"))
    if not found:
        return []
    root = yaml.compose(text, Loader=YAML_LOADER)
    lines = []
    for where, keys, key in found:
        written = _scalar_at(root, keys)
        value = data.get("job_id") if key == "job_id" else data["devices"][keys[1]]["id"]
        lines.append(f"{where}: {written} is read by YAML as the number {value!r}; ids are text: "
                     f"quote it, {key}: \"{written}\"")
    return lines


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_at(node: yaml.Node | None, keys: tuple[str | int, ...]) -> str:
    """The text of the scalar at ``keys`` (mapping keys, list indices) as written in the file."""
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return "?"
    return node.value if isinstance(node, yaml.ScalarNode) else "?"


def _refuse_number(value: object, key: str, example: str) -> object:
    """Ids are text: a number (YAML's reading of an unquoted ``010``) is refused, never turned into text."""
    if _is_number(value):
        raise ValueError(f"is the number {value!r}; ids are text: quote it, e.g. {key}: \"{example}\"")
    return value
