"""Opaque, time-ordered identifiers: a type prefix and a ULID-style body.

Time-ordered ids give cursor pagination a stable order that matches creation order.
"""

import os
import re
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_lock = threading.Lock()
_last = (0, 0)
ID_PATTERN = re.compile(r"^[a-z]{2,4}_[0-9a-hjkmnp-tv-z]{26}$")


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id; ids made later in this process always sort after earlier ones."""
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last
        if millis <= last_millis:
            millis, randomness = last_millis, last_random + 1
        else:
            randomness = int.from_bytes(os.urandom(10), "big") >> 1
        _last = (millis, randomness)
    return f"{prefix}_{_encode(millis, 10)}{_encode(randomness, 16)}"


def id_at(prefix: str, millis: int, tail: int) -> str:
    """An id made from given values: `millis` where `new_id` puts the time (so it sorts the
    same way) and `tail` (0 <= tail < 2**80) after it. The same values give the same id, for
    rows that are re-computed in place."""
    return f"{prefix}_{_encode(millis, 10)}{_encode(tail, 16)}"


def looks_like_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
