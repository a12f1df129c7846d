"""``susee profile show`` and ``susee profile check``, through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from susee.cli import main

GOOD = """\
name: mymeter
description: my meter
function: 4
address_base: 1
max_gap: 2
default_params: [U, P]
params:
  - {id: U, address: 1, unit: V, acronym: U, descr_eng: Voltage}
  - {id: P, address: 3, type: int16, scale_register: {address: 9}, unit: W, acronym: P, descr_eng: Power}
  - {id: I, address: 5, type: uint16, scale: 0.01, unit: A, acronym: I, descr_eng: Current}
  - {id: ALM, address: 6, type: uint16, bits: "4-7", order: BADC, unit: na, acronym: ALM, descr_eng: Alarms}
  - {id: DOOR, address: 1, function: 2, unit: na, acronym: DOOR, descr_eng: Door open}
"""


def _table_row(out: str, param_id: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [param_id])


def test_profile_show_pac3200_prints_header_table_and_the_two_default_requests(capsys) -> None:
    assert main(["profile", "show", "pac3200"]) == 0
    out = capsys.readouterr().out

    assert out.startswith("profile pac3200: Siemens SENTRON PAC3200 power meter\n")
    assert "defaults: function 3, order ABCD, address_base 0, max_registers 125" in out
    assert "45 params; default set: 104, 107, 132, 133, 134, 135, 222, 226" in out
    header = out.splitlines()[5].split()
    assert header == ["id", "address", "fc", "type", "order", "bits", "scale/offset", "unit", "acronym", "description"]
    assert _table_row(out, "104") == ["104", "7", "3", "float32", "ABCD", "-", "-", "V", "UL1_L2", "Voltage", "UL1_L2"]
    assert _table_row(out, "222")[:8] == ["222", "801", "3", "float64", "ABCD", "-", "-", "Wh"]
    assert "default set: 8 params in 2 request(s) (wire addresses):" in out
    assert "  fc3 7+64 registers: 104 107 132 133 134 135\n  fc3 801+20 registers: 222 226\n" in out


@pytest.mark.parametrize("name", ["generic", "sdm630", "umg604"])
def test_profile_show_prints_every_shipped_profile(capsys, name) -> None:
    assert main(["profile", "show", name]) == 0
    out = capsys.readouterr().out

    assert out.startswith(f"profile {name}: ")
    assert "source: " in out
    assert "request(s) (wire addresses):" in out


def test_profile_show_of_a_file_shows_features_in_the_columns(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mymeter.yaml"
    path.write_text(GOOD, encoding="utf-8")

    assert main(["profile", "show", str(path)]) == 0
    out = capsys.readouterr().out

    assert _table_row(out, "P")[:7] == ["P", "3", "4", "int16", "ABCD", "-", "x10^[9]"]
    assert _table_row(out, "I")[:7] == ["I", "5", "4", "uint16", "ABCD", "-", "x0.01"]
    assert _table_row(out, "ALM")[:6] == ["ALM", "6", "4", "uint16", "BADC", "4-7"]
    assert _table_row(out, "DOOR")[:5] == ["DOOR", "1", "2", "bit", "-"]
    # address_base 1: register 3 is read at 2, its exponent (register 9) at 8, hidden
    assert "  fc4 0+3 registers: U P\n  fc4 8+1 registers: 10^[8]\n" in out


def test_profile_check_prints_ok_and_the_planned_requests(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mymeter.yaml"
    path.write_text(GOOD, encoding="utf-8")

    assert main(["profile", "check", str(path)]) == 0
    out = capsys.readouterr().out

    assert out == (
        f"OK: {path}: profile 'mymeter', 5 params\n"
        "default set: 2 params in 2 request(s) (wire addresses):\n"
        "  fc4 0+3 registers: U P\n"
        "  fc4 8+1 registers: 10^[8]\n"
    )


def test_profile_check_of_a_bad_file_names_file_param_and_field_and_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(GOOD.replace("type: int16", "type: float33"), encoding="utf-8")

    assert main(["profile", "check", str(path)]) == 2
    captured = capsys.readouterr()

    assert captured.out == ""
    assert captured.err.startswith(
        f"profile error: {path}: params[1] (id 'P'): field 'type': unknown type 'float33'; expected one of"
    )


def test_profile_check_of_a_missing_file_exits_2_listing_builtin_names(tmp_path: Path, capsys) -> None:
    assert main(["profile", "check", str(tmp_path / "nope.yaml")]) == 2

    assert "not found" in capsys.readouterr().err


def test_profile_without_an_action_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["profile"])

    assert raised.value.code == 2


def test_profile_check_reports_every_error_of_the_file_at_once(tmp_path: Path, capsys) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: broken\ndefault_params: [U, X]\nparams:\n"
        "  - {id: U, address: 1}\n"
        "  - {id: U, address: 3}\n"
        "  - {id: E, address: 65534, type: float64}\n"
        "  - {id: B, address: 4, type: bit, bits: 3}\n",
        encoding="utf-8",
    )

    assert main(["profile", "check", str(path)]) == 2
    err = capsys.readouterr().err

    for problem in (
        "params[1] (id 'U'): field 'id': duplicate of params[0]",
        "params[2] (id 'E'): field 'address': register 65534 + 4 words exceeds 65535",
        "params[3] (id 'B'): field 'function': type bit is read with function 1",
        "field 'bits': a bit param is already one bit",
    ):
        assert problem in err, err


def test_profile_check_of_a_yaml_syntax_error_names_the_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nparams: [\n", encoding="utf-8")

    assert main(["profile", "check", str(path)]) == 2
    err = capsys.readouterr().err

    assert f'in "{path}", line 3' in err and "<unicode string>" not in err
