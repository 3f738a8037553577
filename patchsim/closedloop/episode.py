"""The episode engine: the one loop in patchsim that steps a simulator.

>>> from patchsim.sim.factory import make_simulator
>>> from patchsim.sim.scenario import load_scenario
>>> with make_simulator("embedded") as sim:  # doctest: +SKIP
...     ep = run_episode(sim, load_scenario("scenarios/stop_sign_approach.yaml"), seed=0,
...                      driver=GroundTruthDriver())
...     ep.outcome["stopped_before_line"]
True

Every frame: the driver acts, the frame's facts and the driver's state are recorded (one JSON-ready
dict per frame), recorders see the frame (videos, datasets), and the simulator steps. The episode
ends at the scenario's duration, after ``max_steps``, when ``until(frame)`` says so, or when
nothing more can happen (:func:`~patchsim.closedloop.outcomes.episode_over`: at rest, far past
the stop line, off the lane, collided) unless ``run_to_end`` is set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from patchsim.closedloop.drivers import Driver
from patchsim.closedloop.outcomes import AT_REST_MPS, collided_with, episode_over, summarize
from patchsim.sim.base import Control, Frame, Simulator
from patchsim.sim.scenario import Scenario


class Recorder(Protocol):
    def on_frame(self, frame: Frame, control: Control, record: dict[str, Any]) -> None:
        """Called for every frame, after the driver acted, with the frame's record."""

    def close(self, ok: bool) -> None:
        """The episode ended (``ok``) or failed; write or discard what was gathered."""


@dataclass
class Episode:
    """One episode: who drove what, every frame's record, and the outcome.

    Attributes:
        frames: one dict per frame: ``t_s``, ``ego_s_m``, ``speed_mps``, ``lateral_offset_m``,
            ``lane_width_m``, ``heading_error_rad``, ``stop_line_distance_m``, ``sign_distance_m``,
            ``sign_in_view``, ``patch_in_view``, ``control`` [steer, throttle, brake],
            ``collision_with``, and the driver's state (``stop_score``, ``stop_confirmed``,
            ``detections`` [[class, score, x1, y1, x2, y2], ...], ``victim_steer``, ...).
        ended_by: ``duration``, ``max_steps``, ``until``, or the reason from ``episode_over``.
    """

    scenario: str
    seed: int | None
    driver: str
    backend: str
    patches: list[str]
    target_sign: str | None
    frames: list[dict[str, Any]]
    outcome: dict[str, Any]
    ended_by: str
    wall_s: float
    dt_s: float = 0.05
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, frames: bool = True) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("scenario", "seed", "driver", "backend", "patches", "target_sign",
                                             "ended_by", "dt_s", "outcome")}
        out["steps"] = len(self.frames)
        out["wall_s"] = round(self.wall_s, 3)
        if frames:
            out["frames"] = self.frames
        return out


def target_sign_id(scenario: Scenario) -> str | None:
    """The sign an episode is about: a sign_face patch slot's sign, else the first stop sign, else the first sign."""
    for slot in scenario.patch_slots:
        if slot.kind == "sign_face":
            return slot.sign
    for s in scenario.signs:
        if s.kind == "stop_sign":
            return s.id
    return scenario.signs[0].id if scenario.signs else None


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def frame_record(frame: Frame, control: Control, sign_id: str | None, patch_slots: list[str]) -> dict[str, Any]:
    """The JSON-ready facts of one frame (see :class:`Episode`)."""
    rec: dict[str, Any] = {
        "i": frame.index,
        "t_s": round(frame.time_s, 4),
        "ego_s_m": _r(frame.ego.s_m),
        "speed_mps": _r(frame.ego.speed_mps, 4),
        "lateral_offset_m": _r(frame.lane.lateral_offset_m, 4),
        "lane_width_m": frame.lane.width_m,
        "heading_error_rad": _r(frame.lane.heading_error_rad, 5),
        "stop_line_distance_m": _r(frame.stop_line_distance_m),
        "sign_distance_m": None,
        "sign_in_view": False,
        "patch_in_view": any(frame.slots[s].in_view for s in patch_slots if s in frame.slots),
        "control": [round(control.steer, 5), round(control.throttle, 4), round(control.brake, 4)],
    }
    if sign_id is not None:
        truth = frame.sign(sign_id)
        rec["sign_distance_m"] = _r(truth.distance_m, 2)
        rec["sign_in_view"] = truth.in_view
    return rec


def run_episode(sim: Simulator, scenario: Scenario, seed: int | None, driver: Driver,
                patches: dict[str, np.ndarray] | None = None, recorders: tuple[Recorder, ...] | list = (),
                max_steps: int | None = None, until: Callable[[Frame], bool] | None = None,
                run_to_end: bool = False, min_score: float = 0.25) -> Episode:
    """Drive one episode of ``scenario`` (randomized by ``seed``) with ``driver`` at the wheel.

    Args:
        patches: slot name -> patch image (H, W, 3|4), shown from the first frame.
        recorders: see :class:`Recorder`; each is closed, with ``ok=False`` when the episode fails.
        until: ends the episode after a frame for which it returns True.
        run_to_end: drive the whole duration even when nothing more can happen.
        min_score: the detection score that counts in the outcome (the planner's threshold).
    """
    t0 = time.perf_counter()
    ok = False
    try:
        frame = sim.reset(scenario, seed=seed)
        for slot, image in (patches or {}).items():
            sim.set_patch(slot, image)
        if patches:
            frame = sim.observe()
        resolved = sim.scenario
        driver.begin(resolved, sim.road)
        sign_id = target_sign_id(resolved)
        slots = list(patches or {})
        steps = resolved.num_steps if max_steps is None else min(max_steps, resolved.num_steps)
        records: list[dict[str, Any]] = []
        at_rest_since = None
        ended_by = "duration"
        for i in range(steps):
            control = driver.act(frame)
            rec = frame_record(frame, control, sign_id, slots)
            rec.update(driver.state())
            hit = collided_with(frame.ego, resolved.ego.wheelbase_m, sim.layout.vehicles) if sim.layout else None
            rec["collision_with"] = hit
            records.append(rec)
            for r in recorders:
                r.on_frame(frame, control, rec)
            if frame.ego.speed_mps < AT_REST_MPS and frame.time_s > 0:
                at_rest_since = frame.time_s if at_rest_since is None else at_rest_since
            else:
                at_rest_since = None
            if until is not None and until(frame):
                ended_by = "until"
                break
            reason = None if run_to_end else episode_over(rec, at_rest_since)
            if reason:
                ended_by = reason
                break
            if i == steps - 1:
                ended_by = "max_steps" if max_steps is not None and steps < resolved.num_steps else "duration"
                break
            frame = sim.step(control)
        governs = any(s.kind == "stop_sign" for s in resolved.signs)
        outcome = summarize(records, resolved.road.stop_line_s_m is not None, governs, min_score)
        ok = True
    finally:
        for r in recorders:
            r.close(ok)
    return Episode(resolved.name, seed, driver.name, sim.backend, slots, sign_id, records, outcome, ended_by,
                   time.perf_counter() - t0, resolved.dt_s)
