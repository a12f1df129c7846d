"""Before sampling, and in ``check`` / ``migrate``: can this site's rows be stored at all?

An outage (the database down or unreachable) is waited out by the spool.
Other errors are not: a missing privilege, a table or column dropped by
hand, a database the user may not create. Spooling would only hide them
until the spool is full, so they stop the start (exit 1) and are reported
by ``check`` and ``migrate``, naming the privilege or the column.
"""

from __future__ import annotations

import asyncio
import logging

from susee.config import DatabaseTarget
from susee.sinks import PermanentSinkError, SinkError, create_sink

log = logging.getLogger(__name__)

VERIFY_TIMEOUT_S = 30.0  # a hung server is an outage: start, and spool


async def database_problems(target: DatabaseTarget, job_id: str, *, create_database: bool = False) -> list[str] | None:
    """What stops rows from being stored (``[]``: nothing), or None when the database does not answer."""
    sink = create_sink(target, job_id)
    try:
        await sink.open()
        return await asyncio.wait_for(sink.verify(create_database=create_database), VERIFY_TIMEOUT_S)
    except PermanentSinkError as exc:
        return [str(exc)]
    except (SinkError, asyncio.TimeoutError):
        return None
    finally:
        await sink.close()


async def refuse_unwritable(target: DatabaseTarget, job_id: str) -> bool:
    """Log why rows cannot be stored and return True, before sampling; False if they can (or it is an outage)."""
    problems = await database_problems(target, job_id, create_database=True)
    if problems is None:
        log.warning("database %s does not answer: starting anyway, rows go to the spool until it does", target)
        return False
    for problem in problems:
        log.error("database %s: %s: rows cannot be stored; fix this (privilege, column) and start again", target,
                  problem)
    return bool(problems)
