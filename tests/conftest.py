"""Shared fixtures."""

from __future__ import annotations

import logging
import os
import secrets

import pytest

# pymodbus logs every timeout with a dump of recent frames; for susee a timeout
# is a quality code, asserted by the tests, so the dumps are only noise.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# The service serves its live view by default on 127.0.0.1:8050: tests (and
# the services they start as subprocesses) take any free port instead, so
# they never collide with each other or with a susee running on the machine.
os.environ.setdefault("SUSEE_HTTP__LISTEN", "127.0.0.1:0")


@pytest.fixture
def job_id() -> str:
    """A fresh job id, so table names never clash between tests."""
    return "t" + secrets.token_hex(3)
