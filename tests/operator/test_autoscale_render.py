"""What autoscaling changes in the rendered worker, and that the worker reads it back."""

from __future__ import annotations

from livenexus_common.contract import AUTOSCALE_ENV, Env
from livenexus_operator.render import worker_env
from livenexus_operator.spec import RoomSpec, WorkerTemplate
from livenexus_worker.room.settings import WorkerSettings
from tests.operator.helpers import room_body

CHART = WorkerTemplate.from_values({"autoscaling": {"enabled": False, "minCpu": "500m", "maxCpu": "2",
                                                    "upAfterSeconds": 6, "cooldownSeconds": 15}})


def env_of(spec: dict[str, object], template: WorkerTemplate = CHART) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in worker_env(RoomSpec.from_body(room_body(**spec)), template)}


def test_rooms_without_autoscaling_render_as_before() -> None:
    assert not AUTOSCALE_ENV & set(env_of({}))
    assert not AUTOSCALE_ENV & set(env_of({"autoscaling": {"enabled": False}}))


def test_an_autoscaled_room_tells_its_worker_the_ceiling_and_the_grace() -> None:
    env = env_of({"autoscaling": {"enabled": True, "maxCpu": "1500m"}})
    assert env[Env.AUTOSCALE_MAX_CPU] == "1.5"
    grace = float(env[Env.AUTOSCALE_GRACE_S])
    assert grace > 15  # longer than the operator's cooldown, so a second step still comes in time
    settings = WorkerSettings.from_env({**env, Env.ROOM: "r"})
    options = settings.tier_options()
    assert (options.autoscale_max_cores, options.autoscale_grace_s) == (1.5, grace)
    # The chart can switch it on for every room.
    on = WorkerTemplate.from_values({"autoscaling": {"enabled": True}})
    assert Env.AUTOSCALE_MAX_CPU in env_of({}, on)


def test_extra_env_cannot_pretend_an_autoscaler_exists() -> None:
    template = WorkerTemplate.from_values({"extraEnv": [{"name": Env.AUTOSCALE_MAX_CPU, "value": "64"},
                                                        {"name": Env.AUTOSCALE_GRACE_S, "value": "3600"}]})
    assert not AUTOSCALE_ENV & set(env_of({}, template))


def test_an_unusable_policy_renders_no_autoscaling() -> None:
    assert not AUTOSCALE_ENV & set(env_of({"autoscaling": {"enabled": True, "minCpu": "4", "maxCpu": "1"}}))
