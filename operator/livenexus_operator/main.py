"""`livenexus-operator`: wait for the leader Lease, then run kopf with the TranscriptionRoom handlers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

import aiohttp
import kopf

from livenexus_common.cli import EXIT_ERROR, EXIT_FAILURE, EXIT_OK, run_until_stopped, setup_logging
from livenexus_operator import config, kube
from livenexus_operator.leader import FENCE, LeaseElector, LostLease
from livenexus_operator.metrics import METRICS, serve

log = logging.getLogger("livenexus_operator")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livenexus-operator", description=__doc__)
    p.add_argument(
        "--kubeconfig", help="kubeconfig outside a cluster (default: in-cluster, then $KUBECONFIG)"
    )
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--namespace", help="operator namespace (default: $LIVENEXUS_OPERATOR_NAMESPACE)")
    p.add_argument(
        "--watch-namespace",
        action="append",
        default=None,
        help="reconcile rooms only in this namespace (repeatable; default: all namespaces)",
    )
    p.add_argument("--no-leader-election", action="store_true", help="act without holding the Lease")
    p.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (0: off)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _kopf_alive(port: int) -> tuple[bool, str]:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return resp.status == 200, f"kopf liveness: HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"kopf liveness unreachable: {type(exc).__name__}"


async def run(cfg: config.OperatorConfig, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set (EXIT_OK) or leadership is lost (EXIT_FAILURE)."""
    import livenexus_operator.handlers  # noqa: F401  (registers the kopf handlers)

    state = {"leading": False, "kopf_started": False}

    async def health() -> tuple[bool, str]:
        # A standby replica is healthy by definition; the leader is as healthy as kopf says.
        if not state["kopf_started"]:
            return True, "standby" if cfg.leader_election else "starting"
        return await _kopf_alive(cfg.liveness_port)

    runner = await serve(METRICS, cfg.metrics_port, health, cfg.metrics_host) if cfg.metrics_port else None
    elector = LeaseElector(cfg.namespace, cfg.lease_name, cfg.identity) if cfg.leader_election else None
    FENCE.elector = elector  # status writes now need a live Lease (closed until acquire succeeds)
    keeper: asyncio.Task[None] | None = None
    try:
        if elector is not None:
            log.info("waiting for lease %s/%s as %s", cfg.namespace, cfg.lease_name, cfg.identity)
            if not await elector.acquire(stop):
                return EXIT_OK
            keeper = asyncio.create_task(elector.keep(stop))
        state["leading"] = True
        METRICS.leader.set(1)
        state["kopf_started"] = True
        operator = asyncio.create_task(
            kopf.operator(
                standalone=True,
                clusterwide=not cfg.watch_namespaces,
                namespaces=list(cfg.watch_namespaces),
                liveness_endpoint=f"http://127.0.0.1:{cfg.liveness_port}/healthz",
                stop_flag=stop,
            )
        )
        waiting: set[asyncio.Task[None]] = {operator} | ({keeper} if keeper else set())
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        code = EXIT_OK
        if keeper is not None and keeper in done and keeper.exception() is not None:
            exc = keeper.exception()
            log.error("%s: stopping so the new leader acts alone", exc)
            code = EXIT_FAILURE if isinstance(exc, LostLease) else EXIT_ERROR
        stop.set()
        await operator
        return code
    finally:
        stop.set()
        METRICS.leader.set(0)
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, LostLease):
                await keeper
        if elector is not None and state["leading"]:
            await elector.release()
        if FENCE.elector is elector:
            # This run's Lease no longer guards anything; an operator started later in the same process (tests,
            # embedders) brings its own.
            FENCE.elector = None
        if runner is not None:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config.OperatorConfig.from_env()
    if args.namespace:
        cfg.namespace = args.namespace
    if args.watch_namespace is not None:
        cfg.watch_namespaces = tuple(args.watch_namespace)
    if args.no_leader_election:
        cfg.leader_election = False
    if args.metrics_port is not None:
        cfg.metrics_port = args.metrics_port
    config.install(cfg)
    kube.configure(kube.load_default_config(args.kubeconfig, args.context))
    return run_until_stopped(lambda stop: run(cfg, stop))


if __name__ == "__main__":
    sys.exit(main())
