"""Does the attack's compositing see what the simulator renders? A patch on the drive's own frames, both ways.

    python bench/bench_render_gap.py --sweep SWEEP_DIR [--min-distance-m 10] [--max-distance-m 20] [--every 3]
                                    [--filters bilinear,footprint]

An attack never renders its patch in 3D: it warps the patch onto clean frames of its scene bank and
lights it with the shading of a grey patch rendered in the same place (``patchsim.eot``). The
closed loop puts the patch on the sign's texture and renders the scene. This bench takes a finished
held-out sweep with a sign patch (``patchsim scenario sweep ... --patch RUN --out SWEEP_DIR``) and
replays each patched drive's frames at ``--min-distance-m`` to ``--max-distance-m`` from the sign
(every ``--every``-th one): same condition, seed and pose. For each it renders the frame clean, with
a grey patch (the shading) and with the patch, composites the patch onto the clean frame with the
EOT's ops (homography warp, read with each of ``--filters``, times the shading, blended by its
alpha; none of the EOT's random camera, print or light draws), and runs the sweep's victim on all.

Prints one JSON object: the frames, the share of them with a stop-sign detection at the planner's
threshold (as the sweep recorded it, re-rendered, clean, and per filter composited), per filter how
often the composited and the re-rendered frame agree on that, and the mean absolute pixel difference
between them over the patch's pixels.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np
import torch


def composite(clean: np.ndarray, shade: np.ndarray, rgba: np.ndarray, corners_px: np.ndarray,
              patch_filter: str) -> tuple[np.ndarray, np.ndarray]:
    """The attack's model of a patch in a frame, with the EOT's own ops: ``rgba`` (h, w, 4) in [0, 1] warped
    onto ``corners_px`` (4, 2; the slot's top-left, top-right, bottom-right, bottom-left) and read as
    ``patch_filter`` says (``bilinear`` or ``footprint``, :class:`~patchsim.eot.pipeline.EOTConfig`), lit by
    ``shade`` (H, W, 3; the grey render over the grey level), over ``clean`` (H, W, 3) uint8. Returns the uint8
    frame and the warped alpha (H, W)."""
    from patchsim.eot import ops

    h, w = rgba.shape[:2]
    H = ops.quad_homography((w, h), torch.from_numpy(corners_px.astype(np.float64))[None])
    grid = ops.patch_grid(H, torch.arange(clean.shape[1])[None], torch.arange(clean.shape[0])[None], (h, w))
    patch = torch.from_numpy(rgba.astype(np.float64)).permute(2, 0, 1)[None]
    colour, alpha = ops.read_patch(patch[:, :3], patch[:, 3:], grid, patch_filter)
    alpha = alpha[0].permute(1, 2, 0).numpy()
    colour = colour[0].permute(1, 2, 0).numpy()
    out = clean.astype(np.float64) / 255.0 * (1 - alpha) + shade * colour * alpha
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), alpha[..., 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", required=True, help="a finished sweep directory whose patched episodes to replay")
    ap.add_argument("--min-distance-m", type=float, default=10.0)
    ap.add_argument("--max-distance-m", type=float, default=20.0)
    ap.add_argument("--every", type=int, default=3, help="replay every n-th frame in the distance range")
    ap.add_argument("--filters", default="bilinear,footprint", help="the EOT's patch filters to composite with")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from patchsim.closedloop.drivers import best_of, detect, image_tensor
    from patchsim.closedloop.patches import load_patch
    from patchsim.eot import ops
    from patchsim.eot.scenes import GREY
    from patchsim.sim.embedded import EmbeddedSimulator
    from patchsim.sim.scenario import load_scenario, with_overrides
    from patchsim.victims.registry import load_victim

    episodes = [json.loads(Path(f).read_text()) for f in sorted(glob.glob(f"{args.sweep}/episodes/*.json"))]
    episodes = [e for e in episodes if e["patches"]]
    if not episodes:
        raise SystemExit(f"{args.sweep}: no patched sign episodes to replay")
    first = episodes[0]["job"]
    patch = load_patch(first["patch"])
    victim = load_victim(first["victim"])
    planner = dict(first.get("planner") or [])
    min_score = float(planner.get("min_score", 0.25))
    stop = torch.tensor(victim.class_indices("stop_sign"))
    grey = np.zeros((64, 64, 4), np.float32)
    grey[..., :3], grey[..., 3] = GREY, 1.0

    filters = args.filters.split(",")
    unknown = sorted(set(filters) - set(ops.PATCH_FILTERS))
    if unknown:
        raise SystemExit(f"--filters: unknown filter(s) {', '.join(unknown)} ({', '.join(ops.PATCH_FILTERS)})")
    rows, t0 = [], time.perf_counter()
    with EmbeddedSimulator(labels=False) as sim:
        for e in episodes:
            job = e["job"]
            scenario = with_overrides(load_scenario(job["scenario"]), dict(job["overrides"]), job["scenario"])
            sim.reset(scenario, seed=job["seed"])
            near = [f for f in e["frames"] if f["sign_in_view"] and f["sign_distance_m"] is not None
                    and args.min_distance_m <= f["sign_distance_m"] < args.max_distance_m][::args.every]
            for f in near:
                sim.set_patch(patch.slot, None)
                clean = sim.set_ego_pose(f["ego_s_m"], f["lateral_offset_m"], f["heading_error_rad"], f["speed_mps"])
                sim.set_patch(patch.slot, grey)
                shade = sim.observe(labels=False).image.astype(np.float32) / 255.0 / GREY
                sim.set_patch(patch.slot, patch.rgba)
                rendered = sim.observe(labels=False).image
                comps = [composite(clean.image, shade, patch.rgba / 255.0, clean.slots[patch.slot].corners_px, name)
                         for name in filters]
                on = comps[0][1] > 0.5
                scores = [best_of(detect(victim, image_tensor(im), min_score), stop)[0] >= min_score
                          for im in (rendered, clean.image, *(c for c, _ in comps))]
                diffs = [float(np.abs(rendered.astype(np.float32) - c)[on].mean()) if on.any() else 0.0
                         for c, _ in comps]
                rows.append((f["stop_score"] >= min_score, *scores, *diffs))
    r = np.array(rows, dtype=np.float64)
    k = len(filters)
    print(json.dumps({
        "sweep": args.sweep, "patch": first["patch"], "victim": first["victim"],
        "distance_m": [args.min_distance_m, args.max_distance_m], "frames": len(rows),
        "detected": {"recorded": round(float(r[:, 0].mean()), 3), "rendered": round(float(r[:, 1].mean()), 3),
                     "clean": round(float(r[:, 2].mean()), 3)},
        "composited": {name: {"detected": round(float(r[:, 3 + i].mean()), 3),
                              "agrees_with_rendered": round(float((r[:, 3 + i] == r[:, 1]).mean()), 3),
                              "mean_abs_diff_on_patch_0_255": round(float(r[:, 3 + k + i].mean()), 2)}
                       for i, name in enumerate(filters)},
        "wall_s": round(time.perf_counter() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
