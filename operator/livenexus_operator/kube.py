"""Kubernetes API access shared by the handlers, kopf's login and the leader election.

One ``kubernetes.client.Configuration`` is the source of credentials for both the sync client (our
own calls, run in threads) and kopf (via :func:`connection_info`), so a test that installs a
ServiceAccount token makes *every* request of the operator run under that account's RBAC.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import kubernetes
import urllib3
from kubernetes.client import ApiClient, Configuration

FIELD_MANAGER = "livenexus-operator"
API_THREADS = 16
"""Threads that carry the operator's own API calls (the client is synchronous). A pool of its own: asyncio's
default one has cpu+4 threads (6 on 2 cores), shared with anything else that uses to_thread, which left
1,000 rooms' refreshes queued behind each other."""

_EXECUTOR = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="livenexus-kube")
_config: Configuration | None = None
_client: ApiClient | None = None


class NotFound(LookupError):
    """The object does not exist (HTTP 404)."""


def load_default_config(kubeconfig: str | None = None, context: str | None = None) -> Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (``$KUBECONFIG``/~/.kube/config)."""
    cfg = Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return cfg


def token_config(server: str, token: str, ca_path: str | None) -> Configuration:
    """Bearer-token credentials (a ServiceAccount token from the TokenRequest API, in tests)."""
    cfg = Configuration()
    cfg.host = server
    cfg.api_key = {"authorization": f"Bearer {token}"}
    if ca_path:
        cfg.ssl_ca_cert = ca_path
    else:
        cfg.verify_ssl = False
    return cfg


def configure(cfg: Configuration) -> None:
    """Install the credentials every later call uses."""
    global _config, _client
    # One pooled connection per thread; urllib3 would otherwise drop and reopen connections beyond its default.
    cfg.connection_pool_maxsize = max(int(cfg.connection_pool_maxsize or 0), API_THREADS)
    _config = cfg
    _client = ApiClient(cfg)


def client() -> ApiClient:
    if _client is None:
        configure(load_default_config())
    assert _client is not None
    return _client


def connection_info() -> kopf.ConnectionInfo:
    """kopf's view of the same credentials."""
    client()
    cfg = _config
    assert cfg is not None
    refresh = getattr(cfg, "refresh_api_key_hook", None)
    if refresh is not None:
        refresh(cfg)  # in-cluster projected tokens rotate; re-read before handing them to kopf
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken") or ""
    prefix = (cfg.api_key_prefix or {}).get("authorization", "")
    scheme, token = None, None
    if auth:
        full = f"{prefix} {auth}".strip() if prefix else auth
        scheme, _, token = full.partition(" ")
        if not token:
            scheme, token = "Bearer", full
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        username=cfg.username or None,
        password=cfg.password or None,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
    )


class ApiError(RuntimeError):
    """A non-2xx answer; ``status`` is the HTTP code and ``message`` the API server's explanation."""

    def __init__(self, status: int, message: str, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".strip())
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after
        """Seconds the API server asked us to wait (Retry-After), None when it did not say."""


MAX_RETRY_AFTER_S = 300.0
"""Cap on a server-sent Retry-After: a hostile or broken proxy must not park the operator for hours."""


def parse_retry_after(raw: str | None) -> float | None:
    """Retry-After in delta-seconds (the form the API server sends), bounded; None when absent or unusable."""
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None  # the HTTP-date form is never sent by kube-apiserver; treat it as absent
    if value != value or value < 0:  # NaN or negative
        return None
    return min(value, MAX_RETRY_AFTER_S)


def transient(exc: BaseException) -> bool:
    """True for failures a later retry can fix on its own: 429, 5xx, a dropped or refused connection."""
    if isinstance(exc, ApiError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError, TimeoutError))


class Conflict(ApiError):
    """HTTP 409: the object changed since it was read (optimistic concurrency) or already exists."""


def call(
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = None,
    query: list[tuple[str, Any]] | None = None,
    api: ApiClient | None = None,
) -> dict[str, Any]:
    """One synchronous API call with the operator's credentials (or ``api``'s); raises NotFound on 404."""
    api = api or client()
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    elif body is not None:
        headers["Content-Type"] = "application/json"
    _, url, headers, body, _ = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
    data = resp.read()
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        payload = {"message": data.decode(errors="replace")}
    if 200 <= resp.status < 300:
        return payload if isinstance(payload, dict) else {}
    message = str(payload.get("message", "")) if isinstance(payload, dict) else ""
    reason = str(payload.get("reason", "")) if isinstance(payload, dict) else ""
    if resp.status == 404:
        raise NotFound(f"{method} {path}: {message}")
    if resp.status == 409:
        raise Conflict(resp.status, message, reason)
    raise ApiError(resp.status, message, reason, parse_retry_after(resp.getheader("Retry-After")))


async def request(
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = None,
    query: list[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """One API call in a worker thread (the client is synchronous); raises NotFound on 404."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, functools.partial(call, method, path, body, content_type, query))


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    plural = {
        "Deployment": "deployments",
        "Service": "services",
        "Secret": "secrets",
        "ConfigMap": "configmaps",
        "Lease": "leases",
        "Event": "events",
        "TranscriptionRoom": "transcriptionrooms",
    }[kind]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}/{name}"


async def apply(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply (create or update to exactly this desired state), forcing our ownership."""
    meta = obj["metadata"]
    path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
    return await request(
        "PATCH",
        path,
        body=dict(obj),
        content_type="application/apply-patch+yaml",
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
    )


async def patch_status(path: str, status: Mapping[str, Any], resource_version: str) -> dict[str, Any]:
    """Merge-patch the status subresource only if the object is still at ``resource_version``.

    The API server checks metadata.resourceVersion in a patch as a precondition (409 when it moved), so a
    status computed from a read that someone has since overtaken (a new leader, a spec change, another
    write of ours) is refused instead of landing over newer data.
    """
    if not resource_version:
        raise ValueError("a status write needs the resourceVersion it was computed from")
    body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
    return await request("PATCH", path + "/status", body=body, content_type="application/merge-patch+json")


async def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return await request("GET", object_path(api_version, kind, namespace, name))


async def post_event(
    obj: Mapping[str, Any], warning: bool, reason: str, message: str, component: str = FIELD_MANAGER
) -> None:
    """Record a core/v1 Event on ``obj``; best effort (an Event must never fail a reconcile)."""
    meta = obj.get("metadata") or {}
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await request("POST", f"/api/v1/namespaces/{meta.get('namespace')}/events", body=event)
    except Exception as exc:
        logging.getLogger(__name__).warning("could not record event %s on %s: %s", reason, meta.get("name"), exc)
