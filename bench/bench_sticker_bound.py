"""How far a sticker layout can go on a single view: the attack's upper bound where the car brakes.

    python bench/bench_sticker_bound.py --run RUN [--max-distance-m 25] [--steps 150] [--joint-steps 200]
                                           [--masks stickers,poster]

A physical patch must work on every view of an approach at once (the EOT's expectation). This
bench drops that requirement: for each held-out view of an attack run (its own report samples, the
clean sign detected, camera-to-sign distance up to ``--max-distance-m``), it optimizes the patch
afresh on that one view alone (its pose, light, print and camera fixed), with the run's goal loss,
Adam and the run's learning rate. Twice: under the run's sticker mask, from the run's patch, and
over the whole face (a poster, from the clean face; the control). A view the per-view sticker
cannot clear is one no physical sticker of that layout clears either, whatever the EOT.

Prints one JSON object: per mask, how many views were cleared (the sign no longer detected, as the
run's success test has it) before and after the per-view optimization, and per view the distance
and the source class's best nearby score before and after. With ``--joint-steps``, also one patch
per mask optimized on all those views together (the same fixed views, no fresh draws): whether one
patch can clear them all at once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def descend(victim, eot, bank, goal, params: dict, colours: torch.Tensor, mask: torch.Tensor,
            opt: torch.optim.Optimizer) -> None:
    """One Adam step of ``colours`` (3, h, w; a leaf, in [0, 1] after it) on the goal's loss over the views of
    ``params``, the patch printed and rendered as the attack renders it."""
    batch = eot.render(eot.printed(colours), mask, params, bank, printed=True)
    loss = goal.loss(victim, batch).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        colours.clamp_(0, 1)


def optimise_view(victim, eot, bank, goal, params: dict, colours: torch.Tensor, mask: torch.Tensor,
                  steps: int, lr: float) -> tuple[bool, bool, float, float]:
    """(cleared before, cleared after, the source's best nearby score before, after) for ``colours`` optimized
    on one view."""
    from patchsim.attack.losses import best_near, near_candidates

    def score(c: torch.Tensor) -> tuple[bool, float]:
        with torch.no_grad():
            batch = eot.render(eot.printed(c), mask, params, bank, printed=True)
            raw = victim(batch.images)
            near = near_candidates(raw.boxes_xyxy, batch.boxes)
            best = float(best_near(goal.source_score(victim, raw), near)[0])
            return bool(goal.measure(victim, batch)["hit"][0]), best

    c = colours.clone().requires_grad_(True)
    opt = torch.optim.Adam([c], lr=lr)
    hit_before, before = score(c.detach())
    for step in range(steps):
        descend(victim, eot, bank, goal, params, c, mask, opt)
        if step % 10 == 9 and not score(c.detach())[0]:
            break
    hit, after = score(c.detach())
    return not hit_before, not hit, before, after


def optimise_joint(victim, eot, bank, goal, params: dict, colours: torch.Tensor, mask: torch.Tensor,
                   steps: int, lr: float, batch: int = 12) -> list[bool]:
    """Per view of ``params``, whether one patch optimized on all of them together clears it (the best of the
    checks every 25 steps, by views cleared)."""
    from patchsim.eot.transforms import select

    n = int(params["scene"].shape[0])

    def cleared(c: torch.Tensor) -> list[bool]:
        with torch.no_grad():
            out = []
            for i in range(0, n, batch):
                b = eot.render(eot.printed(c), mask, select(params, list(range(i, min(i + batch, n)))), bank,
                               printed=True)
                out += (~goal.measure(victim, b)["hit"]).tolist()
            return out

    c = colours.clone().requires_grad_(True)
    opt = torch.optim.Adam([c], lr=lr)
    best = cleared(c.detach())
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        part = order[(step * batch + torch.arange(batch)) % n].tolist()
        descend(victim, eot, bank, goal, select(params, part), c, mask, opt)
        if step % 25 == 24 or step == steps - 1:
            now = cleared(c.detach())
            if sum(now) > sum(best):
                best = now
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="an attack run directory (sticker layout, config, held-out samples)")
    ap.add_argument("--max-distance-m", type=float, default=25.0)
    ap.add_argument("--steps", type=int, default=150, help="Adam steps per view (stops early once cleared)")
    ap.add_argument("--masks", default="stickers,poster", help="which masks: stickers, poster or both")
    ap.add_argument("--joint-steps", type=int, default=0, help="Adam steps of one patch on all the views together")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from patchsim.attack.banks import scene_banks
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.patch import Patch, PatchConfig, SlotInfo
    from patchsim.closedloop.patches import load_patch
    from patchsim.config import read_json
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile
    from patchsim.eot.transforms import params_from_json, select
    from patchsim.victims.registry import load_victim

    run = Path(args.run)
    cfg = load_attack_config(run / "config.yaml")
    rgba = torch.from_numpy(load_patch(run).rgba.astype(np.float32) / 255.0).permute(2, 0, 1)
    _, bank, _ = scene_banks(cfg)
    params = params_from_json(read_json(run / "heldout_params.json", "held-out samples")["report"])
    eot = EOT(cfg.eot, load_profile(str(run / "printer_profile.json")))
    victim = load_victim(cfg.victim)
    goal = cfg.make_goal()
    slot = SlotInfo(cfg.scenes.slot, bank.slot_kind, bank.slot_size_m, bank.sign_kind)
    poster = Patch(slot, PatchConfig(mask="full", max_pieces=None, max_coverage=1.0,
                                     pixels_per_m=cfg.patch.pixels_per_m))
    masks = {"stickers": (rgba[:3], (rgba[3:] > 0.5).float()),
             "poster": (poster.base.detach().clone(), poster.mask.detach().clone())}

    dist = bank.distance_m[params["scene"]].cpu().numpy()
    views = [i for i in np.argsort(dist) if 0 < dist[i] <= args.max_distance_m]
    out: dict = {"run": str(run), "steps": args.steps, "lr": cfg.lr, "max_distance_m": args.max_distance_m}
    for name in args.masks.split(","):
        colours, mask = masks[name]
        rows, seen, t0 = [], [], time.perf_counter()
        for i in views:
            view = select(params, [int(i)])
            with torch.no_grad():
                clean_hit = bool(goal.measure(victim, eot.render(None, mask, view, bank))["hit"][0])
            if not clean_hit:
                continue
            seen.append(int(i))
            was_cleared, cleared, before, after = optimise_view(victim, eot, bank, goal, view, colours, mask,
                                                                args.steps, cfg.lr)
            rows.append({"sample": int(i), "distance_m": round(float(dist[i]), 1), "cleared_before": was_cleared,
                         "cleared": cleared,
                         "score_before": round(before, 3), "score_after": round(after, 3)})
        out[name] = {"views": len(rows), "cleared": sum(r["cleared"] for r in rows),
                     "cleared_before": sum(r["cleared_before"] for r in rows),
                     "coverage": round(float(mask.mean()), 4), "wall_s": round(time.perf_counter() - t0, 1),
                     "per_view": rows}
        if args.joint_steps and seen:
            t0 = time.perf_counter()
            joint = optimise_joint(victim, eot, bank, goal, select(params, seen), colours, mask, args.joint_steps,
                                   cfg.lr)
            out[name]["joint"] = {"steps": args.joint_steps, "cleared": int(sum(joint)),
                                  "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
