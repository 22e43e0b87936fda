"""HubSpot's rate-limit headers, read into the shared limiter.

HubSpot answers ``X-HubSpot-RateLimit-Max`` / ``-Remaining`` / ``-Interval-Milliseconds`` and
``-Secondly`` / ``-Secondly-Remaining`` on every call (https://developers.hubspot.com/docs/api/usage-details);
a 429 carries ``Retry-After``. The generic ``X-RateLimit-*`` headers are read too.
"""

from __future__ import annotations

import httpx

from sync_worker.ratelimit import Observation, number_header, read_headers, scaled_max

__all__ = ["read_limits"]


def read_limits(headers: httpx.Headers, window_seconds: float, now_epoch: float) -> Observation:
    """What HubSpot's headers say for a bucket of ``window_seconds`` (a lower max, or a block)."""
    generic = read_headers(headers, window_seconds, now_epoch=now_epoch)
    interval_ms = number_header(headers, "x-hubspot-ratelimit-interval-milliseconds")
    interval = interval_ms / 1000 if interval_ms else window_seconds
    maxima = [
        m
        for m in (
            generic.max_requests,
            scaled_max(number_header(headers, "x-hubspot-ratelimit-max"), interval, window_seconds),
        )
        if m is not None
    ]
    blocks = [b for b in (generic.block_seconds,) if b is not None]
    if number_header(headers, "x-hubspot-ratelimit-remaining") == 0:
        blocks.append(interval)
    if number_header(headers, "x-hubspot-ratelimit-secondly-remaining") == 0:
        blocks.append(1.0)
    positive = [b for b in blocks if b > 0]
    return Observation(min(maxima) if maxima else None, max(positive) if positive else None)
