"""The container image, built and run for real: rows reach the host's MariaDB, docker stop is prompt.

Marked ``container`` and left out of the default run (a few minutes on a
first run); ``.ci/run`` runs it with ``pytest -m container``. A private
dockerd is started for the test (see ``engine.py``); the base image is a
local Debian root filesystem, since no registry is reachable here. The
simulator runs in the image too, so ``susee simulate`` as PID 1 of a
container is exercised as well. Everything uses the host's network.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import yaml

from .engine import COMMAND_TIMEOUT_S, ROOT, Engine, free_port

# The first test's setup builds the base root filesystem (debootstrap) and the
# image on a machine whose cache is cold: minutes, not the suite's 60 s a test.
# Each step has its own bound (COMMAND_TIMEOUT_S); the test's covers two of them.
pytestmark = [pytest.mark.container, pytest.mark.timeout(2 * COMMAND_TIMEOUT_S + 120)]

IMAGE = "localhost/susee:test"
ROWS_WITHIN_S = 60.0  # start-up, migrations and a few 1-s ticks on a loaded CI box
STOP_WITHIN_S = 15.0  # well under docker stop's 30 s grace: proof that SIGTERM was acted on
JOB = "000"
UNITS = (1, 2)
PASSWORD_FILE = "susee_database__password"


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    engine.build(IMAGE)
    return IMAGE


@pytest.fixture(scope="module")
def has_http(engine: Engine, image: str) -> bool:
    """Whether the image's service has the HTTP endpoint (settings section ``http``, branch web)."""
    probe = engine.docker("run", "--rm", "--entrypoint", "python", image, "-c",
                          "from susee.config import Settings; print('http' in Settings.model_fields)")
    return probe.stdout.strip() == "True"


@pytest.fixture(scope="module")
def database() -> Iterator[dict]:
    """A fresh database on the host's MariaDB and a user with a password that only it may use."""
    name = f"susee_ct_{secrets.token_hex(5)}"
    user, password = f"susee_ct_{secrets.token_hex(4)}", secrets.token_hex(16)
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE USER `{user}`@'127.0.0.1' IDENTIFIED BY %s", (password,))
            cursor.execute(f"GRANT ALL ON `{name}`.* TO `{user}`@'127.0.0.1'")
        yield {"name": name, "user": user, "password": password}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute(f"DROP USER IF EXISTS `{user}`@'127.0.0.1'")
        admin.close()


def write_site(folder: Path, database: dict, sim_port: int, http_port: int | None, prefix: str = "c") -> Path:
    site = {
        "job_id": JOB,
        "sample_time": 1,
        "database": {"url": f"mysql://{database['user']}@127.0.0.1:3306/{database['name']}"},
        "writer": {"batch_age": 0.2},
        "devices": [{"id": f"{prefix}{unit}", "profile": "pac3200", "host": "127.0.0.1", "port": sim_port,
                     "unit": unit, "timeout": 1.0} for unit in UNITS],
    }
    if http_port is not None:
        site["http"] = {"listen": f"127.0.0.1:{http_port}"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    path.chmod(0o644)
    secrets_dir = folder / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)  # private on the host; the file itself is mounted
    (secrets_dir / PASSWORD_FILE).write_text(database["password"], encoding="utf-8")
    (secrets_dir / PASSWORD_FILE).chmod(0o644)  # read by the image's unprivileged user
    return path


def devices_with_rows(database: dict) -> set[str]:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                           (database["name"], f"see{JOB}Raw"))
            if cursor.fetchone()[0] == 0:
                return set()
            cursor.execute(f"SELECT DISTINCT idDevice FROM `{database['name']}`.`see{JOB}Raw` WHERE Code = 0")
            return {row[0] for row in cursor.fetchall()}
    finally:
        conn.close()


def wait_for(condition, what: str, within_s: float, logs) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within_s} s\n{logs()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def service(engine: Engine, image: str, database: dict, has_http: bool, tmp_path_factory) -> Iterator[dict]:
    """The simulator and the service, each in a container of the image."""
    folder = tmp_path_factory.mktemp("container")
    sim_port, http_port = free_port(), free_port() if has_http else None
    site = write_site(folder, database, sim_port, http_port)
    suffix = secrets.token_hex(4)
    names = {"simulator": f"susee-sim-{suffix}", "service": f"susee-run-{suffix}", "volume": f"susee-spool-{suffix}"}
    try:
        engine.docker("run", "-d", "--name", names["simulator"], "--network", "host", image,
                      "simulate", "--port", str(sim_port), "--units", ",".join(map(str, UNITS)))
        healthz = [] if http_port is None else ["-e", f"SUSEE_HEALTHZ_URL=http://127.0.0.1:{http_port}/healthz"]
        engine.docker("run", "-d", "--name", names["service"], "--network", "host",
                      "-v", f"{site}:/etc/susee/site.yaml:ro",
                      "-v", f"{folder / 'secrets' / PASSWORD_FILE}:/run/secrets/{PASSWORD_FILE}:ro",  # as in the README
                      "-v", f"{names['volume']}:/var/lib/susee/spool", *healthz, image)
        yield names | {"http_port": http_port}
    finally:
        engine.docker("rm", "-f", names["service"], names["simulator"], check=False)
        engine.docker("volume", "rm", "-f", names["volume"], check=False)


def test_the_image_stores_rows_of_every_meter_in_the_hosts_mariadb(engine, service, database):
    wait_for(lambda: devices_with_rows(database) == {f"c{unit}" for unit in UNITS}, "good rows of every meter",
             ROWS_WITHIN_S, lambda: engine.logs(service["service"]))
    assert "Traceback" not in engine.logs(service["service"])


def test_the_image_has_no_credentials_and_runs_as_an_unprivileged_user(engine, image, database):
    config = json.loads(engine.docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "susee"
    assert not [env for env in config["Env"] if database["password"] in env or "PASSWORD" in env.upper()]
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/susee/spool" in config["Volumes"]


def test_healthz_answers_through_the_images_own_healthcheck(engine, service, has_http):
    if not has_http:
        pytest.skip("the image has no HTTP endpoint yet (settings section 'http' from branch web not merged): "
                    "/healthz not checked")
    test = json.loads(engine.docker("image", "inspect", IMAGE).stdout)[0]["Config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD"

    def answers() -> bool:
        return engine.docker("exec", service["service"], *test[1:], check=False).returncode == 0

    wait_for(answers, "/healthz answering", ROWS_WITHIN_S, lambda: engine.logs(service["service"]))


@pytest.mark.parametrize("which", ["service", "simulator"])
def test_docker_stop_ends_each_container_promptly_and_cleanly(engine, service, which):
    started = time.monotonic()
    engine.docker("stop", "-t", "30", service[which])
    took_s = time.monotonic() - started
    state = json.loads(engine.docker("inspect", service[which]).stdout)[0]["State"]
    assert (state["ExitCode"], took_s < STOP_WITHIN_S) == (0, True), (took_s, engine.logs(service[which]))
    if which == "service":
        assert "rows written" in engine.logs(service[which]), "the stop summary: a clean shutdown"


def test_compose_runs_the_demo_against_the_hosts_mariadb(engine, image, database, has_http, tmp_path):
    """deploy/compose.yaml with compose.host-db.yaml (no MariaDB image can be pulled here) and the demo profile."""
    sim_port = free_port()
    http_port = free_port() if has_http else None  # not the default 8050: the host's network is shared
    site = write_site(tmp_path, database, sim_port, http_port, prefix="k")  # other ids than the service's rows
    override = tmp_path / "compose.test.yaml"
    build = {"context": str(ROOT), "network": "host", "args": {"BASE": engine.base_image}}
    override.write_text(yaml.safe_dump({
        "services": {
            "mariadb": {"build": build},
            "susee": {"build": build, "volumes": [f"{site}:/etc/susee/site.yaml:ro"]},
            "simulator": {"build": build, "command": ["simulate", "--port", str(sim_port), "--units", "1,2"]},
        },
        "secrets": {name: {"file": str(tmp_path / "secrets" / PASSWORD_FILE)}
                    for name in ("susee_database__password", "mariadb_root_password")},
    }), encoding="utf-8")
    deploy = ROOT / "deploy"
    compose = ["-p", f"susee-ct-{secrets.token_hex(4)}", "-f", str(deploy / "compose.yaml"),
               "-f", str(deploy / "compose.host-db.yaml"), "-f", str(override), "--profile", "demo"]
    try:
        engine.compose(*compose, "up", "-d", "--build")
        wait_for(lambda: {f"k{unit}" for unit in UNITS} <= devices_with_rows(database), "rows through compose",
                 ROWS_WITHIN_S, lambda: engine.compose(*compose, "logs", "--no-color", check=False).stdout)
        started = time.monotonic()
        engine.compose(*compose, "stop", "-t", "30")
        assert time.monotonic() - started < 2 * STOP_WITHIN_S
    finally:
        result = engine.compose(*compose, "down", "-v", "-t", "5", check=False)
        assert result.returncode == 0, result.stderr


def test_engine_is_the_private_one(engine):
    """Nothing here may touch another dockerd on this machine."""
    assert engine.host.startswith("unix:///tmp/")
    info = subprocess.run([engine.cli, "-H", engine.host, "info", "--format", "{{.DockerRootDir}}"],
                          capture_output=True, text=True, check=True)
    assert info.stdout.strip() == str(engine.data_root)
