"""The webhook sink: every final POSTed, signed, to the room's endpoint, at least once, in order.

One task on the agent's event loop sends one final at a time (the room's own publishing never waits for
it). A final is retried with jittered exponential backoff on 5xx, 408, 429 (``Retry-After`` honoured up to
``max_backoff_s``), timeouts and connection errors, with the same body and idempotency key each time; other
4xx and 3xx (redirects are never followed: the admitted host is the only one that gets transcripts) are
final answers, counted as ``rejected`` and logged. The response body is never read beyond a small bound: a
hostile receiver cannot make the worker buffer it.

The queue is bounded (``max_queue``). When it is full a final is not dropped silently: it is counted as
``overflow``, logged as an error and handed to ``spill`` (the file sink's undelivered file when one exists).
:meth:`close` keeps delivering until its timeout, then spills what is left the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from livenexus_common.sinks import IDEMPOTENCY_HEADER, SinkRecord, record_bytes, sign
from livenexus_worker.room.tasks import finish

log = logging.getLogger(__name__)

_MAX_BODY_READ = 64 * 1024  # a response body up to this is read (keeps the connection reusable); else closed
_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class WebhookOptions:
    """Endpoint, key and bounds."""

    url: str
    """Validated endpoint (``livenexus_common.sinks.webhook_url_problem``)."""
    key: bytes = field(repr=False)
    """HMAC-SHA256 key (never logged)."""
    timeout_s: float = 5.0
    """Per POST, connect to response headers."""
    max_queue: int = 1000
    """Finals waiting at most (the one in flight not counted)."""
    initial_backoff_s: float = 0.5
    """First retry delay; doubles per failed attempt of the same final."""
    max_backoff_s: float = 30.0
    """Cap of the retry delay and of an honoured Retry-After."""
    jitter: float = 0.5
    """Fraction of each delay that is random."""


@dataclass
class _Item:
    record: SinkRecord
    body: bytes
    queued_at: float
    attempts: int = 0


class _Verdict:
    DELIVERED = "delivered"
    REJECTED = "rejected"
    RETRY = "retry"


class WebhookSink:
    """:meth:`submit` from the event loop (never blocks); :meth:`start` once; :meth:`close` at shutdown."""

    def __init__(self, options: WebhookOptions, *, on_result: Callable[[str, int], None] | None = None,
                 on_retry: Callable[[], None] | None = None, on_depth: Callable[[int], None] | None = None,
                 on_latency: Callable[[float], None] | None = None,
                 spill: Callable[[SinkRecord], bool] | None = None, rng: random.Random | None = None) -> None:
        self.options = options
        self._on_result = on_result or (lambda result, n: None)
        self._on_retry = on_retry or (lambda: None)
        self._on_depth = on_depth or (lambda n: None)
        self._on_latency = on_latency or (lambda s: None)
        self._spill = spill
        self._rng = rng or random.Random()
        self._items: deque[_Item] = deque()
        self._inflight: _Item | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_warn = -_LOG_EVERY_S
        self.results: dict[str, int] = {"delivered": 0, "rejected": 0, "overflow": 0, "failed": 0}
        self.retries = 0
        self.spilled = 0

    @property
    def depth(self) -> int:
        return len(self._items) + (1 if self._inflight is not None else 0)

    def start(self) -> WebhookSink:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="livenexus-webhook-sink")
        return self

    def submit(self, record: SinkRecord) -> bool:
        """Queue one final; False when the queue was full (then it was counted, logged and spilled)."""
        if self._closing or len(self._items) >= self.options.max_queue:
            self._count("overflow")
            where = self._give_up(record)
            log.error("final %s of %s NOT sent to the webhook: %d finals already wait (the receiver is down or "
                      "too slow); %s", record["id"], record["speaker"], len(self._items), where)
            return False
        self._items.append(_Item(record, record_bytes(record), time.monotonic()))
        self._on_depth(self.depth)
        self._wake.set()
        return True

    async def close(self, timeout: float) -> int:
        """Deliver what is queued within ``timeout``, then stop; returns the finals left (spilled, logged)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await finish(self._task, timeout)
            self._task = None
        left = [*([self._inflight] if self._inflight is not None else []), *self._items]
        self._inflight = None
        self._items.clear()
        self._on_depth(0)
        spilled = sum(1 for it in left if self._spill is not None and self._spill(it.record))
        self.spilled += spilled
        if left:
            self._count("failed", len(left))
            log.error("%d final(s) NOT delivered to the webhook before the shutdown deadline; %d written to the "
                      "undelivered file, %d only counted (ids: %s)", len(left), spilled, len(left) - spilled,
                      ", ".join(it.record["id"] for it in left[:20]) + (" ..." if len(left) > 20 else ""))
        return len(left)

    # ---- sender ------------------------------------------------------------------------------------------
    def _count(self, result: str, n: int = 1) -> None:
        self.results[result] += n
        self._on_result(result, n)

    def _give_up(self, record: SinkRecord) -> str:
        if self._spill is not None and self._spill(record):
            self.spilled += 1
            return "written to the undelivered file"
        return "no file sink to keep it (spec.sinks.file)"

    async def _run(self) -> None:
        # No cookies, no proxies from the environment, no redirects: transcripts go to the admitted host only.
        connector = aiohttp.TCPConnector(limit=1, ttl_dns_cache=30)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                         trust_env=False) as session:
            while True:
                if not self._items:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._inflight = self._items.popleft()
                await self._deliver(session, item)
                self._inflight = None
                self._on_depth(self.depth)

    async def _deliver(self, session: aiohttp.ClientSession, item: _Item) -> None:
        delay = self.options.initial_backoff_s
        while True:
            if item.attempts:
                self.retries += 1
                self._on_retry()
            item.attempts += 1
            verdict, retry_after, why = await self._attempt(session, item)
            if verdict == _Verdict.DELIVERED:
                self._count("delivered")
                self._on_latency(time.monotonic() - item.queued_at)
                return
            if verdict == _Verdict.REJECTED:
                self._count("rejected")
                log.error("webhook refused final %s (%s); not retried", item.record["id"], why)
                return
            wait = min(self.options.max_backoff_s, delay) * (1.0 - self.options.jitter * self._rng.random())
            if retry_after is not None:
                wait = min(self.options.max_backoff_s, max(wait, retry_after))
            delay = min(self.options.max_backoff_s, delay * 2)
            self._warn("webhook delivery of final %s failed (%s); attempt %d, retrying in %.1fs",
                       item.record["id"], why, item.attempts, wait)
            await asyncio.sleep(wait)  # close() cancels it when its timeout is due

    async def _attempt(self, session: aiohttp.ClientSession, item: _Item) -> tuple[str, float | None, str]:
        o = self.options
        headers = {"Content-Type": "application/json", "User-Agent": "livenexus-worker",
                   IDEMPOTENCY_HEADER: item.record["id"], **sign(o.key, item.body)}
        try:
            async with session.post(o.url, data=item.body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=o.timeout_s)) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                if resp.content_length is not None and resp.content_length <= _MAX_BODY_READ:
                    await resp.read()  # small: read it so the connection can be reused
                else:
                    resp.close()  # unknown or large: drop the connection rather than read it
        except TimeoutError:
            return _Verdict.RETRY, None, f"no response within {o.timeout_s:g}s"
        except aiohttp.ClientError as exc:
            return _Verdict.RETRY, None, f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return _Verdict.DELIVERED, None, ""
        if status in (408, 429) or status >= 500:
            return _Verdict.RETRY, retry_after, f"HTTP {status}"
        if 300 <= status < 400:
            return _Verdict.REJECTED, None, f"HTTP {status} redirect, not followed"
        return _Verdict.REJECTED, None, f"HTTP {status}"

    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warn >= _LOG_EVERY_S:
            self._last_warn = now
            log.warning(msg, *args)


def _retry_after(raw: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds only; an HTTP date is ignored)."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 9:
        return None
    return float(raw)
