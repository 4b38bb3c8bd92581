"""TranscriptionPolicies against the real servers: kube-apiserver (+ controller-manager for garbage collection),
livekit-server posting its webhooks to the in-process operator on 127.0.0.1, and a worker run as a local
process from the Deployment the operator rendered (the real node is not used).

- webhooks alone (the resync runs once, at start): a participant joins (no worker: scale to zero), publishes
  speech → TranscriptionRoom + Deployment → the worker joins and a partial reaches the room → the participant
  leaves → after the grace period both are gone; a forged webhook is refused and counted;
- webhooks lost (no endpoint at all): resync alone creates, and deletes when the room ends;
- a burst of 200 rooms (correctly signed synthetic webhooks) converges and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from google.protobuf.json_format import MessageToJson
from kopf.testing import KopfRunner
from livekit import api, rtc

from livenexus_common.contract import DATA_TOPIC, Env
from livenexus_dev.livekit_server import LiveKitServer, free_port
from livenexus_operator import config, kube
from livenexus_operator.dispatch import POLICY_LABEL
from livenexus_operator.metrics import METRICS
from livenexus_operator.webhooks import PATH
from tests.operator.clusterlib import (
    Cluster,
    MetricsBoard,
    Release,
    apply,
    output_of,
    secret_manifest,
)

pytestmark = [pytest.mark.kube, pytest.mark.livekit]
T = TypeVar("T")
ROOMS = "/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionrooms"


@pytest.fixture
def hook_port() -> int:
    return free_port()


@pytest.fixture
def lk(hook_port: int) -> Iterator[LiveKitServer]:
    """A livekit-server of this test whose webhooks go to the operator's endpoint on ``hook_port``."""
    server = LiveKitServer(webhook_urls=(f"http://127.0.0.1:{hook_port}{PATH}",)).start()
    yield server
    server.stop()


def operator(release: Release, board: MetricsBoard, ns: str, server: LiveKitServer, webhook_port: int,
             resync_s: float) -> KopfRunner:
    config.install(config.OperatorConfig(
        namespace=release.namespace, template_configmap=release.template_configmap, status_interval_s=1.0,
        retry_delay_s=2.0, metrics_url=board.url, leader_election=False, metrics_port=0,
        livekit_url=server.url.replace("ws://", "http://"), livekit_api_key=server.api_key,
        livekit_api_secret=server.api_secret, webhook_port=webhook_port, webhook_host="127.0.0.1",
        resync_interval_s=resync_s))
    return KopfRunner(["run", "--standalone", "--namespace", ns, "-m", "livenexus_operator.handlers"], timeout=90)


def policy(ns: str, server: LiveKitServer, **spec: Any) -> dict[str, Any]:
    template = {"livekit": {"url": server.url, "credentialsSecretRef": {"name": "lk"}},
                "model": {"name": "base", "language": "en"}}
    return {"apiVersion": "livenexus.io/v1alpha1", "kind": "TranscriptionPolicy",
            "metadata": {"name": "calls", "namespace": ns},
            "spec": {"template": template, "match": {"roomPrefix": "call-"}, "gracePeriodSeconds": 2, **spec}}


def policy_rooms(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    out = cluster.call("GET", ROOMS.format(ns=ns), query=[("labelSelector", POLICY_LABEL)])
    return list(out.get("items") or [])


def count(cluster: Cluster, path: str) -> int:
    return len(cluster.call("GET", path).get("items") or [])


def resyncs() -> float:
    return METRICS.registry.get_sample_value("livenexus_operator_policy_resyncs_total", {"result": "ok"}) or 0.0


def webhooks(event: str, result: str) -> float:
    return METRICS.registry.get_sample_value("livenexus_operator_webhooks_total",
                                             {"event": event, "result": result}) or 0.0


async def until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll a blocking ``probe`` in a thread (the event loop keeps sending audio meanwhile)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(probe)
        except Exception as exc:
            # The shared machine's kube-apiserver sometimes answers a read after 30 s: ask again.
            if not kube.transient(exc):
                raise
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def token(server: LiveKitServer, room: str, identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True)
    return api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants).to_jwt()


def signed(server: LiveKitServer, body: str, secret: str | None = None) -> str:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return api.AccessToken(server.api_key, secret or server.api_secret).with_sha256(digest).to_jwt()


def local_worker(dep: dict[str, Any], server: LiveKitServer, port: int, home: Path) -> tuple[list[str], dict[str, str]]:
    """The container the operator rendered, as a local process (secretKeyRefs resolved like the kubelet)."""
    from livenexus_worker.inference.models import default_cache_dir

    (c,) = dep["spec"]["template"]["spec"]["containers"]
    keys = {"api-key": server.api_key, "api-secret": server.api_secret}
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    for e in c["env"]:
        env[e["name"]] = e["value"] if "value" in e else keys[e["valueFrom"]["secretKeyRef"]["key"]]
    env.update({Env.MODEL_CACHE: str(default_cache_dir()), Env.METRICS_PORT: str(port),
                Env.METRICS_HOST: "127.0.0.1", "HOME": str(home)})
    # The project venv's entry point, whether or not the venv is on PATH.
    exe = shutil.which(c["command"][0]) or shutil.which(c["command"][0], path=str(Path(sys.executable).parent))
    assert exe, c["command"]
    return [exe, *c["command"][1:], *c.get("args", [])], env


class Speaker:
    """A participant who joins, later publishes a microphone and talks (a sentence, a pause, again)."""

    def __init__(self, server: LiveKitServer, room: str) -> None:
        self.server, self.room_name = server, room
        self.room = rtc.Room()
        self.partials: list[float] = []
        self.finals: list[float] = []
        self.talking: asyncio.Task[None] | None = None

        @self.room.on("data_received")
        def _data(packet: rtc.DataPacket) -> None:
            if packet.topic == DATA_TOPIC:
                message = json.loads(packet.data.decode(errors="replace"))
                (self.finals if message.get("isFinal") else self.partials).append(time.monotonic())

    async def join(self) -> None:
        await self.room.connect(self.server.url, token(self.server, self.room_name, "alice"))

    async def publish_and_talk(self, speech: np.ndarray) -> float:
        source = rtc.AudioSource(16000, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        published = time.monotonic()
        loop = np.concatenate([speech, np.zeros(16000, dtype=np.int16)])

        async def talk() -> None:
            while True:
                for i in range(0, len(loop) - 160 + 1, 160):
                    frame = rtc.AudioFrame(np.ascontiguousarray(loop[i:i + 160]).tobytes(), 16000, 1, 160)
                    await source.capture_frame(frame)

        self.talking = asyncio.create_task(talk())
        return published

    async def leave(self) -> None:
        if self.talking is not None:
            self.talking.cancel()
        await self.room.disconnect()


@pytest.mark.model
@pytest.mark.slow
async def test_webhooks_start_a_worker_on_first_audio_and_remove_it_after_the_room(
        as_operator: Cluster, release: Release, board: MetricsBoard, ns: str, lk: LiveKitServer, hook_port: int,
        tmp_path: Path) -> None:
    from livenexus_dev.tts import synthesize

    cluster = as_operator
    apply(cluster, secret_manifest(ns, "lk", **{"api-key": lk.api_key, "api-secret": lk.api_secret}))
    # One rung only: on this shared machine the CPU signal would otherwise step the worker down to finals only.
    ladder = [{"model": "base", "computeType": "int8", "beamSize": 1, "partialIntervalMs": 250}]
    spec = policy(ns, lk)
    spec["spec"]["template"]["tiers"] = {"ladder": ladder}
    apply(cluster, spec)
    speech = synthesize("the quick brown fox jumps over the lazy dog and then it runs far away")
    proc: subprocess.Popen[bytes] | None = None
    speaker = Speaker(lk, "call-standup")
    # Resync only once, at start: from then on the webhooks alone drive everything.
    before = resyncs()
    with operator(release, board, ns, lk, hook_port, resync_s=3600) as runner:
        try:
            await until(lambda: resyncs() > before, 30, "the first resync")
            joined_before = webhooks("participant_joined", "applied")
            await speaker.join()
            await until(lambda: webhooks("participant_joined", "applied") > joined_before, 30, "join webhook")
            # Someone is in the room but publishes nothing: no TranscriptionRoom (scale to zero).
            assert policy_rooms(cluster, ns) == []

            # A forged webhook (someone else's secret) is refused and counted; nothing changes.
            forged_before = webhooks("invalid", "bad_signature")
            fake = MessageToJson(api.WebhookEvent(event="track_published", room=api.Room(name="call-forged"),
                                                  participant=api.ParticipantInfo(sid="PA_x", identity="mallory"),
                                                  track=api.TrackInfo(sid="TR_x", type=0)))
            async with aiohttp.ClientSession() as s, s.post(
                    f"http://127.0.0.1:{hook_port}{PATH}", data=fake,
                    headers={"Authorization": signed(lk, fake, secret="not-the-secret-" * 3)}) as resp:
                assert resp.status == 401
            assert webhooks("invalid", "bad_signature") == forged_before + 1

            published = await speaker.publish_and_talk(speech)
            (tr,) = await until(lambda: policy_rooms(cluster, ns), 60, "the policy's TranscriptionRoom")
            created = time.monotonic()
            assert tr["spec"]["room"] == "call-standup"
            assert tr["metadata"]["ownerReferences"][0]["kind"] == "TranscriptionPolicy"
            name = tr["metadata"]["name"]
            dep = await until(lambda: cluster.get("apps/v1", "Deployment", ns, f"{name}-worker"), 60, "worker")

            port = free_port()
            argv, env = local_worker(dep, lk, port, tmp_path)
            log = (tmp_path / "worker.log").open("w")
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            await until(lambda: speaker.partials, 240, "a partial transcript in the room", interval=0.1)
            # kopf's test runner swaps sys.stdout while it runs: the figure goes to the real one.
            print(f"\nfirst audio track -> TranscriptionRoom {created - published:.2f} s; "
                  f"-> first partial in the room {speaker.partials[0] - published:.2f} s (worker as a local process, "
                  f"its start and model load included)", file=sys.__stdout__, flush=True)
            policy_path = f"/apis/livenexus.io/v1alpha1/namespaces/{ns}/transcriptionpolicies/calls"
            await until(lambda: cluster.call("GET", policy_path).get("status", {}).get("activeRooms") == 1, 30,
                        "the policy's status to count the room")

            # The participant leaves; the worker (an agent) stays in the room but does not keep it.
            await speaker.leave()
            await until(lambda: not policy_rooms(cluster, ns), 60, "the TranscriptionRoom to go")
            await until(lambda: cluster.get("apps/v1", "Deployment", ns, f"{name}-worker") is None, 120,
                        "the worker Deployment to be garbage-collected")
        finally:
            if speaker.talking is not None and not speaker.talking.done():
                await speaker.leave()
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    assert runner.exit_code == 0, output_of(runner)


async def test_lost_webhooks_are_repaired_by_resync(
        as_operator: Cluster, release: Release, board: MetricsBoard, ns: str, lk: LiveKitServer) -> None:
    cluster = as_operator
    apply(cluster, secret_manifest(ns, "lk", **{"api-key": lk.api_key, "api-secret": lk.api_secret}))
    apply(cluster, policy(ns, lk, gracePeriodSeconds=0))
    speaker = Speaker(lk, "call-before")
    # The room has audio before the operator runs: every webhook about it is lost.
    await speaker.join()
    await speaker.publish_and_talk(np.zeros(16000, dtype=np.int16))
    # No webhook endpoint at all (port 0): resync is the only way the operator learns anything.
    with operator(release, board, ns, lk, 0, resync_s=1.0) as runner:
        try:
            (tr,) = await until(lambda: policy_rooms(cluster, ns), 60, "a TranscriptionRoom from resync")
            assert tr["metadata"]["annotations"]["livenexus.io/livekit-room"] == "call-before"
            await speaker.leave()
            lkapi = api.LiveKitAPI(lk.url.replace("ws://", "http://"), lk.api_key, lk.api_secret)
            try:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room="call-before"))
            finally:
                await lkapi.aclose()
            await until(lambda: not policy_rooms(cluster, ns), 60, "resync to delete it")
        finally:
            if speaker.talking is not None and not speaker.talking.done():
                await speaker.leave()
    assert runner.exit_code == 0, output_of(runner)


@pytest.mark.slow
async def test_a_burst_of_200_rooms_converges_with_nothing_left(
        as_operator: Cluster, release: Release, board: MetricsBoard, ns: str, lk: LiveKitServer,
        hook_port: int) -> None:
    cluster = as_operator
    n = 200
    apply(cluster, secret_manifest(ns, "lk", **{"api-key": lk.api_key, "api-secret": lk.api_secret}))
    apply(cluster, policy(ns, lk, maxRooms=n + 50, gracePeriodSeconds=0))
    url = f"http://127.0.0.1:{hook_port}{PATH}"

    def event(kind: str, i: int) -> str:
        return MessageToJson(api.WebhookEvent(
            event=kind, room=api.Room(name=f"call-burst-{i}", sid=f"RM_{i}"),
            participant=api.ParticipantInfo(sid=f"PA_{i}", identity=f"user-{i}"),
            track=api.TrackInfo(sid=f"TR_{i}", type=0), id=secrets.token_hex(8)))

    async def post_all(kind: str) -> None:
        async with aiohttp.ClientSession() as s:
            async def one(i: int) -> None:
                body = event(kind, i)
                async with s.post(url, data=body, headers={"Authorization": signed(lk, body)}) as resp:
                    assert resp.status == 200

            await asyncio.gather(*(one(i) for i in range(n)))

    # Synthetic (correctly signed) webhooks for rooms LiveKit does not have; the resync ran once at start, so it
    # cannot remove them while the test watches.
    before = resyncs()
    with operator(release, board, ns, lk, hook_port, resync_s=3600) as runner:
        await until(lambda: resyncs() > before, 30, "the first resync")
        await post_all("track_published")
        await post_all("track_published")  # every one delivered twice
        await until(lambda: len(policy_rooms(cluster, ns)) == n, 300, f"{n} TranscriptionRooms")
        await until(lambda: count(cluster, f"/apis/apps/v1/namespaces/{ns}/deployments") == n, 600,
                    f"{n} worker Deployments")
        await post_all("room_finished")
        await until(lambda: not policy_rooms(cluster, ns), 300, "every TranscriptionRoom deleted")
        await until(lambda: count(cluster, f"/apis/apps/v1/namespaces/{ns}/deployments") == 0, 600,
                    "every Deployment garbage-collected")
        await until(lambda: count(cluster, f"/api/v1/namespaces/{ns}/pods") == 0, 600, "no pods left")
        creates = METRICS.registry.get_sample_value("livenexus_operator_policy_actions_total",
                                                    {"action": "create", "result": "ok"})
        assert creates is not None and creates >= n
    assert runner.exit_code == 0, output_of(runner)
