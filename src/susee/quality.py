"""The ``Code`` quality bitmask stored with every row (the seed's values)."""

from __future__ import annotations

from enum import IntFlag


class Code(IntFlag):
    """Quality bits; 0 means the value is good. Bits are OR-ed."""

    OK = 0
    ERR_CONNECTION = 1  # connect refused/failed, timeout, connection lost
    DRIVER_ERROR = 2  # unexpected failure while reading or decoding
    SERVER_OFF = 4  # gateway answered, device behind it did not (0x0A, 0x0B)
    ERR_REGISTER = 8  # any other Modbus exception response
    VALUE_NAN = 16  # decoded value is NaN or infinite
    LENREG_ZERO = 32  # fewer registers than requested (or none)
    DRIVER_NOT_FOUND = 64  # the device's profile could not be loaded
    # Not in the seed: read more than one period after its tick (a wall-clock step
    # forward, a paused VM or process): the value is real, but not of that tick's time.
    LATE = 128


# Modbus exception codes that mean "the gateway is fine, the device is not".
GATEWAY_EXCEPTIONS = frozenset({0x0A, 0x0B})

# idParam of the one row per tick written for a device whose profile is missing.
DRIVER_NOT_FOUND_PARAM = "100"


def code_for_exception_response(exception_code: int) -> Code:
    """Map a Modbus exception response code to its quality bit."""
    if exception_code in GATEWAY_EXCEPTIONS:
        return Code.SERVER_OFF
    return Code.ERR_REGISTER


def mark_late(samples: list, period_ms: float) -> list:
    """``samples`` with LATE set on those whose Delay exceeds one period."""
    late = int(Code.LATE)
    return [s._replace(code=s.code | late) if s.delay_ms > period_ms else s for s in samples]


def describe(code: int) -> str:
    """Human-readable names of the bits set in ``code`` ('ok' for 0)."""
    if not code:
        return "ok"
    return "|".join(bit.name.lower() for bit in Code if bit and code & bit)
