"""Fields -> coalesced read requests, checked as data."""

from __future__ import annotations

import struct

import pytest

from susee.codec import registers_to_bytes
from susee.planner import plan_reads
from susee.profiles import MODBUS_MAX_REGISTERS, Profile, load_profile
from susee.quality import Code

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
