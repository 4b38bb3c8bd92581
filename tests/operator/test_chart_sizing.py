"""The chart's worker CPU defaults against the per-speaker cost measured in the README's table."""

from __future__ import annotations

from typing import Any

import yaml

from livenexus_common.contract import TierThresholds
from livenexus_operator.autoscale import parse_cpu_millis as millicores
from tests.operator.helpers import CHART

# benchmarks/concurrency.py, 2 cores, preferred tier (base int8 beam 5, partials every 250 ms): cores in use.
ONE_SPEAKER_CORES = 0.63
TWO_SPEAKERS_CORES = 0.96
FOUR_SPEAKERS_CORES = 1.07


def worker_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())["worker"]
    return values


def test_min_cpu_holds_one_speaker_without_a_resize() -> None:
    # The autoscaler steps up when use exceeds cpuHigh of the quota: below that, one speaker must fit.
    scale = worker_values()["autoscaling"]
    assert TierThresholds().cpu_high * millicores(scale["minCpu"], "minCpu") / 1000 > ONE_SPEAKER_CORES


def test_requests_and_limits_fit_the_measured_speakers() -> None:
    w = worker_values()
    request = millicores(w["resources"]["requests"]["cpu"], "requests") / 1000
    limit = millicores(w["resources"]["limits"]["cpu"], "limits") / 1000
    assert request >= TWO_SPEAKERS_CORES and limit >= FOUR_SPEAKERS_CORES * 1.5
    assert millicores(w["autoscaling"]["minCpu"], "minCpu") <= millicores(w["autoscaling"]["maxCpu"], "maxCpu")
