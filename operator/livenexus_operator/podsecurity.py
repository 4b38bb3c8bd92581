"""The worker pod's security contexts: fixed, and chart values may only tighten them.

Fixed: non-root (uid 10001), read-only root filesystem, no privilege escalation, not privileged, every
capability dropped, seccomp and AppArmor ``RuntimeDefault``. Values may pick other non-zero ids and set
fields that only restrict further; every other field (``seLinuxOptions`` can name ``spc_t``,
``windowsOptions`` a host process, ``sysctls``, ``procMount: Unmasked``, a ``Localhost`` or
``Unconfined`` profile, added capabilities, …) is refused with the field named, instead of being
silently dropped or passed through. The chart's schema refuses the same values at ``helm install``; this
is the second line for a ConfigMap edited by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from livenexus_operator.spec import SpecError

POD_SECURITY_DEFAULTS: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}

CONTAINER_SECURITY_DEFAULTS: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

_Check = Callable[[Any], bool]


def _id(value: Any) -> bool:
    # uid/gid 0 is root; the worker image's files are readable by any non-root id.
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**31 - 1


def _is(expected: Any) -> _Check:
    return lambda value: value == expected


def _runtime_default(value: Any) -> bool:
    return isinstance(value, Mapping) and dict(value) == {"type": "RuntimeDefault"}


def _drop_all(value: Any) -> bool:
    if not isinstance(value, Mapping) or set(value) - {"drop", "add"}:
        return False
    drop, add = value.get("drop", ["ALL"]), value.get("add") or []
    return isinstance(drop, list) and "ALL" in drop and add == []


_POD: dict[str, _Check] = {
    "runAsNonRoot": _is(True),
    "runAsUser": _id,
    "runAsGroup": _id,
    "fsGroup": _id,
    "supplementalGroups": lambda v: isinstance(v, list) and len(v) <= 32 and all(_id(g) for g in v),
    "fsGroupChangePolicy": lambda v: v in ("OnRootMismatch", "Always"),
    "seccompProfile": _runtime_default,
    "appArmorProfile": _runtime_default,
}

_CONTAINER: dict[str, _Check] = {
    "runAsNonRoot": _is(True),
    "runAsUser": _id,
    "runAsGroup": _id,
    "allowPrivilegeEscalation": _is(False),
    "readOnlyRootFilesystem": _is(True),
    "privileged": _is(False),
    "capabilities": _drop_all,
    "procMount": _is("Default"),
    "seccompProfile": _runtime_default,
    "appArmorProfile": _runtime_default,
}


def _checked(kind: str, raw: Mapping[str, Any], allowed: Mapping[str, _Check]) -> dict[str, Any]:
    for key, value in raw.items():
        check = allowed.get(key)
        if check is None:
            raise SpecError(
                f"worker.{kind}.{key} is not allowed: only {', '.join(sorted(allowed))} may be set, "
                "and only to values that keep the pod locked down"
            )
        if not check(value):
            raise SpecError(f"worker.{kind}.{key}={value!r} would loosen the worker pod's security; refused")
    return copy.deepcopy(dict(raw))


def security_contexts(
    pod_values: Mapping[str, Any], container_values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, container) securityContext: values over the defaults, each value checked to only tighten."""
    pod = {**POD_SECURITY_DEFAULTS, **_checked("podSecurityContext", pod_values, _POD)}
    container = {**CONTAINER_SECURITY_DEFAULTS, **_checked("securityContext", container_values, _CONTAINER)}
    # Whatever subset of drop values listed, ALL is what the pod gets (a longer list changes nothing).
    container["capabilities"] = {"drop": ["ALL"]}
    return pod, container
