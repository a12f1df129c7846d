"""Device profiles: register maps of meter models, kept as YAML data.

A profile names a meter model and lists its params (id, register or coil
address, function code, type, byte/word order, bit field, scale, scale
register, unit, descriptions). Built-in profiles ship as ``<name>.yaml``
beside this file (``generic.yaml`` documents every key); a user profile is
any YAML file with the same schema, referenced by path. Validation errors
name the file, the param (index and id) and the field.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from susee.codec import BIT_FUNCTIONS, DATA_TYPES, ORDER_ALIASES, ORDERS, normalise_order, parse_bits
from susee.config import ID_PATTERN, load_yaml
from susee.validation import describe_errors

# The Modbus protocol caps a register read at 125 words (PDU of 253 bytes)
# and a coil or discrete input read at 2000 bits.
MODBUS_MAX_REGISTERS = 125
MODBUS_MAX_BITS = 2000
# Highest address on the wire (PDU addresses are 16 bits).
MAX_WIRE_ADDRESS = 65535
# Params are stored in varchar(20) columns.
MAX_PARAM_ID_CHARS = 20

Order = Literal["big", "little"]


class ProfileError(Exception):
    """A profile could not be found, parsed or validated; the message names it."""


class ScaleRegister(BaseModel):
    """Where a param's power-of-ten exponent lives: value = raw x 10^exponent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=MAX_WIRE_ADDRESS)
    type: str = "int16"
    function: Literal[3, 4] | None = None  # None: the param's function

    @field_validator("type")
    @classmethod
    def _integer_type(cls, value: str) -> str:
        if value not in DATA_TYPES or DATA_TYPES[value].kind != "int":
            names = ", ".join(t.name for t in DATA_TYPES.values() if t.kind == "int")
            raise ValueError(f"unknown exponent type {value!r}; expected one of {names}")
        return value

    @property
    def words(self) -> int:
        return DATA_TYPES[self.type].words


class ParamSpec(BaseModel):
    """One quantity a device exposes: where it lives and how to decode it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_PARAM_ID_CHARS)
    address: int = Field(ge=0, le=MAX_WIRE_ADDRESS)
    type: str = "float32"  # "bit" when function is 1 or 2
    function: Literal[1, 2, 3, 4] | None = None  # None: the profile's default
    byte_order: Order | None = None
    word_order: Order | None = None
    order: str | None = None  # ABCD-style alias for byte_order + word_order
    bits: str | int | None = None  # "3" or "4-7": an unsigned bit field of an integer type
    scale_register: ScaleRegister | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = Field(default="", max_length=10)
    acronym: str = Field(default="", max_length=30)
    descr_ita: str = Field(default="", max_length=255)
    descr_eng: str = Field(default="", max_length=255)
    # Reports: a counter (cumulative energy) is reported as differences, a gauge never.
    kind: Literal["counter", "gauge"] = "gauge"
    max_power: float | None = Field(default=None, gt=0)  # W (var for varh): a larger rise is implausible
    modulus: float | None = Field(default=None, gt=0)  # the value a counter rolls over at

    @model_validator(mode="before")
    @classmethod
    def _bits_are_read_as_bit_type(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("function") in BIT_FUNCTIONS and "type" not in data:
            return {**data, "type": "bit"}
        return data

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        # idParam, like idDevice: checked again by the MariaDB sink (sinks.prepared); never a quote or a space.
        if not ID_PATTERN.fullmatch(value):
            raise ValueError("param id must be 1-20 characters of letters, digits, _ . : -")
        return value

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

    @model_validator(mode="after")
    def _coherent(self) -> ParamSpec:
        problems = []
        is_bit = self.type == "bit"
        if is_bit != (self.function in BIT_FUNCTIONS):
            if is_bit:
                problems.append("field 'function': type bit is read with function 1 (coils) or 2 (discrete inputs)")
            else:
                problems.append(f"field 'type': function {self.function} reads bits; use type bit, not {self.type!r}")
        if self.kind != "counter" and (self.max_power is not None or self.modulus is not None):
            problems.append("field 'kind': max_power and modulus apply to counters; add kind: counter")
        if is_bit and (self.bits is not None or self.scale_register is not None):
            problems.append("field 'bits': a bit param is already one bit; bits and scale_register do not apply")
        elif self.bits is not None:
            try:
                parse_bits(self.bits, self.type)
            except ValueError as exc:
                problems.append(f"field 'bits': {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def words(self) -> int:
        """Block elements the param occupies: 16-bit words, or 1 for a bit."""
        return DATA_TYPES[self.type].words

    @property
    def bit_field(self) -> tuple[int, int] | None:
        """(lowest, highest) bit of the field, or None for the whole value."""
        return None if self.bits is None else parse_bits(self.bits, self.type)


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
    max_bits: int = Field(default=MODBUS_MAX_BITS, ge=1, le=MODBUS_MAX_BITS)
    max_gap: int = Field(default=16, ge=0, le=MODBUS_MAX_BITS)
    default_params: list[str] = Field(default_factory=list)
    params: list[ParamSpec] = Field(min_length=1)
    # Counters computed at report time from counters of the same meter, e.g.
    # {EP_IMP: "222 + 223"} (sum of the two tariff registers).
    derived: dict[str, str] = Field(default_factory=dict)

    @field_validator("derived", mode="before")
    @classmethod
    def _derived_text(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("default_params", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        # Every problem at once: a profile is fixed in one go, not one error per run.
        problems = self.problems(list(enumerate(self.params)), self.default_params)
        for name, expression in self.derived.items():
            problem = self._derived_problem(name, expression)
            if problem:
                problems.append(f"derived.{name}: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def problems(self, params: list[tuple[int, ParamSpec]], default_params: list[str]) -> list[str]:
        """What is wrong between the ``(index, param)`` pairs: duplicate ids, addresses, unknown default ids."""
        problems = []
        seen: dict[str, int] = {}
        for index, param in params:
            where = f"params[{index}] (id {param.id!r})"
            if param.id in seen:
                problems.append(f"{where}: field 'id': duplicate of params[{seen[param.id]}]")
            seen.setdefault(param.id, index)
            problem = self.address_problem(param)
            if problem:
                problems.append(f"{where}: {problem}")
            if param.words > self.max_registers:
                problems.append(f"{where}: field 'type': {param.words} words exceed max_registers {self.max_registers}")
        for param_id in default_params:
            if param_id not in seen:
                problems.append(f"default_params: {param_id!r} is not a param of this profile")
        return problems

    def _derived_problem(self, name: str, expression: str) -> str | None:
        from susee.expressions import ExpressionError, parse_expression

        if not ID_PATTERN.fullmatch(name) or name in self.by_id:
            return "name must be a new param id (1-20 characters of letters, digits, _ . : -)"
        try:
            terms = parse_expression(expression)
        except ExpressionError as exc:
            return str(exc)
        for _, part in terms:
            if part not in self.by_id:
                return f"{part!r} is not a param of this profile"
            if self.by_id[part].kind != "counter":
                return f"{part!r} is not a counter (kind: counter)"
        units = {self.by_id[part].unit for _, part in terms}
        if len(units) > 1:
            return f"parts have different units: {', '.join(sorted(units))}"
        return None

    def derived_terms(self, name: str) -> list[tuple[int, str]]:
        """The (sign, param id) terms of a derived counter."""
        from susee.expressions import parse_expression

        return parse_expression(self.derived[name])

    @cached_property
    def by_id(self) -> dict[str, ParamSpec]:
        return {p.id: p for p in self.params}

    @property
    def default_ids(self) -> list[str]:
        return list(self.default_params) or [p.id for p in self.params]

    def function_of(self, param: ParamSpec) -> int:
        return param.function or self.function

    def orders_of(self, param: ParamSpec) -> tuple[str, str]:
        if param.type == "bit":  # one 0/1 element per bit: nothing to reorder
            return "big", "big"
        if param.order is not None:
            return normalise_order(None, None, param.order)
        return param.byte_order or self.byte_order, param.word_order or self.word_order

    def wire_address(self, param: ParamSpec, address_base: int | None = None) -> int:
        """The PDU address sent on the wire, whatever numbering the manual uses.

        ``address_base`` overrides the profile's numbering (a device setting).
        """
        return param.address - (self.address_base if address_base is None else address_base)

    def scale_wire_address(self, param: ParamSpec, address_base: int | None = None) -> int:
        """The PDU address of the param's scale register (it must have one)."""
        assert param.scale_register is not None
        return param.scale_register.address - (self.address_base if address_base is None else address_base)

    def address_problem(self, param: ParamSpec, address_base: int | None = None) -> str | None:
        """Why ``param`` cannot be read with this numbering, or None if it can."""
        base = self.address_base if address_base is None else address_base
        spans = [("address", param.address, param.words)]
        if param.scale_register is not None:
            spans.append(("scale_register.address", param.scale_register.address, param.scale_register.words))
        for field, address, words in spans:
            if address - base < 0:
                return f"field {field!r}: register {address} is below address_base {base}"
            if address - base + words > MAX_WIRE_ADDRESS + 1:
                return (f"field {field!r}: register {address} + {words} words exceeds {MAX_WIRE_ADDRESS}"
                        + (f" with address_base {base}" if base else ""))
        return None


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
        data = load_yaml(text, source)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a mapping with 'name' and 'params'")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc, data, "params", Profile) + _problems_between_valid_params(exc, data)
        raise ProfileError(f"{source}: " + "; ".join(problems)) from exc


def _problems_between_valid_params(exc: ValidationError, data: dict) -> list[str]:
    """The checks across params (duplicate ids, addresses) among the params valid on their own.

    pydantic runs them only once every param is valid, which would reveal
    them one run after the errors in ``exc`` are fixed. Only when every error
    is inside a param: the header (address base, limits) is then valid.
    """
    if any(error["loc"][:1] != ("params",) for error in exc.errors()) or not isinstance(data.get("params"), list):
        return []
    valid = []
    for index, entry in enumerate(data["params"]):
        try:
            valid.append((index, ParamSpec.model_validate(entry)))
        except ValidationError:
            continue
    header = {key: value for key, value in data.items() if key in Profile.model_fields and key != "params"}
    try:
        profile = Profile.model_validate({**header, "params": [{"id": "_", "address": 0, "type": "uint16"}],
                                          "default_params": []})
    except ValidationError:
        return []
    return profile.problems(valid, [])  # default_params: the invalid params' ids are unknown here



__all__ = [
    "MODBUS_MAX_BITS",
    "MODBUS_MAX_REGISTERS",
    "ORDERS",
    "ParamSpec",
    "Profile",
    "ProfileError",
    "ScaleRegister",
    "builtin_names",
    "load_profile",
]
