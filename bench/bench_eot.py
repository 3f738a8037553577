"""EOT overhead: one optimizer step (sample conditions, render the patch into the frames, victim
forward + backward, regularizers, Adam) against the bare victim forward + backward on the same
frames and batch size. Measured interleaved in one run, so machine noise hits both alike.

    python bench/bench_eot.py [--batch 12] [--repeats 15] [--crop 256] [--reuse R]

The EOT step is the shipped default attack's, background reuse included (``--reuse 1`` renders every
background afresh). With reuse, the timed steps include their share of the pool renders: the run
goes through whole pools.

Goal: ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.objective import Objective, attack_step
    from patchsim.attack.patch import Patch, SlotInfo, place_grid_stickers
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.pool import BackgroundPool
    from patchsim.eot.printer import load_profile
    from patchsim.eot.scenes import build_sim_bank
    from patchsim.victims.detector import load_detector

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--crop", type=int, default=256, help="window size; 0 = full 640x384 frames")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--reuse", type=float, default=None, help="background reuse (default: the shipped config's)")
    args = ap.parse_args()

    cfg = load_attack_config(None)
    cfg.scenes.scenario = str(ROOT / cfg.scenes.scenario)
    cfg.scenes.frames = args.frames
    cfg.eot.crop_px = args.crop
    cfg.batch = args.batch
    if args.reuse is not None:
        cfg.eot.background_reuse = args.reuse
    det = load_detector(cfg.victim)
    bank = build_sim_bank(cfg.scenes)
    profile = load_profile("default")
    eot = EOT(cfg.eot, profile)
    patch = Patch(SlotInfo("stop_face", bank.slot_kind, bank.slot_size_m, bank.sign_kind), cfg.patch)
    # a mask like the shipped one: grid cells up to the coverage budget (here at seeded random places)
    saliency = torch.rand(patch.hw, generator=torch.Generator().manual_seed(0))
    patch.set_mask(patch.sticker_mask(place_grid_stickers(saliency, patch, cfg.patch.sticker_size_m,
                                                          cfg.patch.max_coverage)))
    objective = Objective(cfg, det, eot, torch.as_tensor(profile.palette, dtype=torch.float32))
    opt = torch.optim.Adam([patch.colours], lr=cfg.lr)
    pool = BackgroundPool.for_steps(eot, bank, args.batch, seed=0)

    def eot_step(k: int) -> float:
        t0 = time.perf_counter()
        params, background = (pool.draw(k, patch.hw) if pool is not None
                              else (eot.sample(bank, args.batch, torch.Generator().manual_seed(k)), None))
        attack_step(objective, patch, opt, bank, params, background)
        return time.perf_counter() - t0

    def bare_step(k: int) -> float:
        params = eot.sample(bank, args.batch, torch.Generator().manual_seed(k))
        with torch.no_grad():
            images = eot.render(patch.image(), patch.mask, params, bank).images  # the same frames
        x = images.clone().requires_grad_(True)
        t0 = time.perf_counter()
        raw = det(x)
        raw.scores[..., det.class_indices("stop_sign")[0]].amax(-1).mean().backward()
        return time.perf_counter() - t0

    eot_step(0), bare_step(0)  # warm-up
    eot_t, bare_t, ratios = [], [], []
    first = pool.steps_per_pool if pool is not None else 1  # whole pools, so each pays its render
    repeats = args.repeats if pool is None else -(-args.repeats // pool.steps_per_pool) * pool.steps_per_pool
    for k in range(first, first + repeats):
        a, b = bare_step(k), eot_step(k)
        bare_t.append(a)
        eot_t.append(b)
        ratios.append(b / a)
    out = {
        "batch": args.batch, "window_px": args.crop or "full 640x384", "threads": torch.get_num_threads(),
        "background_reuse": cfg.eot.background_reuse, "steps": len(eot_t),
        "bare_victim_fwd_bwd_s": round(statistics.median(bare_t), 4),
        "eot_step_s": round(statistics.median(eot_t), 4),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(statistics.median(eot_t) / statistics.median(bare_t), 3),
        # the headline: total time, so the steps that render a pool of backgrounds count in full
        "ratio_of_totals": round(sum(eot_t) / sum(bare_t), 3),
        "goal": "<= 1.15",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
