"""Shared fixtures."""

from __future__ import annotations

import logging
import secrets

import pytest

# pymodbus logs every timeout with a dump of recent frames; for susee a timeout
# is a quality code, asserted by the tests, so the dumps are only noise.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@pytest.fixture
def job_id() -> str:
    """A fresh job id, so table names never clash between tests."""
    return "t" + secrets.token_hex(3)
