"""Schema migrations: loading and splitting, and the runner against the real MariaDB."""

from __future__ import annotations

import pymysql
import pytest

from susee.migrations import (
    Column,
    Index,
    TableShape,
    describe_changes,
    load_migrations,
    render,
    split_statements,
)
from susee.sample import Sample
from susee.sinks import SinkError, create_sink

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC


def admin(target, database=None):
    return pymysql.connect(
        host=target.host, port=target.port, user="root", password="", database=database, autocommit=True
    )


def fetch(target, sql, params=None):
    conn = admin(target, target.database)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        conn.close()


def columns(target, table):
    return fetch(
        target,
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (target.database, table),
    )


def unique_keys(target, table):
    rows = fetch(
        target,
        "SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND NON_UNIQUE = 0 GROUP BY INDEX_NAME ORDER BY INDEX_NAME",
        (target.database, table),
    )
    return dict(rows)


def create_statements(target, job_id):
    return [fetch(target, f"SHOW CREATE TABLE see{job_id}{suffix}")[0][1] for suffix in ("Raw", "Last", "Params")]


SAMPLE_COLUMNS = (
    ("idNum", "bigint(20) unsigned", "NO"),
    ("idDevice", "varchar(20)", "NO"),
    ("Date", "datetime(6)", "NO"),
    ("idParam", "varchar(20)", "NO"),
    ("Value", "double", "YES"),
    ("Delay", "float", "YES"),
    ("Code", "int(11)", "NO"),
)
# The Raw of a new database (migration 0004): idNum is a virtual column, the natural key the primary key.
COMPACT_RAW = (
    (("idNum", "bigint(20) unsigned", "YES"), *SAMPLE_COLUMNS[1:]),
    {"PRIMARY": "Date,idDevice,idParam"},
)
# table suffix -> (columns, unique keys)
MODERN_TABLES = {
    "Raw": (SAMPLE_COLUMNS, {"PRIMARY": "idNum", "uq_sample": "idDevice,idParam,Date"}),
    "Last": (SAMPLE_COLUMNS, {"PRIMARY": "idNum", "uq_device_param": "idDevice,idParam"}),
    "Params": (
        (
            ("idNum", "int(11)", "NO"),
            ("idParam", "varchar(20)", "YES"),
            ("descrITA", "varchar(255)", "YES"),
            ("descrENG", "varchar(255)", "YES"),
            ("um", "varchar(10)", "YES"),
            ("Acronimo", "varchar(30)", "YES"),
        ),
        {"PRIMARY": "idNum", "uq_param": "idParam"},
    ),
    "SchemaVersion": (
        (("version", "int(11)", "NO"), ("name", "varchar(100)", "NO"), ("applied_at", "datetime(6)", "NO")),
        {"PRIMARY": "version"},
    ),
}


# --- loading and splitting (no database) ---


def test_mariadb_migrations_are_found_in_version_order():
    assert [(m.version, m.name) for m in load_migrations("mariadb")] == [
        (1, "create_tables"), (2, "upgrade_seed_tables"), (3, "rollups"), (4, "compact_raw"), (5, "hourly_rollups"),
        (6, "daily_rollups"),
    ]
    assert [(m.version, m.name) for m in load_migrations("sqlite")] == [
        (1, "create_tables"), (2, "rollups"), (3, "hourly_rollups"), (4, "daily_rollups"),
    ]


def test_statements_split_at_semicolons_ending_a_line_and_drop_comment_lines():
    sql = "-- a comment; with a semicolon;\nCREATE TABLE a (x INT);\n\nSELECT 'a;b'; \nDO 0"
    assert split_statements(sql) == ["CREATE TABLE a (x INT)", "SELECT 'a;b'", "DO 0"]


@pytest.mark.parametrize("job_id", ["", "a;DROP", "a-b", "x" * 17, "000`"])
def test_render_refuses_a_job_id_that_is_not_an_identifier(job_id):
    with pytest.raises(ValueError):
        render("CREATE TABLE see{job}Raw (x INT)", job_id)


def test_every_migration_statement_names_only_the_jobs_tables():
    for migration in load_migrations("mariadb"):
        for statement in migration.statements("j42"):
            assert "{job}" not in statement


# (before, after, expected lines)
CHANGE_CASES = {
    "created": ({}, {"t": TableShape()}, ["created table t"]),
    "type": (
        {"t": TableShape(columns=(Column("v", "float(20,4)", True),))},
        {"t": TableShape(columns=(Column("v", "double", True),))},
        ["t.v: float(20,4) -> double"],
    ),
    "nullability": (
        {"t": TableShape(columns=(Column("c", "int(11)", True),))},
        {"t": TableShape(columns=(Column("c", "int(11)", False),))},
        ["t.c: int(11) NULL -> int(11) NOT NULL"],
    ),
    "unique key": (
        {"t": TableShape()},
        {"t": TableShape(indexes=(Index("uq", True, ("a", "b")),))},
        ["t: added unique key uq (a, b)"],
    ),
    "engine": (
        {"t": TableShape(options=(("engine", "MyISAM"),))},
        {"t": TableShape(options=(("engine", "InnoDB"),))},
        ["t: engine MyISAM -> InnoDB"],
    ),
    "nothing": ({"t": TableShape()}, {"t": TableShape()}, []),
}


@pytest.mark.parametrize("before, after, expected", CHANGE_CASES.values(), ids=CHANGE_CASES.keys())
def test_describe_changes(before, after, expected):
    assert describe_changes(before, after, ["t"]) == expected


# --- the runner on MariaDB ---


@pytest.fixture
async def sink(mariadb_target, job_id):
    sink = create_sink(mariadb_target, job_id)
    await sink.open()
    yield sink
    await sink.close()


@pytest.mark.mariadb
async def test_migrate_creates_the_database_and_tables(sink, mariadb_target, job_id):
    lines = await sink.migrate()

    assert lines == [
        f"created database {mariadb_target.database}",
        f"created table see{job_id}Raw",
        f"created table see{job_id}Last",
        f"created table see{job_id}Params",
        f"created table see{job_id}SchemaVersion",
        "migration 0001 create_tables applied",
        "migration 0002 upgrade_seed_tables applied",
        f"created table see{job_id}Q15",
        f"created table see{job_id}Q15Dirty",
        "migration 0003 rollups applied",
        f"see{job_id}Raw.idNum: bigint(20) unsigned NOT NULL -> bigint(20) unsigned NULL",
        f"see{job_id}Raw: changed primary key (idNum) -> primary key (Date, idDevice, idParam)",
        f"see{job_id}Raw: removed key ix_date (Date)",
        f"see{job_id}Raw: removed unique key uq_sample (idDevice, idParam, Date)",
        "migration 0004 compact_raw applied",
        f"created table see{job_id}Q60",
        "migration 0005 hourly_rollups applied",
        f"created table see{job_id}Day",
        f"created table see{job_id}DayGap",
        f"created table see{job_id}DaySpec",
        f"created table see{job_id}DayDirty",
        "migration 0006 daily_rollups applied",
    ]
    for suffix, (expected_columns, expected_keys) in {**MODERN_TABLES, "Raw": COMPACT_RAW}.items():
        assert columns(mariadb_target, f"see{job_id}{suffix}") == expected_columns, suffix
        assert unique_keys(mariadb_target, f"see{job_id}{suffix}") == expected_keys, suffix
    assert fetch(mariadb_target, f"SELECT version, name FROM see{job_id}SchemaVersion ORDER BY version") == (
        (1, "create_tables"),
        (2, "upgrade_seed_tables"),
        (3, "rollups"),
        (4, "compact_raw"),
        (5, "hourly_rollups"),
        (6, "daily_rollups"),
    )


@pytest.mark.mariadb
async def test_migrate_twice_says_up_to_date_and_changes_nothing(sink, mariadb_target, job_id):
    await sink.migrate()
    await sink.write([Sample("d01", "104", TICK, 1.5, 1.0, 0)])
    before = create_statements(mariadb_target, job_id)

    assert await sink.migrate() == ["schema up to date (version 6)"]
    assert create_statements(mariadb_target, job_id) == before
    assert fetch(mariadb_target, f"SELECT COUNT(*) FROM see{job_id}Raw") == ((1,),)


def create_seed_database(target, job_id):
    """The tables exactly as the seed README describes them, made by hand, with data."""
    conn = admin(target)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{target.database}`")
            cursor.execute(f"USE `{target.database}`")
            for suffix in ("Raw", "Last"):
                cursor.execute(
                    f"CREATE TABLE see{job_id}{suffix} (idNum int(12) NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                    " idDevice varchar(20), Date datetime(6), idParam varchar(20), Value float(20,4),"
                    " Delay float, Code int(11)) DEFAULT CHARSET=latin1"
                )
            cursor.execute(
                f"CREATE TABLE see{job_id}Params (idNum int(12) NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                " idParam varchar(10), descrITA varchar(255), descrENG varchar(255), um varchar(10),"
                " Acronimo varchar(30)) DEFAULT CHARSET=latin1"
            )
            cursor.execute(
                f"INSERT INTO see{job_id}Raw VALUES"
                " (398882, 'd00', '2021-02-18 10:30:00.000000', '104', 395.19, 178.778, 0),"
                " (398883, 'd00', '2021-02-18 10:30:00.000000', '105', 393.36, 178.778, 0),"
                " (398884, 'd00', '2021-02-18 10:30:00.000000', '106', 397.67, 178.778, 0),"
                " (398885, 'd00', '2021-02-18 10:30:00.000000', '104', 395.19, 178.778, 0),"  # replayed
                " (398886, 'd00', '2021-02-18 10:30:00.000000', '222', 123456.789, 178.778, 0)"
            )
            cursor.execute(
                f"INSERT INTO see{job_id}Last VALUES"
                " (1, 'd00', '2021-02-18 10:29:50.000000', '104', 395.00, 170.0, 0),"
                " (2, 'd00', '2021-02-18 10:30:00.000000', '104', 395.19, 178.778, 0)"
            )
            cursor.execute(
                f"INSERT INTO see{job_id}Params (idParam, descrITA, descrENG, um, Acronimo) VALUES"
                " ('104', 'Tensione UL1_L2', 'Voltage UL1_L2', 'V', 'UL1_L2'),"
                " ('133', 'Potenza attiva totale', 'Active Power  - Total', 'W', 'P_TOT')"
            )
    finally:
        conn.close()


@pytest.mark.mariadb
async def test_seed_era_database_is_upgraded_in_place_and_reports_each_change(sink, mariadb_target, job_id):
    create_seed_database(mariadb_target, job_id)
    raw, last, params = f"see{job_id}Raw", f"see{job_id}Last", f"see{job_id}Params"

    lines = await sink.migrate()

    for expected in [
        f"created table see{job_id}SchemaVersion",
        "migration 0001 create_tables applied",
        f"{raw}: collation latin1_swedish_ci -> utf8mb4_bin",
        f"{raw}.idNum: int(12) -> bigint(20) unsigned",
        f"{raw}.idDevice: varchar(20) NULL -> varchar(20) NOT NULL",
        f"{raw}.Value: float(20,4) -> double",
        f"{raw}.Code: int(11) NULL -> int(11) NOT NULL",
        f"{raw}: removed 1 duplicate row",
        f"{raw}: added unique key uq_sample (idDevice, idParam, Date)",
        f"{raw}: added key ix_date (Date)",
        f"{last}.Value: float(20,4) -> double",
        f"{last}: removed 1 duplicate row",
        f"{last}: added unique key uq_device_param (idDevice, idParam)",
        f"{params}.idNum: int(12) -> int(11)",
        f"{params}.idParam: varchar(10) -> varchar(20)",
        f"{params}: added unique key uq_param (idParam)",
        "migration 0002 upgrade_seed_tables applied",
        "migration 0004 compact_raw applied",  # a Raw with rows keeps its layout: migrate --compact converts it
    ]:
        assert expected in lines, "\n".join(lines)
    assert not any("created table" in line for line in lines if not line.endswith(("SchemaVersion", "Q15", "Q15Dirty", "Q60", "Day", "DayGap", "DaySpec", "DayDirty")))
    # Rows kept with their ids; the seed's readers saw 4 decimals, and that is the value kept.
    assert fetch(mariadb_target, f"SELECT idNum, idParam, Value FROM {raw} ORDER BY idNum") == (
        (398882, "104", 395.19),
        (398883, "105", 393.36),
        (398884, "106", 397.67),
        (398886, "222", 123456.7891),
    )
    assert fetch(mariadb_target, f"SELECT idNum, CAST(Date AS CHAR), Value FROM {last}") == (
        (2, "2021-02-18 10:30:00.000000", 395.19),
    )
    for suffix, (expected_columns, expected_keys) in MODERN_TABLES.items():
        assert columns(mariadb_target, f"see{job_id}{suffix}") == expected_columns, suffix
        assert unique_keys(mariadb_target, f"see{job_id}{suffix}") == expected_keys, suffix

    # The upgraded tables take writes, replays included, and a second run is a no-op.
    batch = [Sample("d00", "104", TICK, 395.19, 178.778, 0), Sample("d00", "104", TICK + 10, 396.0, 1.0, 0)]
    await sink.write(batch)
    assert fetch(mariadb_target, f"SELECT COUNT(*) FROM {raw}") == ((5,),)
    assert await sink.migrate() == ["schema up to date (version 6)"]


@pytest.mark.mariadb
async def test_failed_upgrade_says_where_and_what_changed_and_can_be_rerun(sink, mariadb_target, job_id):
    create_seed_database(mariadb_target, job_id)
    raw = f"see{job_id}Raw"
    fetch(mariadb_target, f"INSERT INTO {raw} (idDevice, Date, idParam, Code) VALUES ('d00', NULL, '104', 0)")

    with pytest.raises(SinkError) as failed:
        await sink.migrate()

    message = str(failed.value)
    assert "migration 0002 upgrade_seed_tables failed at statement" in message
    assert f"ALTER TABLE `{raw}`" in message and "'Date'" in message
    assert f"changed before the failure: {raw}.Value: float(20,4) -> decimal(20,4)" in message

    fetch(mariadb_target, f"DELETE FROM {raw} WHERE Date IS NULL")
    lines = await sink.migrate()
    assert f"{raw}.Value: decimal(20,4) -> double" in lines
    assert "migration 0002 upgrade_seed_tables applied" in lines
    assert lines[-1] == "migration 0006 daily_rollups applied"
    assert fetch(mariadb_target, f"SELECT COUNT(*) FROM {raw}") == ((4,),)
