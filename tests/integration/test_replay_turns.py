"""A live batch during a replay waits for one short replay transaction, not for a 100,000-row batch."""

from __future__ import annotations

import asyncio

from susee.config import WriterSettings
from susee.sample import Sample
from susee.sinks import create_sink
from susee.spool import Spool
from susee.replay import REPLAY_BATCH_ROWS, REPLAY_TXN_ROWS
from susee.store import Store
from susee.writer import Writer

PARAMS = [str(p) for p in range(101, 109)]


class Observed:
    """The real MariaDB sink, with the order of its writes noted (live or replay, Raw or Last)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.target = sink.target
        self.writes: list[str] = []
        self.first_replay_part = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.sink, name)

    async def write(self, samples, **last) -> None:
        await self.sink.write(samples, **last)
        if samples and samples[0].device_id == "live":
            self.writes.append("live")
        else:
            self.writes.append("replay-raw" if samples else "replay-last")
            self.first_replay_part.set()


async def test_a_live_batch_goes_between_two_parts_of_one_replay_batch(tmp_path, mariadb_target, job_id, fetch):
    spool = Spool(tmp_path / "spool")
    spool.open()
    start_s = 1613644200.0
    for tick in range(REPLAY_BATCH_ROWS // (100 * len(PARAMS))):  # one full replay batch
        spool.append([Sample(f"old{n:03d}", p, start_s + tick, float(tick), 1.0, 0) for n in range(100) for p in PARAMS])
    spool.close()
    sink = Observed(create_sink(mariadb_target, job_id))
    writer = Writer(Store(sink, Spool(tmp_path / "spool")), WriterSettings(batch_age=0.01))
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.wait_for(sink.first_replay_part.wait(), 60)
        writer.submit([Sample("live", p, start_s + 86400, 1.0, 1.0, 0) for p in PARAMS])
        for _ in range(3000):
            if "live" in sink.writes and writer.store.spool.pending_rows == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        writer.close()
        await asyncio.wait_for(task, 30)
        await sink.sink.close()

    parts = REPLAY_BATCH_ROWS // REPLAY_TXN_ROWS
    assert sink.writes.count("replay-raw") == parts
    live_at = sink.writes.index("live")
    assert live_at <= 2, f"the live batch waited for one replay part at most: {sink.writes}"
    assert live_at < len(sink.writes) - 1, "it did not wait for the whole replay batch"
    rows = await fetch(f"SELECT COUNT(*) AS n FROM see{job_id}Raw")
    assert rows[0]["n"] == REPLAY_BATCH_ROWS + len(PARAMS)
    last = await fetch(f"SELECT COUNT(*) AS n, MAX(`Date`) AS newest FROM see{job_id}Last WHERE idDevice LIKE 'old%%'")
    assert last[0]["n"] == 100 * len(PARAMS), "Last has the newest row of every replayed key"
