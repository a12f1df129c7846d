"""The garbage collector kept off the hot path while a site acquires.

A site of thousands of meters holds hundreds of thousands of objects that
live as long as the process (settings, profiles, plans, pollers); every full
collection would traverse them all, pausing the loop for 100-200 ms. Frozen,
they are never traversed again (they are still freed normally if they ever
become garbage without a cycle); the connections are frozen after the first
tick (``freeze_after_first_tick``).

What acquisition makes afterwards (samples, answers, batches) is freed by
reference counting, but a sample lives about a second, queued for the writer:
with the default young-generation threshold (700 objects more allocated than
freed) the collector ran some 25 times a second at 1,000 meters and traversed
every sample in flight, ~5 ms of CPU a second (5 µs per device-tick, measured
with gc.callbacks). With the threshold above the number of objects a tick
keeps in flight, it runs a few times a minute: the only garbage it is there
for, reference cycles (an exception and its traceback), waits a little
longer, bounded by the threshold.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The collector's young generation runs when this many more objects were
# allocated than freed: above what one tick keeps in flight (a PAC3200
# device-tick: 8 samples, their lists, answers and futures, ~20 objects, held
# until the writer has stored them), so that a busy tick alone never runs it.
YOUNG_OBJECTS_PER_DEVICE = 20
YOUNG_GC_THRESHOLD = 50_000


@contextmanager
def quiet_collector(devices: int) -> Iterator[None]:
    """Freeze what start-up built and collect rarely; on exit, put the collector back as it was.

    Restoring matters to an embedding process (tests): its objects become
    collectable again and its thresholds are its own.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    _, middle, oldest = thresholds
    gc.set_threshold(max(YOUNG_GC_THRESHOLD, YOUNG_OBJECTS_PER_DEVICE * devices), middle, oldest)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def freeze_after_first_tick(every_device_ticked: Callable[[], bool], period_s: float) -> None:
    """Freeze once more when every device has polled a tick: its connection exists by then.

    Thousands of connections are long-lived objects too; start-up cannot
    freeze them, they are made by the first tick. No collection first: that
    would pause the loop during acquisition.
    """
    while not every_device_ticked():
        await asyncio.sleep(period_s)
    gc.freeze()
