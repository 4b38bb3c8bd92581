"""The transcript-delivery contract: what a room's sinks receive, how a webhook receiver checks it, and the
names the operator and the worker share for it (environment, metrics).

A *final* leaves the worker as one :class:`SinkRecord` (JSON object). Its ``id`` is the idempotency key:
the same final always carries the same key (every retry, the webhook and the file alike), and two finals
never share one, so a receiver that stores ``id`` once gets every final exactly once out of at-least-once
delivery.

Webhook signature (Stripe/Svix style; :func:`sign`, :func:`verify`)::

    X-LiveNexus-Timestamp: <unix seconds>
    X-LiveNexus-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>." + raw body)>
    Idempotency-Key: <record id>

A receiver recomputes the HMAC over the raw bytes it received, compares in constant time and refuses a
timestamp older than its tolerance (replays). Only the standard library is imported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Final, TypedDict


class SinkEnv:
    """Names of the worker's sink settings (the operator renders them from spec.sinks)."""

    WEBHOOK_URL: Final = "LIVENEXUS_SINK_WEBHOOK_URL"
    """Endpoint that receives one signed POST per final; unset: no webhook."""
    WEBHOOK_SECRET: Final = "LIVENEXUS_SINK_WEBHOOK_SECRET"
    """HMAC key (a secretKeyRef in the pod; never logged). Required with a URL."""
    WEBHOOK_TIMEOUT_S: Final = "LIVENEXUS_SINK_WEBHOOK_TIMEOUT_S"
    """Per POST, connect to response headers."""
    WEBHOOK_MAX_QUEUE: Final = "LIVENEXUS_SINK_WEBHOOK_MAX_QUEUE"
    """Finals waiting for delivery at most."""
    WEBHOOK_ALLOW_HTTP: Final = "LIVENEXUS_SINK_WEBHOOK_ALLOW_HTTP"
    """``1`` when the operator admitted a plain http:// URL (admin-listed in-cluster/loopback host)."""
    FILE_DIR: Final = "LIVENEXUS_SINK_FILE_DIR"
    """Directory of the room's JSONL file (``/transcripts/<namespace>``); unset: no file sink."""
    FILE_MAX_BYTES: Final = "LIVENEXUS_SINK_FILE_MAX_BYTES"
    """Size at which the JSONL file is rotated to ``<room>.<n>.jsonl``."""


SINK_ENV: Final = frozenset(v for k, v in vars(SinkEnv).items() if k.isupper())
"""Every sink variable (the operator owns them: a room's extraEnv may not shadow them)."""


class SinkMetric:
    """Names of the delivery series on the worker's /metrics."""

    DELIVERIES: Final = "livenexus_sink_deliveries_total"
    """Counter of finals by ``sink`` (:data:`SINK_NAMES`) and ``result`` (:data:`SINK_RESULTS`)."""
    QUEUE_DEPTH: Final = "livenexus_sink_queue_depth"
    """Gauge of finals waiting for the webhook."""
    RETRIES: Final = "livenexus_sink_retries_total"
    """Counter of webhook attempts after the first of a final."""
    DELIVERY_SECONDS: Final = "livenexus_sink_delivery_seconds"
    """Histogram: final handed to the sink → receiver acknowledged it (retries included)."""


SINK_NAMES: Final = ("webhook", "file")
SINK_RESULTS: Final = ("delivered", "rejected", "overflow", "failed")
"""delivered: acknowledged (2xx) / written; rejected: a 4xx the receiver will not change its mind about;
overflow: the webhook queue was full (spilled to the file when enabled); failed: given up at shutdown or the
file could not be written."""

SIGNATURE_HEADER: Final = "X-LiveNexus-Signature"
TIMESTAMP_HEADER: Final = "X-LiveNexus-Timestamp"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
SIGNATURE_VERSION: Final = "v1"
DEFAULT_TOLERANCE_S: Final = 300.0
"""What :func:`verify` accepts as clock skew plus delivery delay by default (Stripe's figure)."""

# Same narrow grammar as the operator's LiveKit URL check: no user info, escapes or backslashes in the
# authority, which different URL parsers read differently.
_URL = re.compile(
    r"^(?P<scheme>https?)://"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[^\s\\]*)?$"
)
_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class SinkRecord(TypedDict):
    """One final as a sink receives it: a webhook POST body, a line of the JSONL file."""

    type: str
    """Always ``"final"``."""
    id: str
    """Idempotency key (:func:`idempotency_key`)."""
    room: str
    """LiveKit room."""
    streamId: str
    """Audio track sid."""
    segmentId: str
    """Utterance id (the room's transcript messages carry the same one)."""
    speaker: str
    """Participant identity."""
    start: float
    """Utterance start, seconds of stream time."""
    end: float
    """Utterance end, seconds of stream time."""
    text: str
    """The final text."""
    language: str
    """Language code."""
    tier: str
    """Tier that decoded it."""
    emittedAt: float
    """Unix time the worker produced it (not of the delivery)."""


def idempotency_key(room: str, stream_id: str, segment_id: str) -> str:
    """Stable per final: sha256 of room, stream and segment id (segment ids carry the worker run's id)."""
    raw = "\0".join((room, stream_id, segment_id)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


def sink_record(*, room: str, stream_id: str, segment_id: str, speaker: str, start: float, end: float,
                text: str, language: str, tier: str, emitted_at: float) -> SinkRecord:
    return {
        "type": "final", "id": idempotency_key(room, stream_id, segment_id), "room": room, "streamId": stream_id,
        "segmentId": segment_id, "speaker": speaker, "start": round(start, 3), "end": round(end, 3), "text": text,
        "language": language, "tier": tier, "emittedAt": round(emitted_at, 3),
    }


def record_bytes(record: SinkRecord) -> bytes:
    """The exact bytes sent and signed (and written as one JSONL line, without the newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def sign(key: bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The signature headers of ``body`` (``timestamp``: unix seconds, default now)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: f"{SIGNATURE_VERSION}={mac}"}


def verify(key: bytes, body: bytes, timestamp: str, signature: str, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """What a receiver does: True when ``signature`` is ours over ``timestamp.body`` and the timestamp is fresh.

    ``signature`` may list several ``v1=`` values separated by spaces (a key rotation signs with both).
    """
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    want = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    given = [p.split("=", 1)[1] for p in signature.split() if p.startswith(f"{SIGNATURE_VERSION}=")]
    return any(hmac.compare_digest(want, g) for g in given)


def webhook_url_problem(url: str, *, allow_http: bool = False) -> str | None:
    """Why the worker may not POST to ``url``; None when it may. Host policy is the operator's (room policy)."""
    m = _URL.match(url)
    if m is None or len(url) > 2048:
        return (f"webhook URL {url!r} is not a plain http(s)://host[:port][/path] URL (no user info, "
                "percent-escapes or backslashes before the path, at most 2048 characters)")
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        return f"webhook URL {url!r} has an invalid port"
    if m["scheme"] == "http" and not allow_http:
        return (f"webhook URL {url!r} is not encrypted: use https:// (an admin may allow http:// to an "
                "in-cluster or loopback host with operator.roomPolicy.livekit.insecureHosts)")
    return None


def transcript_file_name(room: str) -> str:
    """``<room>.jsonl`` when the room name is a safe file name, else a safe stand-in with a hash (a room name
    is chosen by whoever creates the room: ``../x`` or ``a/b`` must not leave the directory)."""
    safe = _FILE_SAFE.sub("-", room).strip(".-")[:100]
    if safe == room and safe:
        return f"{room}.jsonl"
    digest = hashlib.sha256(room.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe or 'room'}-{digest}.jsonl"
