"""The systemd unit and the Dockerfile: checked by systemd's own verifier, and against the settings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from susee.config import Settings

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "susee.service"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
INSTALLED_SUSEE = "/opt/susee/bin/susee"  # where the README installs it


def unit_settings(text: str) -> dict[str, str]:
    """key -> value of the unit's lines (the unit sets each key once)."""
    pairs = [line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Za-z]+=", line)]
    return {key: value for key, value in pairs}


def verify(unit_text: str, folder: Path) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` on the unit, run from this test's venv (the installed path may not exist)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: package systemd)")
    susee = Path(sys.executable).parent / "susee"
    path = folder / "susee.service"
    path.write_text(unit_text.replace(INSTALLED_SUSEE, str(susee)), encoding="utf-8")
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=30)


def test_systemd_unit_passes_systemd_analyze_verify_without_a_word(tmp_path):
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED_SUSEE in text
    result = verify(text, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_verifier_would_catch_a_misspelt_hardening_option(tmp_path):
    result = verify(UNIT.read_text(encoding="utf-8").replace("ProtectSystem=", "ProtectSytem="), tmp_path)
    assert "Unknown key 'ProtectSytem'" in result.stderr


def test_unit_gives_the_service_longer_to_stop_than_its_shutdown_timeout_and_spools_in_its_state_folder():
    unit = unit_settings(UNIT.read_text(encoding="utf-8"))
    assert float(unit["TimeoutStopSec"]) > Settings.model_fields["shutdown_timeout"].default
    assert unit["Restart"] == "on-failure"
    assert unit["RestartPreventExitStatus"] == "2", "a config error exits 2: restarting cannot mend it"
    assert f"SUSEE_SPOOL__PATH=/var/lib/{unit['StateDirectory']}/" in unit["Environment"]
    assert unit["User"] != "root"
    assert unit["EnvironmentFile"].lstrip("-").startswith("/etc/susee/")
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules"):
        assert unit[option] == "yes", option
    assert unit["ProtectSystem"] == "strict"
    assert set(unit["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_dockerfile_takes_its_base_as_an_argument_stops_on_sigterm_and_bakes_in_no_secret():
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert instructions[:2] == ["ARG BASE=python:3.12-slim", "FROM ${BASE}"]
    assert "STOPSIGNAL SIGTERM" in instructions
    assert any(line.startswith("HEALTHCHECK") for line in instructions)
    assert 'VOLUME ["/var/lib/susee/spool"]' in instructions
    assert "urlopen(os.environ['SUSEE_HEALTHZ_URL']" in text, "no HTTP client in the image: urllib"
    env_lines = " ".join(line for line in instructions if line.startswith(("ENV", "ARG")))
    assert not re.search(r"PASSWORD|TOKEN|SECRET", env_lines, re.IGNORECASE)


def compose_config(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (Debian: docker-compose; .ci/run installs it)")
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), *args, "config"], capture_output=True, text=True,
                          timeout=60, cwd=COMPOSE.parent)


def test_compose_file_is_valid_mariadb_first_and_the_simulator_only_in_the_demo_profile():
    """The MariaDB image cannot be pulled here: its part of the file is checked by compose's own validation."""
    plain = compose_config()
    assert plain.returncode == 0, plain.stderr
    config = yaml.safe_load(plain.stdout)
    in_demo_only = {name for name, service in config["services"].items() if "demo" in service.get("profiles", [])}
    assert (set(config["services"]), in_demo_only) == ({"mariadb", "susee", "simulator"}, {"simulator"})
    susee, mariadb = config["services"]["susee"], config["services"]["mariadb"]
    assert susee["depends_on"]["mariadb"]["condition"] == "service_healthy"
    assert susee["init"] is True
    assert "healthcheck.sh" in mariadb["healthcheck"]["test"]
    assert mariadb["environment"]["MARIADB_PASSWORD_FILE"] == "/run/secrets/susee_database__password"
    assert not [value for service in config["services"].values() for key, value in service.get("environment", {}).items()
                if "PASSWORD" in key and not key.endswith("_FILE")], "passwords only as secret files"
    healthcheck = config["services"]["simulator"]["healthcheck"]  # compose 1.29 writes disable: true as test: [NONE]
    assert healthcheck.get("disable") is True or healthcheck.get("test") == ["NONE"], "no HTTP in the simulator"
