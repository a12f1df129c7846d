"""aiomysql's private packet methods, through their one adapter, on a real connection to MariaDB."""

from __future__ import annotations

import aiomysql
import pymysql
import pytest

from susee.sinks.packets import SUPPORTED_VERSIONS, UnsupportedDriver, check_driver, read_packet, send_command
from susee.sinks.prepared import COM_STMT_PREPARE

pytestmark = pytest.mark.mariadb

COM_PING = 0x0E


@pytest.fixture
async def connection():
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=3)
    try:
        yield conn
    finally:
        conn.close()


def test_the_installed_aiomysql_has_the_packet_methods() -> None:
    check_driver(aiomysql.Connection)  # what the import of sinks.packets checked


@pytest.mark.parametrize("kept", [(), ("_read_packet",), ("_execute_command",)])
def test_a_driver_without_a_packet_method_is_refused_naming_the_supported_versions(kept) -> None:
    stripped = type("Connection", (), {name: getattr(aiomysql.Connection, name) for name in kept})

    with pytest.raises(UnsupportedDriver) as raised:
        check_driver(stripped)

    message = str(raised.value)
    assert SUPPORTED_VERSIONS in message and aiomysql.__version__ in message
    assert all(name in message for name in ("_execute_command", "_read_packet") if name not in kept)


async def test_a_command_sent_through_the_adapter_gets_its_answer(connection) -> None:
    await send_command(connection, COM_PING, b"")

    assert (await read_packet(connection)).is_ok_packet()


async def test_an_error_packet_raises_the_drivers_error_and_the_connection_stays_usable(connection) -> None:
    await send_command(connection, COM_STMT_PREPARE, b"SELECT FROM nowhere WHERE")

    with pytest.raises(pymysql.err.ProgrammingError):
        await read_packet(connection)
    await send_command(connection, COM_PING, b"")
    assert (await read_packet(connection)).is_ok_packet()
