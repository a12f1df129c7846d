"""The MariaDB sink's binary rows: the same values ``sample_rows`` prepares, and ids that are never hostile.

The sink sends rows as parameters of prepared statements in MariaDB's
binary protocol (``sinks.prepared``), so nothing is ever interpolated into
SQL; the rows are decoded back here, byte by byte, and compared with what
the SQLite sink stores for the same samples (``sample_rows``). Ids that
could not come from a validated site are refused at every layer that admits
one. The round trip through a real server is in
tests/integration/test_mariadb_sink.py and test_sink_contract.py.
"""

from __future__ import annotations

import math
import struct

import pytest

from susee.config import ConfigError, DeviceSettings, load_settings
from susee.profiles import ProfileError, load_profile
from susee.quality import Code
from susee.sample import Sample
from susee.sinks import format_tick, sample_rows
from susee.sinks import prepared
from susee.sinks.prepared import (
    STATEMENT_ROWS,
    EncodedRows,
    RowEncoder,
    UnsafeIdentifier,
    encoded_id,
    newest_rows,
    statement_sizes,
)

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC

HOSTILE_IDS = [
    pytest.param("d'01", id="single-quote"),
    pytest.param("d01'); DROP TABLE x; --", id="statement-breakout"),
    pytest.param('d"01', id="double-quote"),
    pytest.param("d\\01", id="backslash"),
    pytest.param("d\\", id="trailing-backslash-eats-the-closing-quote"),
    pytest.param("d 01", id="space"),
    pytest.param("d01\n", id="trailing-newline-that-dollar-lets-through"),
    pytest.param("d\r01", id="carriage-return"),
    pytest.param("d\x0001", id="nul"),
    pytest.param("d\x1a01", id="ctrl-z"),
    pytest.param("d\t01", id="tab"),
    pytest.param("", id="empty"),
    pytest.param("x" * 21, id="21-chars"),
    pytest.param("d`01", id="backtick"),
    pytest.param("d%s", id="percent"),
    pytest.param("dé01", id="non-ascii-letter"),
    pytest.param("d\u066101", id="non-ascii-digit"),
    pytest.param("d\u02bc01", id="modifier-apostrophe"),
    pytest.param("d\uff0701", id="fullwidth-apostrophe"),
]

GOOD_IDS = ["d01", "104", "P_TOT", "a.b:c-d_e", "x" * 20, "0", "E_IMP_CNT"]


# --- ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE_IDS)
def test_encoded_id_refuses_anything_a_validated_site_cannot_hold(text):
    with pytest.raises(UnsafeIdentifier):
        encoded_id(text)


@pytest.mark.parametrize("not_text", [104, None, b"d01", 1.5])
def test_encoded_id_refuses_what_is_not_a_str(not_text):
    with pytest.raises(UnsafeIdentifier):
        encoded_id(not_text)


@pytest.mark.parametrize("text", GOOD_IDS)
def test_encoded_id_is_the_protocols_length_prefixed_string(text):
    assert encoded_id(text) == bytes([len(text)]) + text.encode("ascii")


def test_the_encoder_checks_each_distinct_id_once_and_refuses_every_time(monkeypatch):
    checked: list[str] = []
    original = encoded_id

    def counting(text):
        checked.append(text)
        return original(text)

    monkeypatch.setattr(prepared, "encoded_id", counting)
    encoder = RowEncoder()
    for _ in range(3):
        encoder.encode([Sample(d, "104", TICK, 1.0, 1.0, 0) for d in ("d01", "d02", "d01")], {})
        with pytest.raises(UnsafeIdentifier):
            encoder.encode([Sample("d'01", "104", TICK, 1.0, 1.0, 0)], {})
    assert checked == ["d01", "104", "d02", "104", "d'01", "d'01", "d'01"]


@pytest.mark.parametrize("text", HOSTILE_IDS)
def test_config_refuses_a_hostile_device_id(text):
    with pytest.raises(ValueError, match="device id must be"):
        DeviceSettings(id=text, host="127.0.0.1")


def test_a_site_file_with_a_hostile_device_id_names_file_device_and_field(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text('database: {url: "sqlite:///x.db"}\ndevices:\n  - {id: "d\'01", host: 127.0.0.1}\n')

    with pytest.raises(ConfigError) as error:
        load_settings(site)

    assert f"{site}: devices[0] (id \"d'01\"): field 'id': device id must be" in str(error.value)


@pytest.mark.parametrize("text", HOSTILE_IDS)
def test_profile_refuses_a_hostile_param_id_naming_file_param_and_field(tmp_path, text):
    profile = tmp_path / "meter.yaml"
    # JSON is YAML: json-style escapes carry every hostile character into the file intact.
    quoted = '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'
    profile.write_text(f"name: meter\nparams:\n  - {{id: {quoted}, address: 0}}\n", encoding="utf-8")

    with pytest.raises(ProfileError) as error:
        load_profile(str(profile))

    message = str(error.value)
    assert message.startswith(f"{profile}: params[0] (id {text!r}): field 'id': "), message
    assert "letters, digits" in message or "at most 20" in message or "at least 1" in message, message


@pytest.mark.parametrize("name", ["pac3200", "sdm630", "umg604", "generic"])
def test_every_shipped_profile_has_param_ids_the_sink_takes(name):
    for param in load_profile(name).params:
        assert encoded_id(param.id)


# --- decoding what the encoder wrote -----------------------------------------------------


def decode(encoded: EncodedRows) -> list[tuple]:
    """Rows back as (idDevice, Date text, idParam, Value, Delay, Code), the order of ``sample_rows``."""
    nulls = set(encoded.null_rows)
    rows = []
    for index, row in enumerate(encoded.rows):
        pos = 0
        ids = []
        for _ in range(2):
            length = row[pos]
            ids.append(row[pos + 1 : pos + 1 + length].decode("ascii"))
            pos += 1 + length
        size, year, month, day, hour, minute, second, micros = prepared.DATETIME.unpack_from(row, pos)
        assert size == 11
        pos += prepared.DATETIME.size
        date = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}.{micros:06d}"
        delay, code = prepared.DELAY_CODE.unpack_from(row, pos)
        pos += prepared.DELAY_CODE.size
        value = None
        if index not in nulls:
            (value,) = prepared.VALUE.unpack_from(row, pos)
            pos += prepared.VALUE.size
        assert pos == len(row), "nothing after the last parameter"
        rows.append((ids[0], date, ids[1], value, delay, code))
    return rows


def one_row(sample: Sample) -> tuple:
    (row,) = decode(RowEncoder().encode([sample], {}))
    return row


# --- numbers and dates ----------------------------------------------------------------

AWKWARD_FLOATS = [
    0.1, 1e-300, 1.7976931348623157e308, -1.7976931348623157e308, -0.0, 0.0, 123456789.123456789,
    5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 4.9406564584124654e-320,  # denormals and their edge
    1e16, 1e22, 1e-7, 123.0, -1.5, 1 / 3, 2.0**53 + 2, 9007199254740993.0, 1234567890.123, 395.19, 178.778,
    struct.unpack(">f", bytes.fromhex("3f800001"))[0],  # a float32 reading widened to a double
]


@pytest.mark.parametrize("value", AWKWARD_FLOATS, ids=repr)
def test_a_float_is_its_own_8_bytes_so_the_server_stores_the_very_float(value):
    stored = one_row(Sample("d01", "104", TICK, value, 1.0, 0))[3]

    assert stored == value and math.copysign(1, stored) == math.copysign(1, value)


@pytest.mark.parametrize("value", [0, 65535, -32768, 2**64 - 1, 2**53 + 1, True, False, Code.SERVER_OFF], ids=repr)
def test_ints_and_bools_are_stored_as_the_double_the_text_literal_became(value):
    # The server turned the integer literal into the nearest DOUBLE: float() is that double.
    assert one_row(Sample("d01", "104", TICK, value, 1.0, 0))[3] == float(value)


def test_an_int_flag_code_is_its_number():
    assert one_row(Sample("d01", "104", TICK, None, 1.0, Code.SERVER_OFF | Code.VALUE_NAN))[5] == 20


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_becomes_null_with_the_value_nan_code_and_the_other_codes_kept(value):
    row = one_row(Sample("d01", "134", TICK, value, 2.0, int(Code.SERVER_OFF)))

    assert (row[3], row[5]) == (None, int(Code.SERVER_OFF | Code.VALUE_NAN))


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_a_non_finite_delay_is_refused(delay):
    with pytest.raises(ValueError):
        RowEncoder().encode([Sample("d01", "104", TICK, 1.0, delay, 0)], {})


@pytest.mark.parametrize("value", ["1", "1; DROP TABLE x", b"1", [1], object()], ids=repr)
def test_what_is_not_a_number_is_refused(value):
    with pytest.raises(TypeError):
        RowEncoder().encode([Sample("d01", "104", TICK, value, 1.0, 0)], {})


@pytest.mark.parametrize("tick_s", [TICK, TICK + 0.25, TICK + 0.000001, 0.0, 4102444799.999999])
def test_the_date_is_the_instant_format_tick_writes(tick_s):
    assert one_row(Sample("d01", "104", tick_s, 1.0, 1.0, 0))[1] == format_tick(tick_s)


# --- rows: the same values as the SQLite sink stores ---------------------------------------

MIXED_BATCH = [
    Sample("d01", "104", TICK, 230.1, 12.5, 0),
    Sample("d01", "107", TICK, 1234567890.123, 12.5, 0),
    Sample("d01", "222", TICK, 65535, 20.25, 0),  # an unscaled uint16: an int
    Sample("d01", "133", TICK, math.nan, 20.25, 0),
    Sample("d01", "134", TICK, -math.inf, 20.25, int(Code.SERVER_OFF)),
    Sample("d02", "104", TICK, None, 1000.0, int(Code.ERR_CONNECTION)),
    Sample("d02", "107", TICK, None, 1000.0, Code.ERR_CONNECTION),  # an IntFlag code
    Sample("d01", "104", TICK + 1, 5e-324, 3, 0),  # an int Delay
    Sample("d01", "104", TICK - 1, 1.0, 3.0, 0),  # older than the row above: not Last
    Sample("d03", "104", TICK + 0.25, -0.0, 0.0, 0),
    Sample("d03", "104", TICK + 0.25, 7.0, 0.5, 0),  # the same key and tick again: the later one is Last
    Sample("d00", "100", TICK, None, 1.5, int(Code.DRIVER_NOT_FOUND)),
]


def as_stored(rows: list[tuple]) -> list[tuple]:
    """What the server keeps: Value and Code as they are, Delay as a FLOAT column rounds it, NaN as NULL."""
    return [(d, date, p, v, struct.unpack("<f", struct.pack("<f", delay))[0], int(code))
            for d, date, p, v, delay, code in rows]


def test_rows_hold_exactly_what_sample_rows_prepares():
    raw, last = sample_rows(MIXED_BATCH)
    newest: dict = {}

    rows = decode(RowEncoder().encode(MIXED_BATCH, newest))

    assert as_stored(rows) == as_stored(raw)
    assert sorted(as_stored(decode(newest_rows(newest)))) == sorted(as_stored(last))


def test_rows_encoded_over_several_calls_keep_the_newest_across_them():
    encoder = RowEncoder()
    newest: dict = {}
    rows = decode(encoder.encode(MIXED_BATCH[:5], newest)) + decode(encoder.encode(MIXED_BATCH[5:], newest))

    raw, last = sample_rows(MIXED_BATCH)
    assert as_stored(rows) == as_stored(raw)
    assert sorted(as_stored(decode(newest_rows(newest)))) == sorted(as_stored(last))


def test_last_rows_are_sorted_by_key_whatever_the_batch_order():
    newest: dict = {}
    RowEncoder().encode([Sample(d, p, TICK, 1.0, 1.0, 0) for d in ("d2", "d1") for p in ("107", "104")], newest)

    assert [(d, p) for d, _, p, *_ in decode(newest_rows(newest))] == [("d1", "104"), ("d1", "107"), ("d2", "104"),
                                                                      ("d2", "107")]


@pytest.mark.parametrize("sample", [
    Sample("d'01", "104", TICK, 1.0, 1.0, 0),
    Sample("d01", "104'--", TICK, 1.0, 1.0, 0),
    Sample("d01\n", "104", TICK, 1.0, 1.0, 0),
], ids=["device", "param", "newline"])
def test_a_hostile_id_that_reaches_the_encoder_anyway_is_refused(sample):
    with pytest.raises(UnsafeIdentifier):
        RowEncoder().encode([Sample("d01", "104", TICK, 1.0, 1.0, 0), sample], {})


# --- statements -----------------------------------------------------------------------------

@pytest.mark.parametrize(("rows", "sizes"), [
    (0, []), (1, [1]), (3, [2, 1]), (1023, [512, 256, 128, 64, 32, 16, 8, 4, 2, 1]), (1024, [1024]),
    (1025, [1024, 1]), (2500, [1024, 1024, 256, 128, 64, 4]),
])
def test_a_batch_is_cut_into_full_statements_and_the_binary_digits_of_the_rest(rows, sizes):
    assert list(statement_sizes(rows)) == sizes
    assert STATEMENT_ROWS == 1024
