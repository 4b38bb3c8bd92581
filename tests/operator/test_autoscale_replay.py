"""The decision replayed on the metric series a real worker pod exported on the local node.

``data/autoscale-node-series.json`` was written by tests/e2e/test_autoscale_node.py: base int8 beam 5, one
continuous speaker, the pod starting at 500m on a shared 2-core node; the operator's scrape, once a second,
with the CPU limit in force at each point. Replayed open loop (the allocation follows the recording), the
decision must ask for CPU while the speaker talks and give it back only after the speech ended.
"""

from __future__ import annotations

import json
from pathlib import Path

from livenexus_operator.autoscale import AutoscalePolicy, PodCpu, Sample, decide, parse_cpu_millis

DATA = Path(__file__).parent / "data" / "autoscale-node-series.json"
# The node test's room: spec.autoscaling and the default tier thresholds.
POLICY = AutoscalePolicy(enabled=True, min_millis=500, max_millis=1500, step_millis=500, up_after_s=4.0,
                         down_after_s=15.0, cooldown_s=5.0)


def test_recorded_series_scales_up_while_talking_and_down_only_after() -> None:
    data = json.loads(DATA.read_text())
    speech_end = float(data["speech_end_s"])
    samples: list[Sample] = []
    limit, since = "", 0.0
    actions: list[tuple[float, str, int]] = []
    for row in data["series"]:
        if row["limit"] != limit:  # the recording's resize: windows restart, as in the operator
            limit, since, samples = row["limit"], float(row["t"]), []
        # p95 is left out: the recording holds the worker's lifetime p95, not the per-scrape one.
        samples.append(Sample(at=float(row["t"]), cpu_ratio=row["cpu_ratio"], cpu_pressure=row["cpu_pressure"],
                              lag_s=row["lag_s"], tier=row["tier"], active_speakers=row["speakers"]))
        millis = parse_cpu_millis(limit)
        d = decide(POLICY, samples, PodCpu(millis, millis), float(row["t"]), last_resize_at=since or None)
        if d.action != "hold":
            actions.append((float(row["t"]), d.action, d.target_millis))
    ups = [a for a in actions if a[1] == "up"]
    downs = [a for a in actions if a[1] == "down"]
    assert ups and ups[0][0] < speech_end, actions
    assert all(t > speech_end for t, _, _ in downs), actions
    assert downs and downs[-1][2] == 500, actions
