"""Tunables of pulls and pushes, with defaults that suit a real network.

Tests shrink the timeouts and backoffs; benchmarks may change the stream counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MB = 1_000_000
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class TransferOptions:
    # Parallel Range streams per blob. More streams than this rarely help one client and
    # they cost the registry; work stealing keeps them busy to the last byte.
    connections: int = 8
    # Streams across every download of this process (a bounded pool, so ten pulls at once
    # do not open eighty connections).
    max_connections: int = 16
    # Initial layout: about `initial_parts` parts, each within [min, max]. Workers take parts
    # lowest first, so with many small parts every stream works near the start of what is
    # missing: the downloaded prefix (what the hasher can read) grows steadily instead of in
    # jumps, and little is left to hash when the last byte lands. Stealing splits the tail.
    initial_parts: int = 256
    min_part_size: int = 16 * MiB
    max_part_size: int = 1000 * MB
    # When set, the last `connections` parts' worth of a fresh plan is cut into parts of this
    # size: the streams then finish close together and in order, so the hashed prefix is
    # this much per stream behind the last byte instead of a whole part per stream (what a
    # relay waits for before it may send the last byte; the mirror sets it). 0: off.
    tail_part_size: int = 0
    # A part is split for an idle stream only if at least twice this much of it is left.
    steal_min: int = 2 * MiB
    # One GET asks for about `request_seconds` of that stream's recent speed, within
    # [min_request, max_request]: long enough that request turnarounds cost little, short
    # enough that a steal rarely lands inside a range already asked for (whose bytes the
    # registry would send in vain).
    request_seconds: float = 2.0
    min_request: int = 4 * MiB
    max_request: int = 64 * MiB
    # An attempt with no byte for this long is abandoned and restarted (not counted as a
    # failure, as ollama does); a part that keeps stalling fails after `max_stalls`.
    stall_timeout: float = 30.0
    max_stalls: int = 20
    # Failed attempts per part (reset whenever an attempt made progress), with jittered
    # exponential backoff base * 2**try, capped.
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    # How often a part's state file is rewritten while its bytes flow: what a SIGKILL can
    # cost is about this many seconds of transfer.
    persist_interval: float = 0.1
    # The longest wait for a request without a body to stream (manifest, HEAD, token, upload
    # start and commit: a commit may hash a large blob before it answers).
    control_timeout: float = 300.0
    # How often progress events are emitted per blob while bytes move.
    progress_interval: float = 0.1
    # Push: part sizes as ollama's uploader (decimal MB, total/16 clamped).
    upload_parts: int = 16
    min_upload_part_size: int = 100 * MB
    max_upload_part_size: int = 1000 * MB
    # Redirect mode (307 on PATCH): part bodies sent to their presigned URLs at once.
    upload_connections: int = 8

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based), jittered x0.5..1.5."""
        delay = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return delay * random.uniform(0.5, 1.5)
