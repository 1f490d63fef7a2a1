"""Which arm a session sees: a hash of the experiment and the session id, read as a number in
[0, 1), falls into one arm's slice of the shares. The same session always gets the same arm
of an experiment (every process, every restart), and another experiment reshuffles."""

from __future__ import annotations

import hashlib

from fashion_search.experiments.design import Arm, Design

#: Bits of the hash read as the session's position in [0, 1).
_BITS = 64


def position(experiment_id: int, session_id: str) -> float:
    """The session's place in [0, 1) for this experiment (uniform over sessions)."""
    digest = hashlib.sha256(f"{experiment_id}:{session_id}".encode()).digest()
    return float(int.from_bytes(digest[: _BITS // 8], "big") / 2**_BITS)


def assign(experiment_id: int, design: Design, session_id: str) -> Arm:
    """The arm ``session_id`` sees in experiment ``experiment_id``."""
    place, edge = position(experiment_id, session_id), 0.0
    for arm in design.arms:
        edge += arm.share
        if place < edge:
            return arm
    return design.arms[-1]  # shares sum to 1 up to rounding
