"""http: settings: a listen address others can reach needs a token, or an explicit allow_anonymous."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from susee.config import ConfigError, host_port, is_loopback, load_settings

EXIT_CONFIG = 2
TOKEN = "a-long-random-token-0123456789"
BASE = """\
job_id: "000"
database: {url: "sqlite:///web-test.db"}
devices: [{id: d01, host: 127.0.0.1, port: 1502}]
"""

# (case id, http section, error fragment or None when valid)
HTTP_CASES = [
    ("default-loopback", "", None),
    ("loopback-v4", "http: {listen: '127.0.0.1:9000'}", None),
    ("loopback-v6", "http: {listen: '[::1]:9000'}", None),
    ("localhost", "http: {listen: 'localhost:9000'}", None),
    ("all-addresses-without-token", "http: {listen: '0.0.0.0:8050'}", "reachable from other machines"),
    ("lan-address-without-token", "http: {listen: '192.168.1.5:8050'}", "set http.token"),
    ("host-name-without-token", "http: {listen: 'meters.example:8050'}", "reachable from other machines"),
    ("all-addresses-with-token", f"http: {{listen: '0.0.0.0:8050', token: '{TOKEN}'}}", None),
    ("all-addresses-anonymous-on-purpose", "http: {listen: '0.0.0.0:8050', allow_anonymous: true}", None),
    ("disabled-needs-nothing", "http: {listen: '0.0.0.0:8050', enabled: false}", None),
    ("short-token", "http: {listen: '0.0.0.0:8050', token: 'abc'}", "at least 16 characters"),
    ("no-port", "http: {listen: '127.0.0.1'}", "is not host:port"),
    ("port-out-of-range", "http: {listen: '127.0.0.1:70000'}", "is not host:port"),
    ("unknown-key", "http: {port: 80}", "unknown key"),
]


@pytest.fixture(autouse=True)
def _no_listen_override(monkeypatch):
    monkeypatch.delenv("SUSEE_HTTP__LISTEN", raising=False)  # tests/conftest.py sets it for the other tests
    monkeypatch.delenv("SUSEE_HTTP__TOKEN", raising=False)


@pytest.mark.parametrize(("case_id", "section", "fragment"), HTTP_CASES, ids=[case[0] for case in HTTP_CASES])
def test_http_settings_are_validated_at_load(tmp_path, case_id, section, fragment) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BASE + section + "\n", encoding="utf-8")
    if fragment is None:
        load_settings(path, environ={})
        return
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert "http" in str(error.value) and fragment in str(error.value)


@pytest.mark.parametrize(("listen", "expected", "loopback"), [
    ("127.0.0.1:8050", ("127.0.0.1", 8050), True),
    ("127.1.2.3:1", ("127.1.2.3", 1), True),
    ("[::1]:8050", ("::1", 8050), True),
    ("0.0.0.0:0", ("0.0.0.0", 0), False),
    ("[::]:8050", ("::", 8050), False),
    ("10.0.0.1:8050", ("10.0.0.1", 8050), False),
])
def test_listen_addresses_parse_and_loopback_is_recognised(listen, expected, loopback) -> None:
    assert host_port(listen) == expected
    assert is_loopback(expected[0]) is loopback


def test_token_comes_from_the_environment_dotenv_or_secrets_dir(tmp_path, monkeypatch) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BASE + "http: {listen: '0.0.0.0:8050'}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUSEE_HTTP__TOKEN", TOKEN)
    assert load_settings(path, environ={}).http.token.get_secret_value() == TOKEN
    monkeypatch.delenv("SUSEE_HTTP__TOKEN")
    (tmp_path / ".env").write_text(f"SUSEE_HTTP__TOKEN={TOKEN}-env\n", encoding="utf-8")
    assert load_settings(path, environ={}).http.token.get_secret_value() == TOKEN + "-env"
    (tmp_path / ".env").unlink()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "susee_http__token").write_text(TOKEN + "-file", encoding="utf-8")
    settings = load_settings(path, environ={"SUSEE_SECRETS_DIR": str(secrets)})
    assert settings.http.token.get_secret_value() == TOKEN + "-file"
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.http)


def _run(folder: Path, http_section: str) -> subprocess.CompletedProcess:
    """``susee run`` of BASE plus ``http_section`` in ``folder``, without the tests' SUSEE_ environment."""
    path = folder / "site.yaml"
    path.write_text(BASE + http_section + "\n", encoding="utf-8")
    env = {key: value for key, value in __import__("os").environ.items() if not key.startswith("SUSEE_")}
    return subprocess.run([sys.executable, "-m", "susee", "--config", str(path), "run", "--duration", "1"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=folder)


def test_run_refuses_an_open_address_without_token_with_exit_2(tmp_path: Path) -> None:
    result = _run(tmp_path, "http: {listen: '0.0.0.0:8050'}")
    assert result.returncode == EXIT_CONFIG
    assert "http" in result.stderr and "0.0.0.0:8050" in result.stderr and "set http.token" in result.stderr
    assert not (tmp_path / "spool").exists()  # refused before anything started


def test_run_refuses_an_unknown_tariff_calendar_with_exit_2(tmp_path: Path) -> None:
    result = _run(tmp_path, "http: {tariff: no-such-calendar.yaml}")
    assert result.returncode == EXIT_CONFIG, result.stderr
    # Relative to the config file's folder, named in the message.
    assert "http.tariff" in result.stderr and str(tmp_path / "no-such-calendar.yaml") in result.stderr
