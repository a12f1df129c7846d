"""The original susee's etl_data.py -> a site YAML, read as data, never executed.

The file is parsed with ``ast`` and only module-level assignments to
``idDevices_pack`` and ``sample_params`` are looked at, in file order, the
way Python would apply them (``idDevices_pack = {}`` then
``idDevices_pack[0] = {...}``, or one dict literal, or
``sample_params['sampleTime'] = 10``). Values are taken with
``ast.literal_eval``; anything else (``options_['x']``, calls, names) is
reported with its line and skipped. Nothing in the file is imported, called
or evaluated, so a file that would open files or exit is converted the same.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

EXIT_CONFIG = 2
DEVICES = "idDevices_pack"
SAMPLING = "sample_params"
# The original's typeDev -> built-in profile. Others become "<typedev>.yaml".
LEGACY_PROFILES = {"P32": "pac3200"}
# The database URL is a placeholder: the original kept credentials in .env.
PLACEHOLDER_DATABASE_URL = "mysql://user@127.0.0.1:3306"
DEFAULT_JOB_ID = "000"
DEFAULT_SAMPLE_TIME_S = 10  # the original's default sampling period
# Device keys the new config has no use for, and why.
IGNORED_DEVICE_KEYS = {
    "Function": "the profile sets the function code: rr = 3, ir = 4",
}
# sample_params keys without an equivalent, and why.
IGNORED_SAMPLING_KEYS = {
    "sampleType": "susee always samples until stopped",
    "waitTime": "susee keeps connections open between ticks",
    "open_close_conn": "susee keeps connections open between ticks",
    "utc_time": "susee always stores UTC",
    "num_try": "a failed read is stored with its Code, never retried within the tick",
}
SAMPLING_KEYS = {"sampleTime": "sample_time", "sampleShift": "sample_shift"}
TCP_KEYS = frozenset({"Port"})
SERIAL_KEYS = frozenset({"baudrate", "parity", "StopBits"})
DEVICE_KEYS = TCP_KEYS | SERIAL_KEYS | {"typeDev", "idDev", "method", "ipAddr_COM", "idAddr", "timeout", "enable"}


class LegacyError(Exception):
    """The file cannot be read or parsed; the message names it."""


@dataclass(frozen=True)
class Entry:
    """A literal value and the line it came from."""

    value: Any
    line: int


@dataclass
class Conversion:
    """The site YAML and what the user should know about it."""

    yaml_text: str
    notes: list[str] = field(default_factory=list)
    devices: int = 0


def convert(text: str, filename: str = "etl_data.py") -> Conversion:
    """Convert the text of an original etl_data.py; raise LegacyError if it does not parse."""
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as exc:
        raise LegacyError(f"{filename}:{exc.lineno}: not valid Python: {exc.msg}") from exc
    reader = _Reader(filename)
    reader.read(tree.body)
    return _Writer(filename, reader).write()


def main(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``susee import-legacy FILE``: the YAML on ``out``, notes on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"import-legacy: {path}: cannot read: {getattr(exc, 'strerror', None) or exc}", file=err)
        return EXIT_CONFIG
    try:
        conversion = convert(text, path)
    except LegacyError as exc:
        print(f"import-legacy: {exc}", file=err)
        return EXIT_CONFIG
    out.write(conversion.yaml_text)
    for note in conversion.notes:
        print(f"import-legacy: {note}", file=err)
    print(f"import-legacy: {path}: {conversion.devices} device(s) converted", file=err)
    return 0


class _Reader:
    """Replays the module-level assignments that matter, as data."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.tables: dict[str, dict[Any, Entry]] = {DEVICES: {}, SAMPLING: {}}
        self.job_id: Entry | None = None
        self.notes: list[str] = []

    def read(self, statements: Iterable[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    self._assign(target, statement.value)
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                self._assign(statement.target, statement.value)

    def note(self, node: ast.AST, text: str) -> None:
        self.notes.append(f"{self.filename}:{getattr(node, 'lineno', '?')}: {text}")

    def _assign(self, target: ast.expr, value: ast.expr) -> None:
        path = self._path(target)
        if not path:
            return
        name, keys = path[0], path[1:]
        if name == "job_id" and not keys:
            self._job_id(value)
            return
        if name not in self.tables:
            return
        label = name + "".join(f"[{k!r}]" for k in keys)
        if not keys:
            if not isinstance(value, ast.Dict):
                self.note(value, f"{label} = {ast.unparse(value)}: not a dict literal, skipped")
                return
            self.tables[name] = self._dict(value, label, nested=name == DEVICES)
            return
        table = self.tables[name]
        for key in keys[:-1]:
            entry = table.get(key)
            if entry is None or not isinstance(entry.value, dict):
                defined = name + "".join(f"[{k!r}]" for k in keys[:-1])
                self.note(value, f"{label}: {defined} is not defined before, skipped")
                return
            table = entry.value
        converted = self._value(value, label, nested=name == DEVICES and len(keys) == 1)
        if converted is not None:
            table[keys[-1]] = converted

    def _path(self, target: ast.expr) -> tuple[Any, ...] | None:
        """('idDevices_pack', 0, 'enable') for ``idDevices_pack[0]['enable']``, else None."""
        keys: list[Any] = []
        while isinstance(target, ast.Subscript):
            try:
                keys.append(ast.literal_eval(target.slice))
            except (ValueError, SyntaxError, TypeError):
                if _root_name(target) in (*self.tables, "job_id"):
                    self.note(target, f"{ast.unparse(target)}: the subscript is not a literal, skipped")
                return None
            target = target.value
        if not isinstance(target, ast.Name):
            return None
        return (target.id, *reversed(keys))

    def _value(self, node: ast.expr, label: str, nested: bool) -> Entry | None:
        if nested and isinstance(node, ast.Dict):
            return Entry(self._dict(node, label, nested=False), node.lineno)
        try:
            return Entry(ast.literal_eval(node), node.lineno)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            self.note(node, f"{label} = {ast.unparse(node)}: not a literal, skipped")
            return None

    def _dict(self, node: ast.Dict, label: str, nested: bool) -> dict[Any, Entry]:
        result: dict[Any, Entry] = {}
        for key_node, value_node in zip(node.keys, node.values):
            if key_node is None:
                self.note(value_node, f"{label}: **{ast.unparse(value_node)}: not a literal, skipped")
                continue
            try:
                key = ast.literal_eval(key_node)
            except (ValueError, SyntaxError, TypeError):
                self.note(key_node, f"{label}: key {ast.unparse(key_node)} is not a literal, skipped")
                continue
            entry = self._value(value_node, f"{label}[{key!r}]", nested)
            if entry is not None:
                result[key] = entry
        return result

    def _job_id(self, node: ast.expr) -> None:
        """A literal job id, or the literal default of decouple's ``config('job_id', default=...)``."""
        if isinstance(node, ast.Call):
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if default is None and len(node.args) > 1:
                default = node.args[1]
            node = default if default is not None else node
        try:
            self.job_id = Entry(ast.literal_eval(node), node.lineno)
        except (ValueError, SyntaxError, TypeError):
            self.job_id = None


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _Writer:
    """Turns what the reader found into site YAML lines, with comments."""

    def __init__(self, filename: str, reader: _Reader) -> None:
        self.filename = filename
        self.reader = reader
        self.notes = list(reader.notes)
        self.lines: list[str] = []

    def write(self) -> Conversion:
        reader = self.reader
        job_id = str(reader.job_id.value) if reader.job_id is not None else DEFAULT_JOB_ID
        sampling = self._sampling(reader.tables[SAMPLING])
        self.lines += [
            f"# susee site configuration converted by `susee import-legacy` from {Path(self.filename).name}",
            "# (the file was read as data, never executed). Review it, then run:",
            "#   susee check --config site.yaml",
            f"job_id: {_scalar(job_id)}",
            f"sample_time: {_scalar(sampling['sample_time'])}",
            f"sample_shift: {_scalar(sampling['sample_shift'])}",
            "database:",
            "  # Replace user and host. The password never goes here: set",
            "  # SUSEE_DATABASE__PASSWORD, or keep the original .env (pswd_db is read as before;",
            "  # delete this url to use its user_db, host_db and port_db too).",
            f"  url: {_scalar(PLACEHOLDER_DATABASE_URL)}",
        ]
        self.lines += [f"# {line}" for line in sampling["comments"]]
        devices = self._devices(reader.tables[DEVICES])
        return Conversion("\n".join(self.lines) + "\n", self.notes, devices)

    def _sampling(self, table: dict[Any, Entry]) -> dict[str, Any]:
        result: dict[str, Any] = {"sample_time": DEFAULT_SAMPLE_TIME_S, "sample_shift": 0, "comments": []}
        if "sampleTime" not in table:
            self.notes.append(
                f"{self.filename}: {SAMPLING}['sampleTime'] not found: sample_time {DEFAULT_SAMPLE_TIME_S}"
            )
        for key, entry in table.items():
            where = f"{self.filename}:{entry.line}: {SAMPLING}[{key!r}]"
            if key in SAMPLING_KEYS:
                if isinstance(entry.value, (int, float)) and not isinstance(entry.value, bool):
                    result[SAMPLING_KEYS[key]] = entry.value
                else:
                    self.notes.append(f"{where} = {entry.value!r}: not a number, skipped")
                continue
            reason = IGNORED_SAMPLING_KEYS.get(key, "unknown key")
            self.notes.append(f"{where} = {entry.value!r}: not converted ({reason})")
            result["comments"].append(f"not converted: {SAMPLING}[{key!r}] = {entry.value!r} ({reason})")
        return result

    def _devices(self, table: dict[Any, Entry]) -> int:
        if not table:
            self.notes.append(f"{self.filename}: no {DEVICES} entries found: devices is empty")
            self.lines.append("devices: []")
            return 0
        self.lines.append("devices:")
        keys = sorted(table, key=repr) if not all(isinstance(k, int) for k in table) else sorted(table)
        converted = 0
        for key in keys:
            entry = table[key]
            label = f"{DEVICES}[{key!r}]"
            if not isinstance(entry.value, dict):
                self.notes.append(f"{self.filename}:{entry.line}: {label} = {entry.value!r}: not a dict, skipped")
                continue
            converted += self._device(entry.value, label, entry.line)
        return converted

    def _device(self, spec: dict[Any, Entry], label: str, line: int) -> int:
        values = {k: e.value for k, e in spec.items()}
        device_id = values.get("idDev")
        if device_id is None:
            self.notes.append(f"{self.filename}:{line}: {label}: no idDev, skipped")
            return 0
        label = f"{label} (idDev {str(device_id)!r})"
        where = f"{self.filename}:{line}: {label}"
        lines = [f"- id: {_scalar(str(device_id))}", f"  profile: {_scalar(self._profile(values, where))}"]
        method = str(values.get("method", "")).lower()
        unused = set(spec) - DEVICE_KEYS
        if method == "tcp":
            lines.append(f"  host: {_scalar(str(values.get('ipAddr_COM', '')))}")
            port = self._integer(values, "Port", where)
            if port is not None:
                lines.append(f"  port: {port}")
            unused |= SERIAL_KEYS & set(spec)
        elif method == "rtu":
            lines.append("  serial:")
            lines.append(f"    port: {_scalar(str(values.get('ipAddr_COM', '')))}")
            for key, name in (("baudrate", "baudrate"), ("parity", "parity"), ("StopBits", "stopbits")):
                value = values.get(key)
                if value is not None:
                    lines.append(f"    {name}: {_scalar(value)}")
            unused |= TCP_KEYS & set(spec)
        else:
            lines.append(f"  # ipAddr_COM: {values.get('ipAddr_COM')!r}")
        unit = self._integer(values, "idAddr", where)
        if unit is not None:
            lines.append(f"  unit: {unit}")
        if "timeout" in values:
            lines.append(f"  timeout: {_scalar(values['timeout'])}")
        if "enable" in values:
            lines.append(f"  enabled: {_scalar(_truth(values['enable']))}")
        for key, entry in spec.items():
            if key not in unused:
                continue
            if key in SERIAL_KEYS:
                reason = "a TCP device has no serial settings"
            elif key in TCP_KEYS:
                reason = "a serial device has no TCP port"
            else:
                reason = IGNORED_DEVICE_KEYS.get(key, "unknown key")
            self.notes.append(
                f"{self.filename}:{entry.line}: {label}: key {key!r} = {entry.value!r} not converted ({reason})"
            )
            lines.append(f"  # not converted: {key}: {entry.value!r} ({reason})")
        if method not in ("tcp", "rtu"):
            self.notes.append(f"{where}: method {values.get('method')!r} is neither tcp nor rtu: written commented out")
            self.lines += [f"  # {line}" for line in lines]
            return 0
        self.lines += [f"  {line}" for line in lines]
        return 1

    def _profile(self, values: dict[Any, Any], where: str) -> str:
        type_dev = str(values.get("typeDev", ""))
        profile = LEGACY_PROFILES.get(type_dev)
        if profile is None:
            profile = f"{type_dev.lower() or 'unknown'}.yaml"
            self.notes.append(f"{where}: typeDev {type_dev!r} has no built-in profile: "
                              f"wrote profile {profile!r}, write that profile file (see `susee profile show generic`)")
        return profile

    def _integer(self, values: dict[Any, Any], key: str, where: str) -> int | None:
        if key not in values:
            return None
        value = values[key]
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            self.notes.append(f"{where}: {key} {value!r} is not an integer, skipped")
            return None


def _truth(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _scalar(value: Any) -> str:
    """A YAML scalar: strings always quoted (JSON strings are valid YAML), numbers and bools plain."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)
