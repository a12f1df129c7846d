"""Device profiles: register maps of meter models, kept as YAML data.

A profile names a meter model and lists its params (id, register address,
type, byte/word order, scale, unit, descriptions). Built-in profiles ship as
``<name>.yaml`` beside this file; a user profile is any YAML file with the
same schema, referenced by path.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from susee.codec import DATA_TYPES, ORDER_ALIASES, ORDERS, normalise_order

# The Modbus protocol caps a register read at 125 words (PDU of 253 bytes).
MODBUS_MAX_REGISTERS = 125
# Params are stored in varchar(20) columns.
MAX_PARAM_ID_CHARS = 20

Order = Literal["big", "little"]


class ProfileError(Exception):
    """A profile could not be found, parsed or validated; the message names it."""


class ParamSpec(BaseModel):
    """One quantity a device exposes: where it lives and how to decode it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_PARAM_ID_CHARS)
    address: int = Field(ge=0, le=65535)
    type: str = "float32"
    function: Literal[3, 4] | None = None  # None: the profile's default
    byte_order: Order | None = None
    word_order: Order | None = None
    order: str | None = None  # ABCD-style alias for byte_order + word_order
    scale: float = 1.0
    offset: float = 0.0
    unit: str = Field(default="", max_length=10)
    acronym: str = Field(default="", max_length=30)
    descr_ita: str = Field(default="", max_length=255)
    descr_eng: str = Field(default="", max_length=255)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in DATA_TYPES:
            raise ValueError(f"unknown type {value!r}; expected one of {', '.join(DATA_TYPES)}")
        return value

    @field_validator("order")
    @classmethod
    def _known_order(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in ORDER_ALIASES:
            raise ValueError(f"unknown order {value!r}; expected one of {', '.join(ORDER_ALIASES)}")
        return value

    @property
    def words(self) -> int:
        return DATA_TYPES[self.type].words


class Profile(BaseModel):
    """A meter model's register map and its defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    source: str = ""
    function: Literal[3, 4] = 3
    byte_order: Order = "big"
    word_order: Order = "big"
    address_base: Literal[0, 1] = 0
    max_registers: int = Field(default=MODBUS_MAX_REGISTERS, ge=1, le=MODBUS_MAX_REGISTERS)
    max_gap: int = Field(default=16, ge=0, le=MODBUS_MAX_REGISTERS)
    default_params: list[str] = Field(default_factory=list)
    params: list[ParamSpec] = Field(min_length=1)

    @field_validator("default_params", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        seen: set[str] = set()
        for index, param in enumerate(self.params):
            if param.id in seen:
                raise ValueError(f"params[{index}]: duplicate param id {param.id!r}")
            seen.add(param.id)
            address = param.address - self.address_base
            if address < 0:
                raise ValueError(f"params[{index}] (id {param.id!r}): address {param.address} is below address_base")
            if address + param.words > 65536:
                raise ValueError(
                    f"params[{index}] (id {param.id!r}): register {param.address} + {param.words} words exceeds 65535"
                )
            if param.words > self.max_registers:
                raise ValueError(f"params[{index}] (id {param.id!r}): {param.words} words exceed max_registers")
        for param_id in self.default_params:
            if param_id not in seen:
                raise ValueError(f"default_params: {param_id!r} is not a param of this profile")
        return self

    @cached_property
    def by_id(self) -> dict[str, ParamSpec]:
        return {p.id: p for p in self.params}

    @property
    def default_ids(self) -> list[str]:
        return list(self.default_params) or [p.id for p in self.params]

    def function_of(self, param: ParamSpec) -> int:
        return param.function or self.function

    def orders_of(self, param: ParamSpec) -> tuple[str, str]:
        if param.order is not None:
            return normalise_order(None, None, param.order)
        return param.byte_order or self.byte_order, param.word_order or self.word_order

    def wire_address(self, param: ParamSpec) -> int:
        """The PDU address sent on the wire, whatever numbering the manual uses."""
        return param.address - self.address_base


def builtin_names() -> list[str]:
    """Names of the profiles shipped inside the package."""
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".yaml")
    )


def load_profile(reference: str, base_dir: Path | None = None) -> Profile:
    """Load a built-in profile by name, or a user profile by path.

    Relative paths are resolved against ``base_dir`` (the config file's folder).
    Raises ProfileError with the file and the offending field in the message.
    """
    if reference in builtin_names():
        source = f"built-in profile {reference!r}"
        text = resources.files(__name__).joinpath(f"{reference}.yaml").read_text(encoding="utf-8")
    else:
        path = Path(reference)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        source = str(path)
        if not path.is_file():
            raise ProfileError(
                f"profile {reference!r} not found: not a built-in profile ({', '.join(builtin_names())}) nor a file"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"{source}: cannot read profile: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a mapping with 'name' and 'params'")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{source}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: 'field.path: message'."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


__all__ = [
    "MODBUS_MAX_REGISTERS",
    "ORDERS",
    "ParamSpec",
    "Profile",
    "ProfileError",
    "builtin_names",
    "format_validation_error",
    "load_profile",
]
