"""SIGTERM stops every async command cleanly, even where no default disposition applies (PID 1)."""

from __future__ import annotations

import asyncio
import os
import signal

from susee.cli import stop_on_sigterm


async def test_sigterm_cancels_the_command_lets_it_clean_up_and_exits_0():
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def command() -> int:
        started.set()
        try:
            await asyncio.Event().wait()  # serves until stopped, like simulate
        finally:
            cleaned_up.set()
        return 1

    running = asyncio.create_task(stop_on_sigterm(command()))
    await started.wait()
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN), "a handler, or PID 1 ignores it"
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 5) == 0
    assert cleaned_up.is_set()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the handler is gone with the command"


async def test_a_command_that_ends_by_itself_keeps_its_exit_code_and_a_foreign_cancel_still_cancels():
    async def command() -> int:
        return 3

    assert await stop_on_sigterm(command()) == 3

    async def forever() -> int:
        await asyncio.Event().wait()
        return 0

    running = asyncio.create_task(stop_on_sigterm(forever()))
    await asyncio.sleep(0)
    running.cancel()
    try:
        await running
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("a cancel that is not SIGTERM must propagate")
