"""``susee import-legacy``: the original etl_data.py, read as data, into a site YAML."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from susee.cli import main
from susee.commands import load_site
from susee.config import load_settings
from susee.legacy import PLACEHOLDER_DATABASE_URL, convert

ORIGINAL = Path(__file__).parent / "data" / "etl_data.py"


def _import(tmp_path: Path, source: str, capsys) -> tuple[int, str, str]:
    path = tmp_path / "etl_data.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    code = main(["import-legacy", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _line_of(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def test_original_example_converts_to_a_site_that_loads_with_the_seed_readme_values(tmp_path, capsys) -> None:
    assert main(["import-legacy", str(ORIGINAL)]) == 0
    captured = capsys.readouterr()
    site = tmp_path / "site.yaml"
    site.write_text(captured.out, encoding="utf-8")

    settings = load_settings(site)

    assert (settings.job_id, settings.sample_time, settings.sample_shift) == ("000", 10, 0)
    assert settings.database.url == PLACEHOLDER_DATABASE_URL
    d00, d01 = settings.devices
    assert (d00.id, d00.profile, d00.host, d00.port, d00.unit, d00.timeout, d00.enabled) == (
        "d00", "pac3200", "192.168.1.100", 502, 1, 1.0, True
    )
    assert (d01.id, d01.host, d01.port, d01.unit) == ("d01", "192.168.1.101", 502, 1)
    assert "2 device(s) converted" in captured.err


def test_original_example_passes_the_checks_of_susee_check_before_any_connection(tmp_path, capsys) -> None:
    main(["import-legacy", str(ORIGINAL)])
    site = tmp_path / "site.yaml"
    site.write_text(capsys.readouterr().out, encoding="utf-8")

    plans = load_site(str(site)).plans  # what `susee check` validates and plans first

    assert [(p.id, p.profile.name, len(p.blocks)) for p in plans] == [("d00", "pac3200", 2), ("d01", "pac3200", 2)]
    assert plans[0].param_ids == ["104", "107", "132", "133", "134", "135", "222", "226"]


def test_original_example_reports_its_sampling_options_that_have_no_equivalent(capsys) -> None:
    main(["import-legacy", str(ORIGINAL)])
    captured = capsys.readouterr()
    line = _line_of(ORIGINAL, "'num_try' : 3")

    assert f"{ORIGINAL}:{line}: sample_params['num_try'] = 3: not converted" in captured.err
    for key in ("sampleType", "waitTime", "utc_time", "open_close_conn"):
        assert f"sample_params[{key!r}]" in captured.err
        assert f"# not converted: sample_params[{key!r}]" in captured.out


def test_the_file_is_never_executed(tmp_path, capsys) -> None:
    marker = tmp_path / "executed"
    code, out, err = _import(tmp_path, f"""\
        import os
        open({str(marker)!r}, "w").write("ran")
        os.system("touch {marker}")
        raise SystemExit(3)
        idDevices_pack = {{}}
        idDevices_pack[0] = {{'typeDev': 'P32', 'idDev': 'd00', 'method': 'tcp', 'ipAddr_COM': '10.0.0.1',
                              'idAddr': 2, 'Port': 502, 'timeout': 2, 'enable': 1}}
        sample_params = {{'sampleTime': 60, 'sampleShift': 30}}
        """, capsys)

    assert code == 0
    assert not marker.exists()
    site = yaml.safe_load(out)
    assert (site["sample_time"], site["sample_shift"]) == (60, 30)
    assert site["devices"] == [
        {"id": "d00", "profile": "pac3200", "host": "10.0.0.1", "port": 502, "unit": 2, "timeout": 2, "enabled": True}
    ]


def test_unknown_keys_are_reported_with_device_and_line_and_kept_as_comments(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        idDevices_pack = {}
        idDevices_pack[0] = {
            'typeDev': 'P32',
            'idDev': 'd00',
            'method': 'tcp',
            'ipAddr_COM': '192.168.1.100',
            'Function': 'rr',
            'colour': 'red',
        }
        """, capsys)
    path = tmp_path / "etl_data.py"

    assert code == 0
    assert f"{path}:8: idDevices_pack[0] (idDev 'd00'): key 'colour' = 'red' not converted (unknown key)" in err
    assert f"{path}:7: idDevices_pack[0] (idDev 'd00'): key 'Function' = 'rr' not converted (the profile sets the function code" in err
    assert "    # not converted: colour: 'red' (unknown key)\n" in out
    assert yaml.safe_load(out)["devices"][0] == {"id": "d00", "profile": "pac3200", "host": "192.168.1.100"}


def test_non_literal_values_are_skipped_with_their_line(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        options_ = {'on': True}
        base = 5
        sample_params = {'sampleTime': base * 2, 'sampleShift': 0}
        idDevices_pack = {}
        idDevices_pack[0] = {'typeDev': 'P32', 'idDev': 'd00', 'method': 'tcp', 'ipAddr_COM': 'h',
                             'enable': options_['on'], 'timeout': 1}
        idDevices_pack[1] = make_device()
        """, capsys)
    path = tmp_path / "etl_data.py"

    assert code == 0
    assert f"{path}:3: sample_params['sampleTime'] = base * 2: not a literal, skipped" in err
    assert f"{path}:6: idDevices_pack[0]['enable'] = options_['on']: not a literal, skipped" in err
    assert f"{path}:7: idDevices_pack[1] = make_device(): not a literal, skipped" in err
    site = yaml.safe_load(out)
    assert site["sample_time"] == 10  # the original's default
    assert site["devices"] == [{"id": "d00", "profile": "pac3200", "host": "h", "timeout": 1}]


def test_rtu_devices_get_a_serial_section(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        idDevices_pack = {
            0: {'typeDev': 'P32', 'idDev': 'r01', 'method': 'rtu', 'ipAddr_COM': '/dev/ttyUSB0',
                'baudrate': 19200, 'parity': 'E', 'StopBits': 1, 'idAddr': 7, 'timeout': 0.5, 'enable': 1},
            1: {'typeDev': 'P32', 'idDev': 'r02', 'method': 'RTU', 'ipAddr_COM': 'COM3', 'idAddr': 8, 'Port': '502'},
        }
        """, capsys)

    assert code == 0
    assert "(idDev 'r02'): key 'Port' = '502' not converted (a serial device has no TCP port)" in err
    assert yaml.safe_load(out)["devices"] == [
        {"id": "r01", "profile": "pac3200", "serial": {"port": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E",
                                                        "stopbits": 1},
         "unit": 7, "timeout": 0.5, "enabled": True},
        {"id": "r02", "profile": "pac3200", "serial": {"port": "COM3"}, "unit": 8},
    ]


def test_assignments_apply_in_file_order_like_python_would(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        sample_params = {'sampleTime': 10}
        sample_params['sampleTime'] = 60
        idDevices_pack = {0: {'idDev': 'old', 'method': 'tcp', 'ipAddr_COM': 'h'}}
        idDevices_pack = {}
        idDevices_pack[1] = {'typeDev': 'P32', 'idDev': 'b', 'method': 'tcp', 'ipAddr_COM': 'h2', 'Port': '1502'}
        idDevices_pack[0] = {'typeDev': 'P32', 'idDev': 'a', 'method': 'tcp', 'ipAddr_COM': 'h1', 'enable': 1}
        idDevices_pack[0]['enable'] = 0
        job_id = '007'
        """, capsys)

    site = yaml.safe_load(out)
    assert (code, site["job_id"], site["sample_time"]) == (0, "007", 60)
    devices = [(d["id"], d.get("port"), d.get("enabled")) for d in site["devices"]]
    assert devices == [("a", None, False), ("b", 1502, None)]


@pytest.mark.parametrize(
    ("enable", "expected"),
    [("1", True), ("0", False), (1, True), (0, False), (True, True), (False, False), ("'1'", True), ("'0'", False)],
)
def test_enable_becomes_a_boolean(enable, expected) -> None:
    text = f"idDevices_pack = {{0: {{'idDev': 'd', 'method': 'tcp', 'ipAddr_COM': 'h', 'enable': {enable}}}}}\n"

    assert yaml.safe_load(convert(text).yaml_text)["devices"][0]["enabled"] is expected


def test_unknown_type_keeps_the_device_with_a_profile_file_to_write(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        idDevices_pack = {0: {'typeDev': 'SDM630', 'idDev': 'm1', 'method': 'tcp', 'ipAddr_COM': 'h'}}
        """, capsys)

    assert code == 0
    assert yaml.safe_load(out)["devices"][0]["profile"] == "sdm630.yaml"
    assert "typeDev 'SDM630' has no built-in profile" in err


def test_device_with_unknown_method_is_written_commented_out(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        idDevices_pack = {0: {'typeDev': 'P32', 'idDev': 'x1', 'method': 'udp', 'ipAddr_COM': 'h'}}
        """, capsys)

    assert code == 0
    assert yaml.safe_load(out)["devices"] is None
    assert "  # - id: \"x1\"" in out
    assert "method 'udp' is neither tcp nor rtu" in err


def test_file_without_devices_gives_an_empty_device_list(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, "sample_params = {'sampleTime': 15}\n", capsys)

    assert (code, yaml.safe_load(out)["devices"], yaml.safe_load(out)["sample_time"]) == (0, [], 15)
    assert "no idDevices_pack entries found" in err


def test_syntax_error_exits_2_naming_file_and_line(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, "idDevices_pack = {\n  0: {'idDev': 'd'\n", capsys)

    assert (code, out) == (2, "")
    assert f"{tmp_path / 'etl_data.py'}:" in err and "not valid Python" in err


def test_missing_file_exits_2(tmp_path, capsys) -> None:
    assert main(["import-legacy", str(tmp_path / "nope.py")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_rtu_and_tcp_devices_together_load_as_a_site(tmp_path, capsys) -> None:
    code, out, err = _import(tmp_path, """\
        sample_params = {'sampleTime': 15, 'sampleShift': 5}
        idDevices_pack = {}
        idDevices_pack[0] = {'typeDev': 'P32', 'idDev': 'd00', 'method': 'tcp', 'ipAddr_COM': '192.168.1.100',
                             'idAddr': 1, 'Port': '502', 'timeout': 1, 'enable': 1}
        idDevices_pack[1] = {'typeDev': 'P32', 'idDev': 'r01', 'method': 'rtu', 'ipAddr_COM': '/dev/ttyUSB0',
                             'baudrate': 9600, 'parity': 'E', 'StopBits': 1, 'idAddr': 3, 'timeout': 1, 'enable': 0}
        """, capsys)
    site = tmp_path / "site.yaml"
    site.write_text(out, encoding="utf-8")

    settings = load_settings(site)

    assert (settings.sample_time, settings.sample_shift) == (15, 5)
    tcp, rtu = settings.devices
    assert (tcp.host, tcp.port, tcp.enabled) == ("192.168.1.100", 502, True)
    assert (rtu.host, rtu.serial.port, rtu.serial.baudrate, rtu.serial.parity, rtu.serial.stopbits, rtu.unit,
            rtu.enabled) == (None, "/dev/ttyUSB0", 9600, "E", 1, 3, False)
