"""The attacker network against the EOT optimizer, at equal wall time, on the same victim and samples.

    python bench/bench_attacker.py [--budget-s 120] [--config stop_sticker_vanish] [--victim detector:default]

Both start from nothing and get the same wall-time budget on the same training scene bank:

- the optimizer (``patchsim attack`` with ``time_budget_s``) makes one patch;
- the attacker network (``patchsim.harden.attacker``) trains for the same time, then turns noise
  into patches, each with a random sticker layout (or the whole face for a quarter of them).

Both are scored on the same held-out samples (the optimizer's own report samples: other scenes,
full frames). Reports each one's held-out success (for the network: the mean over its patches and
the spread), and patches per second: the optimizer's is one patch per run; the network's is how
many it generates per second once trained, and one training per budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=120.0, help="wall time each attacker gets")
    ap.add_argument("--config", default="stop_sticker_vanish", help="attack config (scenes, EOT, goal)")
    ap.add_argument("--victim", default="detector:default")
    ap.add_argument("--patches", type=int, default=16, help="generated patches scored")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import os

    os.chdir(ROOT)
    from patchsim.attack.evaluate import evaluate_heldout
    from patchsim.attack.banks import scene_banks
    from patchsim.attack.objective import load_attack_victim
    from patchsim.attack.optimizer import run_attack
    from patchsim.attack.patch import Patch, SlotInfo
    from patchsim.config import read_json
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile
    from patchsim.eot.transforms import params_from_json
    from patchsim.harden.attacker import AttackerConfig, random_masks, train_attacker
    from patchsim.harden.rounds import attack_config_for

    acfg = attack_config_for(args.config, args.victim, args.seed, time_budget_s=args.budget_s, steps=100_000,
                          plateau_evals=None)
    victim = load_attack_victim(acfg)
    bank, heldout_bank, _ = scene_banks(acfg)
    eot = EOT(acfg.eot, load_profile(acfg.printer_profile))
    goal = acfg.make_goal()
    slot = SlotInfo(acfg.scenes.slot, bank.slot_kind, bank.slot_size_m, bank.sign_kind)
    outline = Patch(slot, acfg.patch).outline

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        opt = run_attack(acfg, Path(tmp) / "opt", progress=False)
        opt_wall = time.perf_counter() - t0
        params = params_from_json(read_json(Path(tmp) / "opt" / "heldout_params.json")["report"])

    cfg = AttackerConfig(steps=1_000_000, eval_patches=args.patches)
    t0 = time.perf_counter()
    g, stats = train_attacker(cfg, victim, eot, bank, goal, outline, slot.size_m, seed=args.seed,
                              time_budget_s=args.budget_s)
    net_train = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(args.seed + 1)
    t1 = time.perf_counter()
    patches = g.sample(args.patches, gen)
    gen_s = time.perf_counter() - t1
    masks = random_masks(outline, slot.size_m, args.patches, cfg, gen)
    rates, cache = [], {}
    for p, m in zip(patches, masks):
        rates.append(evaluate_heldout(victim, eot, heldout_bank, params, p, m, goal, clean_cache=cache).success_rate)
    sticker_rates = [r for r, m in zip(rates, masks) if float(m.sum()) < 0.99 * float(outline.sum())]
    print(json.dumps({
        "config": args.config, "victim": args.victim, "budget_s": args.budget_s,
        "heldout_samples": int(params["scene"].shape[0]),
        "optimizer": {"heldout_success_rate": opt.metrics["heldout_success_rate"], "steps": opt.metrics["steps"],
                      "wall_s": round(opt_wall, 1), "coverage": opt.metrics["coverage"],
                      "patches_per_s": round(1.0 / opt_wall, 5)},
        "attacker_network": {"heldout_success_rate_mean": round(float(np.mean(rates)), 4),
                             "heldout_success_rate_best": round(float(np.max(rates)), 4),
                             "heldout_success_rate_min": round(float(np.min(rates)), 4),
                             "sticker_layouts_mean": round(float(np.mean(sticker_rates)), 4) if sticker_rates else None,
                             "train_steps": stats["steps"], "train_s": round(net_train, 1),
                             "patches_per_s_after_training": round(args.patches / max(gen_s, 1e-9), 1)},
    }, indent=1))


if __name__ == "__main__":
    main()
