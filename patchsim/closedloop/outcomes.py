"""What happened in an episode, in the field's terms.

Names follow the CARLA Leaderboard's infractions and Dirty Road Patch's outcomes:

- ``stopped_before_line``: the car came to rest with its front bumper at most
  ``STOP_TOLERANCE_M`` past the near edge of the stop line. None without a stop line.
- ``ran_stop_sign``: a stop sign governs the line and the bumper crossed it by more than
  ``STOP_TOLERANCE_M`` without the car having come to rest before it.
- ``stop_line_overrun_m``: how far the bumper was past the line when the car stopped or the
  episode ended (0 when short of it).
- ``first_detection_m``: camera-to-sign distance at the first frame whose stop-sign score reached
  the planner's threshold (sign in view); ``stop_confirmed_m``: where the planner confirmed it.
- ``detection_rate_by_band``: share of frames with the sign in view in which it was detected, by
  camera-to-sign distance band (``DISTANCE_BANDS_M``); None for a band without such frames.
- ``speed_limit_instead_of_stop``: the planner confirmed a speed-limit sign and never a stop sign
  (the outcome of a stop -> speed limit misclassification).
- ``lane_departure``: a wheel left the lane, ``|offset| > (lane width - EGO_WIDTH_M) / 2``.
- ``time_to_departure_s``: from the first frame that shows a patch (the episode start without
  one) to the first departed frame.
- ``max_lateral_offset_m``, ``mean_abs_lateral_offset_m``: of the rear-axle centre from the lane centre.
- ``collision``: the ego's footprint overlapped another vehicle's (``collision_with`` names it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from patchsim.sim.layout import EGO_WIDTH_M, FRONT_OVERHANG_M, REAR_OVERHANG_M

STOP_TOLERANCE_M = 0.5
AT_REST_MPS = 0.05
DISTANCE_BANDS_M: tuple[tuple[float, float], ...] = ((0, 10), (10, 20), (20, 30), (30, 40), (40, 60), (60, math.inf))
RUN_PAST_LINE_END_M = 10.0  # the episode ends once the bumper is this far past the stop line
AT_REST_END_S = 1.0  # ... or once the car has been at rest this long


def band_name(lo: float, hi: float) -> str:
    return f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}"


BAND_NAMES: tuple[str, ...] = tuple(band_name(lo, hi) for lo, hi in DISTANCE_BANDS_M)


def departure_limit_m(lane_width_m: float) -> float:
    """|lateral offset| beyond which a wheel is outside the lane."""
    return (lane_width_m - EGO_WIDTH_M) / 2


def _footprint(x: float, y: float, yaw: float, rear_m: float, front_m: float, half_w: float) -> np.ndarray:
    """(4, 2) corners of an oriented rectangle spanning ``rear_m`` behind to ``front_m`` ahead of (x, y)."""
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[-rear_m, -half_w], [front_m, -half_w], [front_m, half_w], [-rear_m, half_w]])
    return local @ np.array([[c, s], [-s, c]]) + [x, y]


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quads (4, 2)."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def collided_with(ego, wheelbase_m: float, vehicles) -> str | None:
    """Id of the first vehicle whose footprint the ego's overlaps, else None.

    Args:
        ego: :class:`~patchsim.sim.base.EgoTruth` (rear-axle pose).
        vehicles: :class:`~patchsim.sim.layout.VehiclePlacement` list (centre, yaw, size (L, W, H)).
    """
    mine = _footprint(ego.x_m, ego.y_m, ego.yaw_rad, REAR_OVERHANG_M, wheelbase_m + FRONT_OVERHANG_M, EGO_WIDTH_M / 2)
    for v in vehicles:
        length, width = v.size_m[0], v.size_m[1]
        if math.hypot(v.centre_m[0] - ego.x_m, v.centre_m[1] - ego.y_m) > length + wheelbase_m + 4:
            continue
        theirs = _footprint(v.centre_m[0], v.centre_m[1], v.yaw_rad, length / 2, length / 2, width / 2)
        if _overlap(mine, theirs):
            return v.spec.id
    return None


def episode_over(record: dict[str, Any], at_rest_since_s: float | None) -> str | None:
    """Why the episode can end after this frame record, or None to go on."""
    gap = record.get("stop_line_distance_m")
    if gap is not None and gap < -RUN_PAST_LINE_END_M:
        return "passed_stop_line"
    if at_rest_since_s is not None and record["t_s"] - at_rest_since_s >= AT_REST_END_S:
        return "at_rest"
    if abs(record["lateral_offset_m"]) > record["lane_width_m"]:
        return "left_lane"
    if record.get("collision_with"):
        return "collision"
    return None


def summarize(records: list[dict[str, Any]], has_stop_line: bool, stop_sign_governs: bool,
              min_score: float = 0.25) -> dict[str, Any]:
    """The outcome of one episode from its per-frame records (see the module docstring)."""
    out: dict[str, Any] = {}
    if not records:
        raise ValueError("an episode without frames has no outcome")
    offsets = np.array([r["lateral_offset_m"] for r in records])
    limit = departure_limit_m(records[0]["lane_width_m"])
    departed = np.abs(offsets) > limit
    out["lane_departure"] = bool(departed.any())
    out["max_lateral_offset_m"] = round(float(np.abs(offsets).max()), 4)
    out["mean_abs_lateral_offset_m"] = round(float(np.abs(offsets).mean()), 4)
    t0 = next((r["t_s"] for r in records if r.get("patch_in_view")), records[0]["t_s"])
    out["time_to_departure_s"] = (round(float(records[int(np.argmax(departed))]["t_s"] - t0), 3)
                                  if departed.any() else None)
    hit = next((r["collision_with"] for r in records if r.get("collision_with")), None)
    out["collision"] = hit is not None
    out["collision_with"] = hit

    if has_stop_line:
        rest_gap = None
        for r in records:
            if r["speed_mps"] < AT_REST_MPS and r["t_s"] > 0 and r["stop_line_distance_m"] is not None:
                rest_gap = r["stop_line_distance_m"]
                break
        final_gap = records[-1]["stop_line_distance_m"]
        stopped = rest_gap is not None and rest_gap >= -STOP_TOLERANCE_M
        crossed = min(r["stop_line_distance_m"] for r in records) < -STOP_TOLERANCE_M
        gap = rest_gap if rest_gap is not None else final_gap
        out["stopped_before_line"] = bool(stopped)
        out["ran_stop_sign"] = bool(stop_sign_governs and crossed and not stopped)
        out["stop_line_overrun_m"] = round(max(0.0, -float(gap)), 3)
    else:
        out["stopped_before_line"] = None
        out["ran_stop_sign"] = None
        out["stop_line_overrun_m"] = None

    perceived = [r for r in records if "stop_score" in r]
    if perceived:
        in_view = [r for r in perceived if r.get("sign_in_view")]
        first = next((r["sign_distance_m"] for r in in_view if r["stop_score"] >= min_score), None)
        out["first_detection_m"] = None if first is None else round(float(first), 2)
        conf = next((r for r in perceived if r.get("stop_confirmed")), None)
        out["stop_confirmed"] = conf is not None
        out["stop_confirmed_m"] = None if conf is None or conf.get("sign_distance_m") is None else round(
            float(conf["sign_distance_m"]), 2)
        out["speed_limit_confirmed"] = any(r.get("speed_limit_confirmed") for r in perceived)
        out["speed_limit_instead_of_stop"] = out["speed_limit_confirmed"] and not out["stop_confirmed"]
        out["detection_rate"] = (round(sum(r["stop_score"] >= min_score for r in in_view) / len(in_view), 4)
                                 if in_view else None)
        rates = {}
        for (lo, hi), name in zip(DISTANCE_BANDS_M, BAND_NAMES):
            band = [r for r in in_view if lo <= r["sign_distance_m"] < hi]
            rates[name] = round(sum(r["stop_score"] >= min_score for r in band) / len(band), 4) if band else None
        out["detection_rate_by_band"] = rates
    return out
