"""Closed-loop checks of an attack's patches through the episode engine: the choice among the best
few patches by how their drives end, and the check of the chosen patch, clean and patched, on the
held-out scenario's seeds."""

from __future__ import annotations

import json
from pathlib import Path

from patchsim.attack.config import AttackConfig
from patchsim.attack.patch import Patch
from patchsim.attack.rundir import slot_doc
from patchsim.runs import write_image, write_json


def drive_heldout(cfg: AttackConfig, out: Path, patch_dirs: list[Path], progress: bool) -> dict:
    """``run_scenario`` of the held-out scenario for ``cfg.closed_loop_seeds`` seeds from the held-out seed,
    clean and with each patch; the victim drives (a lane-keeper) or sits in the planner (a detector)."""
    from patchsim.closedloop.run import run_scenario

    steers = cfg.victim_kind == "lanekeeper"
    return run_scenario(cfg.heldout.scenario, out, [str(d) for d in patch_dirs], cfg.closed_loop_seeds,
                        seed_start=cfg.heldout.seed, detector="detector:default" if steers else cfg.victim,
                        lanekeeper=cfg.victim if steers else None, videos=0, progress=progress)


def choose_by_driving(cfg: AttackConfig, out: Path, patch: Patch, candidates: list[dict], goal,
                       progress: bool = False) -> dict:
    """Drive each candidate patch (the best few by held-out score) on the held-out scenario for
    ``cfg.closed_loop_seeds`` seeds and return which one failed the car as the goal wants most often
    (ties: the better held-out score). Candidates and their drives are in ``OUT/candidates/``."""
    folder = out / "candidates"
    keep = patch.colours.detach().clone()
    dirs = {}
    for c in candidates:
        d = folder / f"step{c['step']:06d}"
        patch.colours.data.copy_(c["colours"])
        write_image(d / "patch_rgba.png", patch.rgba())
        name = f"{cfg.name}-step{c['step']}"
        write_json(d / "patch.json", {"patch_id": name, "victim": cfg.victim, "files": {"rgba": "patch_rgba.png"},
                                      "slot": slot_doc(patch)})
        dirs[name] = (d, c)
    patch.colours.data.copy_(keep)
    drive_heldout(cfg, folder / "closed_loop", [d for d, _ in dirs.values()], progress)
    episodes = json.loads((folder / "closed_loop" / "results.json").read_text())["episodes"]
    rows = []
    for name, (_, c) in dirs.items():
        wanted = [goal.drove_as_wanted(e["outcome"]) for e in episodes if e["job"]["variant"] == name]
        wanted = [w for w in wanted if w is not None]
        rate = sum(wanted) / len(wanted) if wanted else 0.0
        rows.append({"step": c["step"], "drove_as_wanted": round(rate, 4), "heldout_success_rate": round(c["score"], 4),
                     "tiebreak": round(c["tie"], 4)})
    best = max(rows, key=lambda r: (r["drove_as_wanted"], r["heldout_success_rate"], r["tiebreak"]))
    return {"seeds": cfg.closed_loop_seeds, "chosen_step": best["step"], "candidates": rows}


def closed_loop_check(cfg: AttackConfig, out: Path, progress: bool = False) -> dict:
    """Drive the held-out scenario ``cfg.closed_loop_seeds`` seeds (from the held-out seed), clean and
    with the patch just written, through the episode engine; results in ``OUT/closed_loop/``.

    Returns the per-variant outcome rates of the patched and clean runs (``clean``, ``patched``).
    """
    summary = drive_heldout(cfg, out / "closed_loop", [out], progress)
    variants = summary["variants"]
    patched = next(v for k, v in variants.items() if k != "clean")
    keep = ("stopped_before_line", "ran_stop_sign", "stop_confirmed", "speed_limit_confirmed", "lane_departure")
    brief = {name: {k: v[k]["rate"] for k in keep if k in v} for name, v in (("clean", variants["clean"]),
                                                                              ("patched", patched))}
    for name, v in (("clean", variants["clean"]), ("patched", patched)):
        for k in ("mean_first_detection_m", "mean_stop_line_overrun_m", "mean_time_to_departure_s"):
            if v.get(k) is not None:
                brief[name][k] = v[k]
    return {"scenario": cfg.heldout.scenario, "seeds": cfg.closed_loop_seeds, **brief}


