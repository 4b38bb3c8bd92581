"""Which rooms a visitor may join: a fixed list locally, the cluster's TranscriptionRooms in-cluster."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from livenexus_common.contract import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger("livenexus_console")


class RoomsUnavailable(RuntimeError):
    """The room list cannot be read right now (API server unreachable and nothing cached)."""


class RoomSource(Protocol):
    """Anything that can say which LiveKit rooms are open to the console."""

    async def rooms(self) -> tuple[str, ...]:
        """The joinable room names, sorted; raises :class:`RoomsUnavailable`."""
        ...


class StaticRooms:
    """A fixed allow-list (``--rooms demo,other``)."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = tuple(sorted(set(names)))

    async def rooms(self) -> tuple[str, ...]:
        return self._names


def room_names(items: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """LiveKit room names of TranscriptionRoom objects: ``spec.room``, else ``metadata.name``.

    Suspended rooms are left out: nobody transcribes them, so the console would only show silence.
    """
    names: set[str] = set()
    for item in items:
        spec = item.get("spec") or {}
        meta = item.get("metadata") or {}
        if not isinstance(spec, Mapping) or not isinstance(meta, Mapping):
            continue
        if spec.get("suspend") is True:
            continue
        name = spec.get("room") or meta.get("name")
        if isinstance(name, str) and name:
            names.add(name)
    return tuple(sorted(names))


Lister = Callable[[], Awaitable[list[Mapping[str, Any]]]]


def default_api() -> ApiClient:
    """In-cluster credentials when running in a pod (the console's ServiceAccount), else the kubeconfig."""
    from kubernetes.client import ApiClient, Configuration
    from kubernetes.config import ConfigException, load_incluster_config, load_kube_config

    cfg = Configuration()
    try:
        load_incluster_config(client_configuration=cfg)
    except ConfigException:
        load_kube_config(client_configuration=cfg)
    return ApiClient(cfg)


def kube_lister(namespace: str = "", api: ApiClient | None = None) -> Lister:
    """List TranscriptionRooms with ``api``, else with :func:`default_api` (made at the first listing).

    The Kubernetes client is imported only here: a console serving a fixed room list never loads it.
    """
    clients: list[ApiClient] = [api] if api is not None else []

    def get() -> Any:
        from kubernetes.client import CustomObjectsApi

        if not clients:
            clients.append(default_api())
        objects = CustomObjectsApi(clients[0])
        if namespace:
            return objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _request_timeout=30)
        return objects.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=30)

    async def list_rooms() -> list[Mapping[str, Any]]:
        body = await asyncio.to_thread(get)
        items = body.get("items", []) if isinstance(body, Mapping) else []
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []

    return list_rooms


class KubeRooms:
    """TranscriptionRoom names, listed at most once per ``ttl_s`` (concurrent callers share one request).

    When a refresh fails the previous listing is served (and the failure logged) so that a flapping API
    server does not lock visitors out; with no previous listing :class:`RoomsUnavailable` is raised.
    """

    def __init__(self, lister: Lister, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lister = lister
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[str, ...] | None = None
        self._stamp = 0.0
        self._lock = asyncio.Lock()

    async def rooms(self) -> tuple[str, ...]:
        if self._cached is not None and self._clock() - self._stamp < self._ttl_s:
            return self._cached
        async with self._lock:
            if self._cached is not None and self._clock() - self._stamp < self._ttl_s:
                return self._cached
            try:
                self._cached = room_names(await self._lister())
            except Exception as exc:
                if self._cached is None:
                    raise RoomsUnavailable(f"cannot list TranscriptionRooms: {exc}") from exc
                log.warning("listing TranscriptionRooms failed, serving the previous list: %s", exc)
            self._stamp = self._clock()
            return self._cached
