"""Fields -> coalesced read requests, checked as data."""

from __future__ import annotations

import asyncio
import re
import struct
from pathlib import Path

import pytest
import yaml

from support import ReadsInTurn
from susee.codec import registers_to_bytes
from susee.config import ConfigError, DeviceSettings, Settings, load_settings
from susee.devices import DevicePlan, plan_devices
from susee.planner import PlanError, finisher, plan_reads
from susee.poller import Poller
from susee.profiles import MODBUS_MAX_REGISTERS, Profile, load_profile
from susee.quality import Code
from susee.sample import Sample
from susee.ticks import TickGrid
from susee.links import ExceptionResponse

PAC3200_DEFAULT = ["104", "107", "132", "133", "134", "135", "222", "226"]


def _words(fmt: str, value: float) -> list[int]:
    """Big-endian, high word first registers, straight from struct (not codec)."""
    raw = struct.pack(">" + fmt, value)
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


def _shape(blocks) -> list[tuple[int, int, int, tuple[tuple[str, int], ...]]]:
    return [(b.function, b.address, b.count, tuple((f.param_id, f.offset_words) for f in b.fields)) for b in blocks]


@pytest.fixture(scope="module")
def pac3200() -> Profile:
    return load_profile("pac3200")


def test_pac3200_default_set_plans_two_requests(pac3200) -> None:
    blocks = plan_reads(pac3200, pac3200.default_ids)

    assert pac3200.default_ids == PAC3200_DEFAULT
    assert _shape(blocks) == [
        (3, 7, 64, (("104", 0), ("107", 6), ("132", 56), ("133", 58), ("134", 60), ("135", 62))),
        (3, 801, 20, (("222", 0), ("226", 16))),
    ]


def test_pac3200_default_blocks_decode_known_values(pac3200) -> None:
    floats = {7: 400.25, 13: 12.5, 63: 8660.0, 65: 8000.5, 67: -3300.75, 69: -0.921875}
    energies = {801: 123456789.0, 817: 98765.4375}
    block_f32 = [0] * 64
    for address, value in floats.items():
        block_f32[address - 7 : address - 7 + 2] = _words("f", value)
    block_f64 = [0] * 20
    for address, value in energies.items():
        block_f64[address - 801 : address - 801 + 4] = _words("d", value)
    first, second = plan_reads(pac3200, PAC3200_DEFAULT)

    decoded = {
        f.param_id: f.decode(registers_to_bytes(registers))
        for block, registers in ((first, block_f32), (second, block_f64))
        for f in block.fields
    }

    assert decoded == {
        "104": (400.25, Code.OK),
        "107": (12.5, Code.OK),
        "132": (8660.0, Code.OK),
        "133": (8000.5, Code.OK),
        "134": (-3300.75, Code.OK),
        "135": (-0.921875, Code.OK),
        "222": (123456789.0, Code.OK),
        "226": (98765.4375, Code.OK),
    }


def test_pac3200_every_param_plans_within_the_modbus_limit(pac3200) -> None:
    blocks = plan_reads(pac3200, [p.id for p in pac3200.params])

    assert all(b.count <= MODBUS_MAX_REGISTERS for b in blocks)
    assert sorted(pid for b in blocks for pid in b.param_ids) == sorted(p.id for p in pac3200.params)


def _profile(params: list[dict], **settings) -> Profile:
    return Profile.model_validate({"name": "test", **settings, "params": params})


def _u16(pid: str, address: int, **extra) -> dict:
    return {"id": pid, "address": address, "type": "uint16", **extra}


def _f32(pid: str, address: int, **extra) -> dict:
    return {"id": pid, "address": address, "type": "float32", **extra}


PLAN_CASES = [
    pytest.param(
        _profile([_u16("1", 0), _u16("2", 1), _f32("3", 2)]),
        ["1", "2", "3"],
        [(3, 0, 4, (("1", 0), ("2", 1), ("3", 2)))],
        id="contiguous-params-merge",
    ),
    pytest.param(
        _profile([_u16("3", 20), _u16("1", 10), _u16("2", 11)]),
        ["3", "1", "2"],
        [(3, 10, 11, (("1", 0), ("2", 1), ("3", 10)))],
        id="fields-sorted-by-address-whatever-the-request-order",
    ),
    pytest.param(
        _profile([_u16("1", 0), _u16("2", 4)], max_gap=3),
        ["1", "2"],
        [(3, 0, 5, (("1", 0), ("2", 4)))],
        id="gap-equal-to-max-gap-merges",
    ),
    pytest.param(
        _profile([_u16("1", 0), _u16("2", 5)], max_gap=3),
        ["1", "2"],
        [(3, 0, 1, (("1", 0),)), (3, 5, 1, (("2", 0),))],
        id="gap-larger-than-max-gap-splits",
    ),
    pytest.param(
        _profile([_u16("1", 0), _u16("2", 1)], max_gap=0),
        ["1", "2"],
        [(3, 0, 2, (("1", 0), ("2", 1)))],
        id="max-gap-zero-still-merges-adjacent",
    ),
    pytest.param(
        _profile([_f32("1", 0), _f32("2", 2), _f32("3", 4)], max_registers=4),
        ["1", "2", "3"],
        [(3, 0, 4, (("1", 0), ("2", 2))), (3, 4, 2, (("3", 0),))],
        id="max-registers-splits",
    ),
    pytest.param(
        _profile([_u16("1", 0, function=4), _u16("2", 1, function=3), _u16("3", 2, function=4)]),
        ["1", "2", "3"],
        [(3, 1, 1, (("2", 0),)), (4, 0, 3, (("1", 0), ("3", 2)))],
        id="different-function-codes-never-merge",
    ),
    pytest.param(
        _profile([_u16("1", 0), _u16("2", 1)], function=4),
        ["1", "2"],
        [(4, 0, 2, (("1", 0), ("2", 1)))],
        id="profile-default-function-code-used",
    ),
    pytest.param(
        _profile([_u16("1", 0), _u16("2", 1)]),
        ["1", "2", "1", "2", "1"],
        [(3, 0, 2, (("1", 0), ("2", 1)))],
        id="repeated-ids-collapse",
    ),
    pytest.param(
        _profile([_u16("1", 1), _f32("2", 2)], address_base=1),
        ["1", "2"],
        [(3, 0, 3, (("1", 0), ("2", 1)))],
        id="address-base-1-shifts-wire-address",
    ),
    pytest.param(
        _profile([_f32("1", 0), _f32("2", 10)]),
        ["2"],
        [(3, 10, 2, (("2", 0),))],
        id="only-requested-params-are-read",
    ),
]


@pytest.mark.parametrize(("profile", "param_ids", "expected"), PLAN_CASES)
def test_plan_reads(profile, param_ids, expected) -> None:
    assert _shape(plan_reads(profile, param_ids)) == expected


def test_long_contiguous_run_never_exceeds_125_words() -> None:
    # 100 float32 params back to back: 200 words, more than one request can carry.
    profile = _profile([_f32(str(i), 2 * i) for i in range(100)])

    blocks = plan_reads(profile, [str(i) for i in range(100)])

    assert [(b.address, b.count) for b in blocks] == [(0, 124), (124, 76)]
    assert all(b.count <= MODBUS_MAX_REGISTERS for b in blocks)


def test_planned_decoder_uses_param_order_and_scale() -> None:
    profile = _profile(
        [
            _u16("v", 0, scale=0.1),
            _f32("p", 1, order="CDAB"),
            _f32("q", 3, byte_order="little", word_order="little"),
        ]
    )
    registers = [0x0904, 0x8000, 0x4366, 0x0000, 0xC0BF]

    (block,) = plan_reads(profile, ["v", "p", "q"])
    buffer = registers_to_bytes(registers)

    assert [f.decode(buffer)[0] for f in block.fields] == [pytest.approx(230.8), 230.5, -1.5]


def test_unknown_param_id_raises_key_error_naming_it() -> None:
    profile = _profile([_u16("1", 0)])

    with pytest.raises(KeyError, match="999"):
        plan_reads(profile, ["1", "999"])


# --- coils and discrete inputs (function 1 and 2): planned in bits --------------------


def _bit(pid: str, address: int, function: int = 1) -> dict:
    return {"id": pid, "address": address, "function": function}


BIT_PLAN_CASES = [
    pytest.param(
        _profile([_bit("c0", 0), _bit("c1", 1), _bit("c5", 5)]),
        ["c0", "c1", "c5"],
        [(1, 0, 6, (("c0", 0), ("c1", 1), ("c5", 5)))],
        id="coils-merge-counted-in-bits",
    ),
    pytest.param(
        _profile([_bit("c0", 0), _bit("d0", 0, function=2), _u16("r0", 0)]),
        ["r0", "d0", "c0"],
        [(1, 0, 1, (("c0", 0),)), (2, 0, 1, (("d0", 0),)), (3, 0, 1, (("r0", 0),))],
        id="coils-inputs-and-registers-never-merge",
    ),
    pytest.param(
        _profile([_bit("first", 0), _bit("last", 1999), _bit("next", 2000)], max_gap=2000),
        ["first", "last", "next"],
        [(1, 0, 2000, (("first", 0), ("last", 1999))), (1, 2000, 1, (("next", 0),))],
        id="2000-bits-per-request-at-most",
    ),
    pytest.param(
        _profile([_bit("a", 0), _bit("b", 200)], max_gap=2000),
        ["a", "b"],
        [(1, 0, 201, (("a", 0), ("b", 200)))],
        id="bit-block-may-exceed-125-registers",
    ),
    pytest.param(
        _profile([_bit("a", 0), _bit("b", 20)], max_gap=2000, max_bits=16),
        ["a", "b"],
        [(1, 0, 1, (("a", 0),)), (1, 20, 1, (("b", 0),))],
        id="profile-max-bits-splits",
    ),
    pytest.param(
        _profile([_bit("a", 1, function=2), _bit("b", 3, function=2)], address_base=1),
        ["a", "b"],
        [(2, 0, 3, (("a", 0), ("b", 2)))],
        id="address-base-1-applies-to-bits",
    ),
]


@pytest.mark.parametrize(("profile", "param_ids", "expected"), BIT_PLAN_CASES)
def test_plan_reads_of_bits(profile, param_ids, expected) -> None:
    assert _shape(plan_reads(profile, param_ids)) == expected


def test_bit_block_decodes_each_coil_from_the_0_1_list_of_the_transport() -> None:
    profile = _profile([_bit("c0", 0), _bit("c3", 3), _bit("c4", 4)])
    (block,) = plan_reads(profile, ["c0", "c3", "c4"])
    bits_from_link = [1, 0, 0, 0, 1]  # what TcpLink.read returns for function 1

    buffer = registers_to_bytes(bits_from_link)

    assert [f.decode(buffer) for f in block.fields] == [(1, Code.OK), (0, Code.OK), (1, Code.OK)]


# --- bit fields -------------------------------------------------------------------------


def test_bit_fields_share_the_register_of_the_whole_word() -> None:
    profile = _profile([_u16("status", 0), _u16("alarm", 0, bits="3"), _u16("mode", 0, bits="4-7")])

    (block,) = plan_reads(profile, ["status", "alarm", "mode"])
    buffer = registers_to_bytes([0x00A8])

    assert (block.address, block.count) == (0, 1)
    assert [f.decode(buffer)[0] for f in block.fields] == [0x00A8, 1, 0xA]


# --- per-device address base ------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile_base", "device_base", "wire_address"),
    [(0, None, 100), (1, None, 99), (0, 1, 99), (1, 0, 100), (1, 1, 99), (0, 0, 100)],
)
def test_device_address_base_overrides_the_profiles(profile_base, device_base, wire_address) -> None:
    profile = _profile([_f32("p", 100)], address_base=profile_base)

    (block,) = plan_reads(profile, ["p"], address_base=device_base)

    assert block.address == wire_address


@pytest.mark.parametrize(
    ("params", "device_base", "message"),
    [
        ([_u16("p0", 0)], 1, "param 'p0': field 'address': register 0 is below address_base 1"),
        ([_f32("top", 65535)], 0, "param 'top': field 'address': register 65535 + 2 words exceeds 65535"),
        ([_u16("s", 5, scale_register={"address": 0})], 1, "param 's': field 'scale_register.address': register 0"),
    ],
)
def test_plan_error_names_the_param_out_of_range_with_the_device_base(params, device_base, message) -> None:
    profile = _profile(params, address_base=1 - device_base)

    with pytest.raises(PlanError, match=re.escape(message)):
        plan_reads(profile, [p["id"] for p in params], address_base=device_base)


def _settings(tmp_path, devices: list[dict]) -> tuple[Settings, Path]:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": "sqlite:///x.db"}, "devices": devices}), encoding="utf-8")
    return load_settings(path), path


def test_plan_devices_passes_the_device_address_base_to_the_planner(tmp_path) -> None:
    (tmp_path / "meter.yaml").write_text(
        yaml.safe_dump({"name": "m", "address_base": 1, "params": [{"id": "v", "address": 3000}]}), encoding="utf-8"
    )
    settings, path = _settings(tmp_path, [
        {"id": "manual_1_based", "profile": "meter.yaml", "host": "h"},
        {"id": "wire_0_based", "profile": "meter.yaml", "host": "h", "address_base": 0},
    ])

    plans = plan_devices(settings, path)

    assert [p.blocks[0].address for p in plans] == [2999, 3000]


def test_plan_devices_names_device_and_param_when_the_device_base_breaks_an_address(tmp_path) -> None:
    (tmp_path / "meter.yaml").write_text(
        yaml.safe_dump({"name": "m", "params": [{"id": "v0", "address": 0}]}), encoding="utf-8"
    )
    settings, path = _settings(tmp_path, [
        {"id": "ok", "profile": "meter.yaml", "host": "h"},
        {"id": "d07", "profile": "meter.yaml", "host": "h", "address_base": 1},
    ])

    with pytest.raises(ConfigError) as raised:
        plan_devices(settings, path)

    assert str(raised.value) == (
        f"{path}: devices[1] (id 'd07'): field 'address_base': "
        "param 'v0': field 'address': register 0 is below address_base 1"
    )


def test_device_address_base_must_be_0_or_1(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\] \(id 'd'\): field 'address_base'"):
        _settings(tmp_path, [{"id": "d", "host": "h", "address_base": 2}])


# --- scale registers --------------------------------------------------------------------

T = 1_700_000_000.0  # a tick


def _sr(pid: str, address: int, exponent_at: int, **extra) -> dict:
    return {"id": pid, "address": address, "type": "int16", "scale_register": {"address": exponent_at}, **extra}


def test_scale_register_is_a_hidden_field_coalesced_with_its_neighbours() -> None:
    profile = _profile([_sr("p", 0, 3), _u16("q", 1)])

    (block,) = plan_reads(profile, ["p", "q"])

    assert (block.function, block.address, block.count) == (3, 0, 4)
    assert [(f.offset_words, f.hidden) for f in block.fields] == [(0, False), (1, False), (3, True)]
    assert block.visible_ids == ("p", "q")
    assert len(block.param_ids) == 3  # a failed read yields a row for the exponent too
    assert all(len(pid) <= 20 for pid in block.visible_ids)
    assert all(len(f.param_id) > 20 for f in block.fields if f.hidden)  # never a param id


def test_scale_register_far_away_gets_its_own_request_and_is_read_once_for_all_its_params() -> None:
    profile = _profile([_sr("i1", 0, 500), _sr("i2", 1, 500), _sr("i3", 2, 500)], max_gap=4)

    blocks = plan_reads(profile, ["i1", "i2", "i3"])

    assert [(b.address, b.count, len(b.fields)) for b in blocks] == [(0, 3, 3), (500, 1, 1)]
    assert blocks[1].fields[0].hidden


def test_scale_register_function_defaults_to_the_params_and_may_differ() -> None:
    profile = _profile([
        _sr("a", 0, 10, function=4),
        {"id": "b", "address": 1, "type": "int16", "scale_register": {"address": 10, "function": 3}},
    ], max_gap=0)

    blocks = plan_reads(profile, ["a", "b"])

    assert [(b.function, b.address, [f.hidden for f in b.fields]) for b in blocks] == [
        (3, 1, [False]), (3, 10, [True]), (4, 0, [False]), (4, 10, [True])
    ]


def test_without_scale_registers_there_is_no_finisher() -> None:
    profile = _profile([_u16("a", 0), _f32("b", 1)])

    assert finisher(plan_reads(profile, ["a", "b"])) is None


@pytest.mark.parametrize(
    ("raw", "exponent", "scale", "offset", "expected"),
    [
        pytest.param(0x04D2, 0x0000, 1.0, 0.0, 1234.0, id="exponent-0"),
        pytest.param(0x04D2, 0xFFFE, 1.0, 0.0, 12.34, id="exponent-minus-2"),
        pytest.param(0x04D2, 0x0003, 1.0, 0.0, 1234000.0, id="exponent-plus-3"),
        pytest.param(0xFB2E, 0xFFFF, 1.0, 0.0, -123.4, id="negative-raw-exponent-minus-1"),
        pytest.param(0x04D2, 0xFFFD, 1000.0, 5.0, 1239.0, id="then-scale-then-offset"),
    ],
)
def test_finisher_applies_ten_to_the_exponent_then_scale_and_offset(raw, exponent, scale, offset, expected) -> None:
    assert _finished(raw, exponent, scale, offset) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "exponent", "expected"),
    [
        pytest.param(23073, 0xFFFE, 230.73, id="23073e-2"),  # 23073 * 0.01 is 230.73000000000002
        pytest.param(1234, 0xFFFE, 12.34, id="1234e-2"),
        pytest.param(7, 0xFFFF, 0.7, id="7e-1"),
        pytest.param(4999, 0xFFFD, 4.999, id="4999e-3"),
        pytest.param(12345, 0xFFFC, 1.2345, id="12345e-4"),
        pytest.param(0x7FFF, 0xFFFE, 327.67, id="32767e-2"),
    ],
)
def test_negative_exponent_gives_exactly_the_decimal_value(raw, exponent, expected) -> None:
    assert _finished(raw, exponent) == expected  # exact: the nearest double to the decimal, as a meter shows it


def _finished(raw: int, exponent: int, scale: float = 1.0, offset: float = 0.0) -> float:
    profile = _profile([_sr("p", 0, 1, scale=scale, offset=offset)])
    (block,) = plan_reads(profile, ["p"])
    buffer = registers_to_bytes([raw, exponent])
    samples = []
    for planned in block.fields:
        value, code = planned.decode(buffer)
        samples.append(Sample("d", planned.param_id, T, value, 5.0, code))

    (stored,) = finisher([block])(samples)

    assert (stored.param_id, stored.code, stored.delay_ms) == ("p", Code.OK, 5.0)
    return stored.value


# --- through the poller: one path for registers, bits and scale registers -----------------


class _Clock:
    def now(self) -> float:
        return T + 0.05

    async def sleep_until(self, t_s: float) -> None:  # never used by poll()
        raise AssertionError


class _Link(ReadsInTurn):
    """Answers reads from a memory per function code; some (function, address) fail."""

    def __init__(self, memory: dict[int, dict[int, int]], failing: dict[tuple[int, int], Exception] | None = None):
        self.memory = memory
        self.failing = failing or {}
        self.reads: list[tuple[int, int, int]] = []

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> bytes | list[int]:
        self.reads.append((function, address, count))
        failure = self.failing.get((function, address))
        if failure is not None:
            raise failure
        words = [self.memory[function].get(a, 0) for a in range(address, address + count)]
        return registers_to_bytes(words) if function >= 3 else words  # registers come as their wire bytes


def _poll(profile: Profile, ids: list[str], link: _Link) -> list[Sample]:
    plan = DevicePlan(DeviceSettings(id="d", host="h"), profile, plan_reads(profile, ids))
    poller = Poller(plan, link, TickGrid(10), _Clock(), lambda samples: None)
    return asyncio.run(poller.poll(T))


def _values(samples: list[Sample]) -> dict[str, tuple[float | None, int]]:
    return {s.param_id: (s.value, s.code) for s in samples}


SUNSPEC_LIKE = [
    _sr("I_L1", 0, 3, unit="A"),
    _sr("I_L2", 1, 3, unit="A"),
    _sr("P", 40, 50, unit="W"),
    _u16("plain", 2),
]


def test_poller_applies_scale_registers_and_stores_no_exponent_rows() -> None:
    profile = _profile(SUNSPEC_LIKE, max_gap=4)
    link = _Link({3: {0: 1234, 1: 567, 2: 42, 3: 0xFFFE, 40: 25, 50: 2}})

    samples = _poll(profile, ["I_L1", "I_L2", "P", "plain"], link)

    assert sorted(_values(samples)) == ["I_L1", "I_L2", "P", "plain"]
    assert _values(samples)["I_L1"] == (pytest.approx(12.34), Code.OK)
    assert _values(samples)["I_L2"] == (pytest.approx(5.67), Code.OK)
    assert _values(samples)["P"] == (2500.0, Code.OK)
    assert _values(samples)["plain"] == (42, Code.OK)
    assert link.reads == [(3, 0, 4), (3, 40, 1), (3, 50, 1)]  # exponents coalesced, read in the same tick


def test_failed_exponent_read_gives_its_params_null_and_its_code() -> None:
    profile = _profile(SUNSPEC_LIKE, max_gap=4)
    link = _Link({3: {0: 1234, 1: 567, 2: 42, 3: 0xFFFE, 40: 25}}, {(3, 50): ExceptionResponse(0x02)})

    values = _values(_poll(profile, ["I_L1", "I_L2", "P", "plain"], link))

    assert values["P"] == (None, Code.ERR_REGISTER)
    assert values["I_L1"] == (pytest.approx(12.34), Code.OK)  # its exponent came with it


def test_failed_param_read_keeps_its_own_code_with_a_good_exponent() -> None:
    profile = _profile(SUNSPEC_LIKE, max_gap=4)
    link = _Link({3: {50: 2}}, {(3, 40): ExceptionResponse(0x0B)})

    values = _values(_poll(profile, ["P"], link))

    assert values == {"P": (None, Code.SERVER_OFF)}


def test_exponent_overflowing_a_float_is_value_nan() -> None:
    profile = _profile([_sr("p", 0, 1)])
    link = _Link({3: {0: 1, 1: 0x7FFF}})

    assert _values(_poll(profile, ["p"], link)) == {"p": (None, Code.VALUE_NAN)}


def test_poller_reads_coils_and_inputs_through_the_same_path_as_registers() -> None:
    profile = _profile([_bit("relay", 0), _bit("alarm", 2), _bit("door", 5, function=2), _u16("status", 0, bits="0-1")])
    link = _Link({1: {0: 1, 1: 1, 2: 0}, 2: {5: 1}, 3: {0: 0x0002}})

    samples = _poll(profile, ["relay", "alarm", "door", "status"], link)

    assert _values(samples) == {"relay": (1, 0), "alarm": (0, 0), "door": (1, 0), "status": (2, 0)}
    assert link.reads == [(1, 0, 3), (2, 5, 1), (3, 0, 1)]


def test_generic_profile_default_set_polls_every_feature() -> None:
    profile = load_profile("generic")
    words = {}
    for address, registers in {0: [0x4366, 0x8000, 1234], 4: [0xFFFF, 0xFFFE], 100: [0x419D, 0x6F34, 0x5400, 0x0000],
                               400: [0x00A8]}.items():
        words.update(zip(range(address, address + len(registers)), registers))
    link = _Link({2: {10: 1}, 3: words, 4: {300: 25, 309: 0xFFFF}})

    values = _values(_poll(profile, profile.default_ids, link))

    assert values == {
        "U_L1": (230.5, 0), "I_L1": (pytest.approx(12.34), 0), "P_TOT": (-2, 0), "E_IMP": (123456789.0, 0),
        "P_SF": (pytest.approx(2.5), 0), "STATUS": (0xA8, 0), "ALARM": (1, 0), "DOOR": (1, 0),
    }
