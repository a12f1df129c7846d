"""Validated settings: one pydantic-settings object built from site.yaml.

Precedence, highest first: environment (``SUSEE_`` prefix, ``__`` for nesting),
a ``.env`` file, a secrets directory, then the YAML file. The original susee's
``user_db``, ``pswd_db``, ``host_db`` and ``port_db`` are accepted too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,16}$")
DATABASE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}$")
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,20}$")  # idDevice is varchar(20)
MYSQL_SCHEMES = ("mysql", "mariadb", "mysql+aiomysql")
DEFAULT_SECRETS_DIR = Path("/run/secrets")  # where Docker and Kubernetes mount secrets


class ConfigError(Exception):
    """The configuration is invalid; the message names file, device and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where rows go: ``mysql://user@host:port[/name]`` or ``sqlite:///file.db``."""

    url: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    name: str | None = None  # default seedb<job_id>
    connect_timeout: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            scheme = value.split("://", 1)[0].lower() if "://" in value else ""
            if scheme not in (*MYSQL_SCHEMES, "sqlite"):
                raise ValueError(f"url must start with mysql:// or sqlite:///, got {_mask_url(value)!r}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not DATABASE_NAME_PATTERN.match(value):
            raise ValueError("database name must match ^[A-Za-z0-9_]{1,64}$")
        return value


class DeviceSettings(_Section):
    """One meter: where it is and which profile decodes it."""

    id: str
    profile: str = "pac3200"
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)
    timeout: float = Field(default=1.0, gt=0, le=60)
    enabled: bool = True
    params: list[str] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not DEVICE_ID_PATTERN.match(value):
            raise ValueError("device id must be 1-20 characters of letters, digits, _ . : -")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _params_text(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) else v for v in value]
        return value


class WriterSettings(_Section):
    """Batching of rows into the database."""

    batch_rows: int = Field(default=2000, ge=1)  # flush when this many rows wait
    batch_age: float = Field(default=1.0, gt=0)  # or when the oldest waited this long (s)
    queue_size: int = Field(default=10000, ge=1)  # device-ticks held in memory


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
    )

    job_id: str = "000"
    sample_time: float = Field(default=10, ge=1)
    sample_shift: float = Field(default=0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    simulator: SimulatorSettings | None = None
    devices: list[DeviceSettings] = Field(default_factory=list)

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

    @field_validator("job_id", mode="before")
    @classmethod
    def _job_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("job_id")
    @classmethod
    def _job_identifier(cls, value: str) -> str:
        # The job id becomes part of database and table names.
        if not JOB_ID_PATTERN.match(value):
            raise ValueError("job_id must match ^[A-Za-z0-9_]{1,16}$")
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
        if self.database.url is None:
            if self.host_db is None:
                raise ValueError("database.url: required (or host_db/port_db from the original susee .env)")
            self.database.url = f"mysql://{self.host_db}:{self.port_db or 3306}"
        return self

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
        url = db.url or ""
        parts = urlsplit(url)
        default_name = f"seedb{settings.job_id}"
        if parts.scheme == "sqlite":
            # sqlite:///relative.db, sqlite:////absolute/path.db
            raw_path = url[len("sqlite:///"):]
            if not raw_path:
                raise ConfigError("database.url: sqlite URL needs a file, e.g. sqlite:///susee.db")
            return cls(kind="sqlite", database=db.name or default_name, path=Path(raw_path))
        name = db.name or parts.path.lstrip("/") or default_name
        if not DATABASE_NAME_PATTERN.match(name):
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

    def __str__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        secret = ":***" if self.password is not None and self.password.get_secret_value() else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{self.database}"


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate ``path``; raise ConfigError naming file, device and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    env_files = [p for p in (path.parent / ".env", Path.cwd() / ".env") if p.is_file()]
    secrets_dir = Path((environ or os.environ).get("SUSEE_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    try:
        return Settings(
            **data,
            _env_file=tuple(env_files) or None,
            _secrets_dir=secrets_dir if secrets_dir.is_dir() else None,
        )
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc, data)}") from exc


def describe_errors(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """Turn pydantic errors into '<where>: field '<name>': <problem>' lines."""
    lines = []
    devices = data.get("devices") if isinstance(data.get("devices"), list) else []
    for error in exc.errors():
        location = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        where = ""
        if len(location) >= 2 and location[0] == "devices" and isinstance(location[1], int):
            index = location[1]
            device = devices[index] if index < len(devices) and isinstance(devices[index], dict) else {}
            where = f"devices[{index}] (id {device.get('id', '?')!r}): "
            location = location[2:]
        field = ".".join(str(p) for p in location)
        lines.append(f"{where}field {field!r}: {message}" if field else f"{where}{message}")
    return "\n  ".join(lines)
