"""Outcome rates with confidence intervals, and the table of a set of episodes."""

from __future__ import annotations

import math
from typing import Any

#: Boolean outcomes whose rates are reported (when the scenario has them).
RATE_OUTCOMES: tuple[str, ...] = ("stopped_before_line", "ran_stop_sign", "stop_confirmed", "speed_limit_confirmed",
                                  "speed_limit_instead_of_stop", "lane_departure", "collision")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (0, 1) when ``n`` is 0.

    >>> [round(v, 3) for v in wilson_interval(9, 10)]
    [0.596, 0.982]
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(values: list[bool | None]) -> dict[str, Any] | None:
    """``{"rate", "k", "n", "ci95"}`` over the non-None values, or None when there are none."""
    vals = [bool(v) for v in values if v is not None]
    if not vals:
        return None
    k, n = sum(vals), len(vals)
    lo, hi = wilson_interval(k, n)
    return {"rate": round(k / n, 4), "k": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def _mean(values: list[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize_variant(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates (with 95 % Wilson intervals) and means of the outcomes of one variant's episodes."""
    out: dict[str, Any] = {"episodes": len(outcomes)}
    for key in RATE_OUTCOMES:
        r = rate([o.get(key) for o in outcomes])
        if r is not None:
            out[key] = r
    for key in ("stop_line_overrun_m", "first_detection_m", "stop_confirmed_m", "detection_rate",
                "max_lateral_offset_m", "mean_abs_lateral_offset_m", "time_to_departure_s"):
        m = _mean([o.get(key) for o in outcomes])
        if m is not None or any(key in o for o in outcomes):
            out[f"mean_{key}" if not key.startswith("mean_") else key] = m
    missed = [o for o in outcomes if "first_detection_m" in o and o["first_detection_m"] is None]
    if any("first_detection_m" in o for o in outcomes):
        out["never_detected"] = len(missed)
    return out


def episode_row(result: dict[str, Any], condition_keys: list[str]) -> dict[str, Any]:
    """One flat table row of an episode: job, condition values, scalar outcomes, band rates."""
    job = result["job"]
    overrides = dict(job["overrides"])
    row: dict[str, Any] = {
        "job_id": result["job_id"], "variant": job["variant"], "patch": job["patch"], "seed": job["seed"],
        "condition": job["condition"], "driver": job["driver"], "victim": job["victim"], "sim": job["sim"],
        "steps": result["steps"], "ended_by": result["ended_by"], "wall_s": result["wall_s"],
    }
    for key in condition_keys:
        v = overrides.get(key)
        row[f"cond.{key}"] = v if not isinstance(v, (list, dict)) else str(v)
    for k, v in result["outcome"].items():
        if isinstance(v, dict):
            for band, val in v.items():
                row[f"{k}.{band}"] = val
        else:
            row[k] = v
    return row
