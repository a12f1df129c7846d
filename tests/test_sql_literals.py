"""The MariaDB sink's hand-written SQL literals: safe for every input, and the same literals the driver wrote.

The sink used to hand each value to PyMySQL's escaping; it now writes the
literals itself. Two things make that safe to swap: ids that could break out
of a string literal never get through (tables of hostile ids, at every layer
that admits one), and the text is the very text the driver would have sent
(checked value by value, and row by row against the old ``sample_rows`` +
escape path), so the server stores the same values. The round trip through a
real server is in tests/integration/test_mariadb_sink.py.
"""

from __future__ import annotations

import math
import struct

import pytest
from pymysql.converters import escape_item

from susee.config import ConfigError, DeviceSettings, load_settings
from susee.profiles import ProfileError, load_profile
from susee.quality import Code
from susee.sample import Sample
from susee.sinks import format_tick, sample_rows
from susee.sinks.literals import (
    IdLiterals,
    RowLiterals,
    UnsafeIdentifier,
    newest_rows,
    number,
    quoted_date,
    quoted_id,
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
def test_quoted_id_refuses_anything_that_could_leave_or_bend_a_string_literal(text):
    with pytest.raises(UnsafeIdentifier):
        quoted_id(text)
    with pytest.raises(UnsafeIdentifier):
        IdLiterals()(text)


@pytest.mark.parametrize("not_text", [104, None, b"d01", 1.5])
def test_quoted_id_refuses_what_is_not_a_str(not_text):
    with pytest.raises(UnsafeIdentifier):
        quoted_id(not_text)


@pytest.mark.parametrize("text", GOOD_IDS)
def test_quoted_id_quotes_a_valid_id_as_the_driver_would(text):
    assert quoted_id(text) == IdLiterals()(text) == escape_item(text, "utf8mb4") == f"'{text}'"


def test_id_literals_check_each_distinct_id_once_and_refuse_every_time(monkeypatch):
    checked: list[str] = []
    original = quoted_id

    def counting(text):
        checked.append(text)
        return original(text)

    monkeypatch.setattr("susee.sinks.literals.quoted_id", counting)
    ids = IdLiterals()
    for _ in range(3):
        assert [ids(t) for t in ("d01", "d02", "d01")] == ["'d01'", "'d02'", "'d01'"]
        with pytest.raises(UnsafeIdentifier):
            ids("d'01")
    assert checked == ["d01", "d02", "d'01", "d'01", "d'01"]


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
def test_every_shipped_profile_has_sql_safe_param_ids(name):
    for param in load_profile(name).params:
        assert quoted_id(param.id) == f"'{param.id}'"


# --- numbers and dates ----------------------------------------------------------------

AWKWARD_FLOATS = [
    0.1, 1e-300, 1.7976931348623157e308, -1.7976931348623157e308, -0.0, 0.0, 123456789.123456789,
    5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 4.9406564584124654e-320,  # denormals and their edge
    1e16, 1e22, 1e-7, 123.0, -1.5, 1 / 3, 2.0**53 + 2, 9007199254740993.0, 1234567890.123, 395.19, 178.778,
    struct.unpack(">f", bytes.fromhex("3f800001"))[0],  # a float32 reading widened to a double
]


@pytest.mark.parametrize("value", AWKWARD_FLOATS, ids=repr)
def test_a_float_literal_is_the_driver_literal_and_reads_back_as_the_same_float(value):
    text = number(value)

    assert text == escape_item(value, "utf8mb4")
    assert "e" in text, "an approximate-value literal: the server parses it as a DOUBLE"
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (65535, "65535"), (-32768, "-32768"), (2**64 - 1, "18446744073709551615"), (None, "NULL"),
    (True, "1"), (False, "0"),
])
def test_ints_bools_and_none_are_the_driver_literals(value, text):
    assert number(value) == text == escape_item(value, "utf8mb4")


def test_an_int_flag_code_is_its_number():
    assert number(Code.SERVER_OFF | Code.VALUE_NAN) == "20"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_float_is_refused(value):
    with pytest.raises(ValueError):
        number(value)


@pytest.mark.parametrize("value", ["1", "1; DROP TABLE x", b"1", [1], object()], ids=repr)
def test_what_is_not_a_number_is_refused(value):
    with pytest.raises(TypeError):
        number(value)


@pytest.mark.parametrize("tick_s", [TICK, TICK + 0.25, TICK + 0.000001, 0.0, 4102444799.999999])
def test_quoted_date_is_the_driver_literal_of_format_tick(tick_s):
    text = format_tick(tick_s)
    assert quoted_date(text) == escape_item(text, "utf8mb4") == f"'{text}'"


@pytest.mark.parametrize("text", ["2021-02-18 10:30:00.000000'", "2021-02-18 10:30:00", "2021-02-18 10:30:00.00000x",
                                  "2021-02-18 10:30:00.000000\n", "'; --", ""])
def test_quoted_date_refuses_what_format_tick_never_writes(text):
    with pytest.raises(ValueError):
        quoted_date(text)


# --- rows: the same values as the parameterised path --------------------------------------


def driver_row(row: tuple) -> str:
    """What the old path sent for one ``sample_rows`` row, in RowLiterals.COLUMNS order."""
    device, date, param, value, delay, code = row
    return "(" + ",".join(escape_item(v, "utf8mb4") for v in (device, param, date, delay, code, value)) + ")"


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


def test_rows_are_exactly_the_literals_the_driver_wrote_for_sample_rows():
    raw, last = sample_rows(MIXED_BATCH)
    newest: dict = {}

    rows = RowLiterals().raw(MIXED_BATCH, newest)

    assert rows == [driver_row(row) for row in raw]
    assert sorted(newest_rows(newest)) == sorted(driver_row(row) for row in last)


def test_rows_split_over_several_calls_keep_the_newest_across_them():
    builder = RowLiterals()
    newest: dict = {}
    rows = builder.raw(MIXED_BATCH[:5], newest) + builder.raw(MIXED_BATCH[5:], newest)

    raw, last = sample_rows(MIXED_BATCH)
    assert rows == [driver_row(row) for row in raw]
    assert sorted(newest_rows(newest)) == sorted(driver_row(row) for row in last)


def test_a_nan_becomes_null_with_the_value_nan_code_and_the_other_codes_kept():
    (row,) = RowLiterals().raw([Sample("d01", "134", TICK, math.nan, 2.0, int(Code.SERVER_OFF))], {})
    assert row == f"('d01','134','{format_tick(TICK)}',2.0e0,{int(Code.SERVER_OFF | Code.VALUE_NAN)},NULL)"


def test_last_rows_are_sorted_by_key_whatever_the_batch_order():
    newest: dict = {}
    RowLiterals().raw([Sample(d, p, TICK, 1.0, 1.0, 0) for d in ("d2", "d1") for p in ("107", "104")], newest)
    assert [row[:12] for row in newest_rows(newest)] == ["('d1','104',", "('d1','107',", "('d2','104',",
                                                         "('d2','107',"]


@pytest.mark.parametrize("sample", [
    Sample("d'01", "104", TICK, 1.0, 1.0, 0),
    Sample("d01", "104'--", TICK, 1.0, 1.0, 0),
    Sample("d01\n", "104", TICK, 1.0, 1.0, 0),
], ids=["device", "param", "newline"])
def test_a_hostile_id_that_reaches_the_builder_anyway_is_refused(sample):
    with pytest.raises(UnsafeIdentifier):
        RowLiterals().raw([Sample("d01", "104", TICK, 1.0, 1.0, 0), sample], {})


def test_a_value_that_is_not_a_number_is_refused():
    with pytest.raises(TypeError):
        RowLiterals().raw([Sample("d01", "104", TICK, "1); DROP TABLE x; --", 1.0, 0)], {})
