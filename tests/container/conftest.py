"""The private container engine, started once for the container tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .engine import Engine, engine_problem


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    engine = Engine()
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
