"""The Lua script that decides one call for both dimensions, in one round trip, on Redis's own clock.

The memory limiter's sliding logs, kept in Redis: one sorted set per key and one per brand, each member one
admitted call, scored by the time Redis admitted it (`TIME`, in microseconds). Redis runs a script alone,
so reading both logs and appending to both is one atomic step for every process sharing the Redis: no
rolling window ever admits more than N, and a call refused by either dimension is appended to neither.

Why this shape:

- Redis's clock, not the callers': processes on different machines, with clocks apart, stamp every entry
  alike, and nothing a caller sends can move a window.
- Both keys carry the brand as their hash tag (`<prefix>{<brand>}:...`), so they lie in one Redis Cluster
  slot and a cluster can run the script; a key belongs to one brand, so its log can live in the brand's slot.
- One `EVALSHA` per call (the script is sent whole, once, only when Redis answers NOSCRIPT).
- Each log expires (`PEXPIRE`) a window after its newest entry, when none of it counts any more: idle keys
  and brands cost Redis nothing.
- A lowered limit (a config reload) drops the oldest entries beyond it, as the memory limiter does.

KEYS: the key's log, the brand's log. ARGV: the key's count and window (µs), the brand's count and window
(µs), and a member unique to this call (two calls in one microsecond must not collapse into one entry).
Reply: `{1}` admitted; `{0, wait_us, dimension}` refused, `dimension` 1 for the key and 2 for the brand,
the one whose wait is longer (the key on a tie, as the memory limiter decides).
"""

from __future__ import annotations

import hashlib

from qaqnuz import Admission

SCRIPT = """\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local waits = {}
for i = 1, 2 do
  local count = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local n = redis.call('ZCARD', KEYS[i])
  if n > count then
    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, n - count - 1)
    n = count
  end
  if n >= count then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    waits[i] = tonumber(oldest[2]) + window - now
  end
end
if waits[1] or waits[2] then
  local key_wait = waits[1] or -1
  local brand_wait = waits[2] or -1
  if brand_wait > key_wait then
    return {0, brand_wait, 2}
  end
  return {0, key_wait, 1}
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[5])
  local ttl = math.ceil(tonumber(ARGV[2 * i]) / 1000)
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return {1}
"""

SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
_ADMITTED = Admission(True)


def keys(prefix: str, key_id: str, brand: str) -> tuple[str, str]:
    """The key's and the brand's log: one hash tag, the brand, so one Cluster slot."""
    return f"{prefix}{{{brand}}}:key:{key_id}", f"{prefix}{{{brand}}}:brand"


def micros(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def decode(reply: object) -> Admission:
    """The script's reply as an `Admission`; anything else is an error (the call fails closed)."""
    if isinstance(reply, list) and reply:
        if reply[0] == 1 and len(reply) == 1:
            return _ADMITTED
        if reply[0] == 0 and len(reply) == 3 and isinstance(reply[1], int) and reply[2] in (1, 2):
            wait_ms = max(1, -(-reply[1] // 1000))  # whole milliseconds, rounded up: never a hint too early
            return Admission(False, wait_ms, "brand" if reply[2] == 2 else "key")
    raise ValueError("the limiter script gave an unexpected reply")
