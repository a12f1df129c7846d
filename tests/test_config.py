"""Settings: bad configs fail fast through the real CLI; sources merge in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from susee.config import ConfigError, load_settings
from susee.devices import plan_devices

EXIT_CONFIG = 2
CLI_TIMEOUT_S = 30  # generous: the processes run in parallel on a busy CI box
# Variables that would leak the caller's settings into a test.
LEGACY_NAMES = ("user_db", "pswd_db", "host_db", "port_db")

VALID = """\
job_id: "000"
sample_time: 10
sample_shift: 0
database:
  url: "sqlite:///susee-test.db"
devices:
  - {id: d01, profile: pac3200, host: 127.0.0.1, port: 1502, unit: 1}
  - {id: d02, profile: pac3200, host: 127.0.0.1, port: 1502, unit: 2}
"""


def _edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


# (case id, config text or None for "no file", fragments stderr must contain)
BAD_CONFIGS = [
    ("unknown-top-level-key", VALID + "colour: blue\n", ["field 'colour': unknown key"]),
    (
        "unknown-device-key",
        _edit("unit: 2}", "unit: 2, colour: blue}"),
        ["devices[1] (id 'd02')", "field 'colour': unknown key"],
    ),
    (
        "port-not-an-integer",
        _edit("port: 1502, unit: 2", 'port: "x", unit: 2'),
        ["devices[1] (id 'd02')", "field 'port'", "valid integer"],
    ),
    (
        "duplicate-device-id",
        _edit("id: d02", "id: d01"),
        ["devices[1] (id 'd01')", "field 'id': duplicate of devices[0]"],
    ),
    (
        "job-id-with-punctuation",
        _edit('job_id: "000"', 'job_id: "bad-id!"'),
        ["field 'job_id'", "^[A-Za-z0-9_]{1,16}$"],
    ),
    ("job-id-17-chars", _edit('job_id: "000"', 'job_id: "a2345678901234567"'), ["field 'job_id'", "{1,16}"]),
    (
        "sample-shift-equal-to-sample-time",
        _edit("sample_shift: 0", "sample_shift: 10"),
        ["sample_shift", "< sample_time"],
    ),
    (
        "sample-shift-negative",
        _edit("sample_shift: 0", "sample_shift: -1"),
        ["field 'sample_shift'", "greater than or equal to 0"],
    ),
    ("sample-time-half-second", _edit("sample_time: 10", "sample_time: 0.5"), ["field 'sample_time'", "equal to 1"]),
    (
        "param-not-in-profile",
        _edit("unit: 2}", "unit: 2, params: [104, 999]}"),
        ["devices[1] (id 'd02')", "field 'params'", "999 not in profile 'pac3200'"],
    ),
    ("invalid-yaml", VALID + "devices: [\n", ["not valid YAML", "line 10"]),
    ("missing-file", None, ["cannot read config"]),
    (
        "database-url-unknown-scheme",
        _edit("sqlite:///susee-test.db", "postgres://u:hunter2@db.example/seedb000"),
        ["field 'database.url'", "mysql://", "sqlite:///", "postgres://u:***@db.example"],
    ),
    (
        "device-id-21-chars",
        _edit("id: d02", "id: d01234567890123456789"),
        ["devices[1] (id 'd01234567890123456789')", "field 'id'", "1-20 characters"],
    ),
    ("workers-2-with-sqlite", VALID + "workers: 2\n", ["workers", "MariaDB"]),
    ("workers-auto-with-sqlite", VALID + "workers: auto\n", ["workers", "MariaDB"]),
    *(
        (f"workers-{name}", _edit("sqlite:///susee-test.db", "mysql://susee@127.0.0.1:3306") + f"workers: {value}\n",
         ["field 'workers': must be a whole number >= 1 or 'auto'"])
        for name, value in (("zero", "0"), ("negative", "-3"), ("a-word", "many"), ("a-fraction", "1.5"),
                            ("a-boolean", "true"))
    ),
]

# Only printed once settings were valid and work began.
START_UP_WORDS = ("config ", "database:", "enabled device", "reachable", "read:")


def _clean_environ() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("SUSEE_") and key.lower() not in LEGACY_NAMES
    }


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Run ``susee check`` on every bad config at once: one interpreter start-up of wall time."""
    running = {}
    for case_id, text, _ in BAD_CONFIGS:
        folder = tmp_path_factory.mktemp(case_id)
        secrets = folder / "secrets"
        secrets.mkdir()
        path = folder / "site.yaml"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        env = _clean_environ() | {"SUSEE_SECRETS_DIR": str(secrets)}
        command = [sys.executable, "-m", "susee", "check", "--config", str(path)]
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        running[case_id] = (path, command, process)
    results = {}
    try:
        for case_id, (path, command, process) in running.items():
            stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
            results[case_id] = (path, subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    finally:
        for _, _, process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


@pytest.mark.parametrize(("case_id", "text", "fragments"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_check_rejects_bad_config_with_exit_2_naming_the_culprit(cli_results, case_id, text, fragments) -> None:
    path, result = cli_results[case_id]

    assert result.returncode == EXIT_CONFIG, result.stderr
    assert not any(word in result.stdout for word in START_UP_WORDS), result.stdout
    assert "Traceback" not in result.stderr
    assert f"config error: {path}" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_rejected_database_url_never_shows_its_password(cli_results) -> None:
    _, result = cli_results["database-url-unknown-scheme"]

    assert "hunter2" not in result.stderr + result.stdout


# --- load_settings in process ------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, a clean environment and an empty secrets dir."""
    for key in list(os.environ):
        if key.upper().startswith("SUSEE_") or key.lower() in LEGACY_NAMES:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    return tmp_path


def _load(site: Path, text: str):
    path = site / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={"SUSEE_SECRETS_DIR": str(site / "secrets")})


MYSQL_SITE = """\
job_id: "000"
database:
  url: "mysql://susee@127.0.0.1:3306"
"""


def test_env_password_overrides_and_never_shows_in_target(site, monkeypatch) -> None:
    monkeypatch.setenv("SUSEE_DATABASE__PASSWORD", "s3cr3t-from-env")

    settings = _load(site, MYSQL_SITE)
    target = settings.database_target()

    assert target.password.get_secret_value() == "s3cr3t-from-env"
    assert str(target) == "mysql://susee:***@127.0.0.1:3306/seedb000"
    for shown in (str(target), repr(target), str(settings), repr(settings)):
        assert "s3cr3t-from-env" not in shown


def test_original_susee_dotenv_beside_config_gives_mysql_target(site) -> None:
    (site / ".env").write_text(
        "user_db = 'seeduser'\npswd_db = 'pw!'\nhost_db = '127.0.0.5'\nport_db = '3307'\n", encoding="utf-8"
    )

    target = _load(site, 'job_id: "000"\n').database_target()

    assert str(target) == "mysql://seeduser:***@127.0.0.5:3307/seedb000"
    assert target.password.get_secret_value() == "pw!"


def test_dotenv_keys_of_other_tools_are_ignored(site) -> None:
    (site / ".env").write_text(
        "GITHUB_TOKEN=ghp_dummy\nDEBUG=1\nhost_db = '127.0.0.5'\npswd_db = 'pw!'\n", encoding="utf-8"
    )

    target = _load(site, 'job_id: "000"\n').database_target()

    assert str(target) == "mysql://root:***@127.0.0.5:3306/seedb000"


def test_dotenv_misspelt_susee_key_is_a_config_error(site) -> None:
    (site / ".env").write_text("SUSEE_SAMPLE_TIMES=60\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="sample_times"):
        _load(site, MYSQL_SITE)


def test_dotenv_beside_config_is_found_from_another_working_dir(site, tmp_path_factory, monkeypatch) -> None:
    (site / ".env").write_text("SUSEE_DATABASE__PASSWORD=from-dotenv\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    target = _load(site, MYSQL_SITE).database_target()

    assert target.password.get_secret_value() == "from-dotenv"


def test_secrets_dir_file_sets_database_password(site) -> None:
    (site / "secrets" / "susee_database__password").write_text("from-secret-file", encoding="utf-8")

    target = _load(site, MYSQL_SITE).database_target()

    assert target.password.get_secret_value() == "from-secret-file"
    assert "from-secret-file" not in str(target)


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        pytest.param({"yaml"}, "from-yaml", id="yaml-alone"),
        pytest.param({"yaml", "secrets"}, "from-secrets", id="secrets-beat-yaml"),
        pytest.param({"yaml", "secrets", "dotenv"}, "from-dotenv", id="dotenv-beats-secrets"),
        pytest.param({"yaml", "secrets", "dotenv", "env"}, "from-env", id="environment-beats-all"),
        pytest.param({"yaml", "env"}, "from-env", id="environment-beats-yaml"),
    ],
)
def test_password_source_precedence(site, monkeypatch, sources, expected) -> None:
    text = MYSQL_SITE + "  password: from-yaml\n" if "yaml" in sources else MYSQL_SITE
    if "secrets" in sources:
        (site / "secrets" / "susee_database__password").write_text("from-secrets", encoding="utf-8")
    if "dotenv" in sources:
        (site / ".env").write_text("SUSEE_DATABASE__PASSWORD=from-dotenv\n", encoding="utf-8")
    if "env" in sources:
        monkeypatch.setenv("SUSEE_DATABASE__PASSWORD", "from-env")

    target = _load(site, text).database_target()

    assert target.password.get_secret_value() == expected


def test_environment_beats_yaml_for_plain_and_nested_keys(site, monkeypatch) -> None:
    monkeypatch.setenv("SUSEE_SAMPLE_TIME", "60")
    monkeypatch.setenv("SUSEE_DATABASE__USER", "envuser")

    settings = _load(site, "sample_time: 10\n" + MYSQL_SITE + "  user: yamluser\n")

    assert settings.sample_time == 60
    assert settings.database.user == "envuser"
    assert settings.database.url == "mysql://susee@127.0.0.1:3306"  # the YAML's other keys survive
    assert str(settings.database_target()) == "mysql://envuser@127.0.0.1:3306/seedb000"


def test_bad_environment_value_is_a_config_error_naming_the_field(site, monkeypatch) -> None:
    monkeypatch.setenv("SUSEE_SAMPLE_TIME", "0.5")

    with pytest.raises(ConfigError, match="sample_time"):
        _load(site, MYSQL_SITE)


def test_device_with_missing_profile_file_is_planned_with_its_error(site) -> None:
    text = MYSQL_SITE + (
        "devices:\n"
        "  - {id: d01, host: 127.0.0.1}\n"
        "  - {id: d02, host: 127.0.0.1, profile: meters/nope.yaml}\n"
    )
    path = site / "site.yaml"
    settings = _load(site, text)

    plans = plan_devices(settings, path)

    assert [(p.id, p.profile is None) for p in plans] == [("d01", False), ("d02", True)]
    assert plans[1].blocks == ()
    assert "meters/nope.yaml" in plans[1].profile_error
    assert plans[0].profile_error is None


def test_disabled_device_is_not_planned(site) -> None:
    text = MYSQL_SITE + "devices:\n  - {id: d01, host: 127.0.0.1, enabled: false}\n  - {id: d02, host: 127.0.0.1}\n"
    path = site / "site.yaml"

    plans = plan_devices(_load(site, text), path)

    assert [p.id for p in plans] == ["d02"]


@pytest.mark.parametrize("name", ["site.example.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name, monkeypatch, tmp_path):
    # Loads and plans only: nothing is contacted (the example's addresses are not ours).
    from susee.commands import load_site

    monkeypatch.chdir(tmp_path)
    site = load_site(str(Path(__file__).parents[1] / "config" / name))

    assert site.plans and all(plan.profile is not None for plan in site.plans)


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("1", 1), ("3", 3), ('"2"', 2)])
def test_workers_setting_accepts_a_count_or_auto_with_mariadb(site: Path, value: str, expected) -> None:
    assert _load(site, MYSQL_SITE + f"workers: {value}\n").workers == expected


def test_one_worker_is_the_default_and_fine_with_sqlite(site: Path) -> None:
    assert _load(site, VALID).workers == 1
    assert _load(site, VALID + "workers: 1\n").workers == 1


# --- frozen once loaded: resolved variants are copies ---


@pytest.mark.parametrize(("change", "value"), [
    pytest.param(lambda s, v: setattr(s, "sample_time", v), 60, id="top-level"),
    pytest.param(lambda s, v: setattr(s.spool, "path", v), Path("/elsewhere"), id="section"),
    pytest.param(lambda s, v: setattr(s.devices[0], "host", v), "10.0.0.9", id="device"),
    pytest.param(lambda s, v: setattr(s, "simulator", v), None, id="simulator"),
])
def test_settings_cannot_be_changed_after_loading(site, change, value) -> None:
    settings = _load(site, MYSQL_SITE + "devices:\n  - {id: d01, host: 127.0.0.1}\n")

    with pytest.raises(ValidationError, match="frozen"):
        change(settings, value)


def test_resolved_settings_are_a_copy_with_the_spool_beside_the_config_file(site) -> None:
    path = site / "site.yaml"
    settings = _load(site, MYSQL_SITE + "spool: {path: buffer}\n")

    resolved = settings.resolved(path)

    assert resolved.spool.path == site / "buffer"
    assert settings.spool.path == Path("buffer"), "the loaded settings are unchanged"
    assert resolved.database == settings.database and resolved.spool.max_bytes == settings.spool.max_bytes


def test_host_db_gives_the_database_url_without_changing_the_settings(site) -> None:
    (site / ".env").write_text("host_db = '127.0.0.5'\nport_db = '3307'\n", encoding="utf-8")

    settings = _load(site, 'job_id: "000"\n')

    assert settings.database.url is None
    assert settings.database_url == "mysql://127.0.0.5:3307"


@pytest.mark.parametrize(("yaml_text", "write_timeout_s"), [
    pytest.param("", 10.0, id="default-10-s"),
    pytest.param("  write_timeout: 2.5\n", 2.5, id="set"),
])
def test_database_write_timeout(site, yaml_text, write_timeout_s) -> None:
    assert _load(site, MYSQL_SITE + yaml_text).database.write_timeout == write_timeout_s


def test_database_write_timeout_must_be_positive(site) -> None:
    with pytest.raises(ConfigError, match="database.write_timeout"):
        _load(site, MYSQL_SITE + "  write_timeout: 0\n")
