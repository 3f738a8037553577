"""The EOT patch optimizer: Adam over EOT batches, best patch kept by held-out evaluation.

Run directory (everything needed to repeat the result)::

    config.yaml            the resolved attack config
    run.json               seed, versions, command line
    heldout_params.json    the held-out EOT conditions (replayable)
    checkpoint.pt          patch, optimizer and progress; ``--resume`` continues from it
    patch.png, mask.png    the best patch at print resolution, and its mask
    patch_preview.png      the slot as printed (patch over the original face)
    patch.json             slot, size, dpi, victim, losses, EOT config, seed, versions, metrics
    failures.json          held-out conditions where the patch failed (replay them)
    curves.png, tb/        loss and held-out success curves; TensorBoard logs

The scene banks (frames, corners, shading: about 200 MB) live in the shared cache
(``patchsim cache``), named by a hash of their configuration, scenario and rendering code; a run
records that key in ``run.json`` and rebuilds the banks identically when the cache was cleared.

Each step's EOT samples come from a generator seeded with (seed, step) or, when backgrounds are
reused, from one seeded with (seed, pool number) that draws all the pool's steps; checkpoints hold
every piece of state, so a resumed run ends with the same patch as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from patchsim.attack.config import AttackConfig
from patchsim.attack.evaluate import evaluate_heldout
from patchsim.attack.patch import (
    Patch,
    SlotInfo,
    place_grid_stickers,
    place_stickers,
    sticker_rects,
    total_variation,
)
from patchsim.config import from_dict, to_dict
from patchsim.eot.pipeline import EOT, Background
from patchsim.eot.pool import SAMPLING_SCHEME, BackgroundPool
from patchsim.eot.printer import load_profile, non_printability
from patchsim.eot.scenes import SceneBank, build_sim_bank, load_photo_bank
from patchsim.eot.transforms import params_to_json, select
from patchsim.errors import CheckpointError, ConfigError
from patchsim.runs import atomic_path, manifest, output_dir, write_image, write_json, write_text


@dataclass
class AttackResult:
    out_dir: Path
    metrics: dict
    patch: Patch


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 17)


def bank_key(cfg: AttackConfig) -> str:
    """What the scene banks depend on: their configs, the scenario files' text, the photos' corner
    files, the source class (photo banks), and the code that renders them."""
    from patchsim.cache import cache_key

    inputs = []
    for sc in (cfg.scenes, cfg.heldout):
        if sc.photos:
            corners = Path(sc.photos) / "corners.json"
            inputs.append(corners.read_text() if corners.is_file() else None)
        else:
            scenario = Path(sc.scenario)
            inputs.append(scenario.read_text() if scenario.is_file() else None)
    return cache_key(to_dict(cfg.scenes), to_dict(cfg.heldout), cfg.source_class, inputs, _render_code_version())


def _render_code_version() -> str:
    """A hash of the source that renders scene banks (the simulator and the bank builder)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted([*(root / "sim").glob("*.py"), root / "eot" / "scenes.py"]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def scene_banks(cfg: AttackConfig, progress: bool = False) -> tuple[SceneBank, SceneBank, str]:
    """The training and held-out scene banks, from the shared cache when an identical configuration
    made them before (``patchsim cache``), else built and cached. Returns them and the cache key."""
    import sys

    from patchsim.cache import entry_path

    key = bank_key(cfg)
    path = entry_path("scenes", key)
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return SceneBank.from_dict(data["train"]), SceneBank.from_dict(data["heldout"]), key
        except Exception as exc:  # a damaged cache entry is rebuilt, not trusted
            print(f"scene banks: the cached copy {path} is unreadable ({type(exc).__name__}); building them again",
                  file=sys.stderr)
    elif progress:
        print(f"scene banks: none cached for this configuration and code; building them ({path.name})",
              file=sys.stderr)
    banks = []
    for sc in (cfg.scenes, cfg.heldout):
        if sc.photos:
            from patchsim.sim.scenario import SIGN_FACE_SIZE_M

            kind = cfg.source_class if cfg.source_class in SIGN_FACE_SIZE_M else "stop_sign"
            banks.append(load_photo_bank(sc.photos, SIGN_FACE_SIZE_M[kind], kind))
        else:
            banks.append(build_sim_bank(sc))
    with atomic_path(path) as tmp:
        torch.save({"train": banks[0].to_dict(), "heldout": banks[1].to_dict()}, tmp)
    return banks[0], banks[1], key


def load_attack_victim(cfg: AttackConfig):
    from patchsim.victims.registry import load_victim

    victim = load_victim(cfg.victim, device=cfg.device)
    cfg.make_goal().check_victim(victim, cfg.victim)
    return victim


def _autocast(cfg: AttackConfig):
    if cfg.amp and torch.device(cfg.device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class Objective:
    """Loss of one EOT batch for the configured goal and regularizers."""

    def __init__(self, cfg: AttackConfig, victim, eot: EOT, palette: torch.Tensor):
        self.cfg, self.victim, self.eot, self.palette = cfg, victim, eot, palette
        self.goal = cfg.make_goal()

    def __call__(self, patch: Patch, bank: SceneBank, params: dict,
                 background: Background | None = None) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        img = patch.image()
        seen = self.eot.printed(img)  # once for the render and the printability score
        batch = self.eot.render(seen, patch.mask, params, bank, device=cfg.device, background=background,
                                printed=True)
        with _autocast(cfg):
            per = self.goal.loss(self.victim, batch)
        attack = per.float().mean()
        tv = total_variation(img, patch.mask)
        nps = non_printability(seen, self.palette, patch.mask)
        loss = attack + cfg.tv_weight * tv + cfg.nps_weight * nps
        if cfg.similarity_weight:
            sim = (((img - patch.base) ** 2) * patch.mask).sum() / (3 * patch.mask.sum() + 1e-8)
            loss = loss + cfg.similarity_weight * sim
        return loss, {"loss": loss.item(), "attack": attack.item(), "tv": tv.item(), "nps": nps.item()}


def attack_step(objective: Objective, patch: Patch, opt: torch.optim.Optimizer, bank: SceneBank,
                params: dict, background: Background | None = None) -> dict:
    """One optimization step on one EOT batch (``background``: its clean frames, when reused); the colours
    stay in [0, 1]. Returns the loss parts."""
    loss, parts = objective(patch, bank, params, background)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        patch.colours.clamp_(0, 1)
    return parts


def run_attack(cfg: AttackConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> AttackResult:
    """Optimize a patch as ``cfg`` says; write the run directory; return the held-out metrics.

    A run that fails before its first checkpoint leaves no run directory behind; after it, the
    directory stays for ``--resume``.
    """
    with output_dir(out_dir, keep=("checkpoint.pt",)):
        return _optimize(cfg, Path(out_dir), resume, progress)


def _optimize(cfg: AttackConfig, out: Path, resume: bool, progress: bool) -> AttackResult:
    from tqdm import tqdm

    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: nothing to resume (no checkpoint)")
    if not resume and ckpt_path.is_file():
        raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    extended: list[str] = []
    if resume:  # everything checked before anything in the run directory is rewritten
        ck = _read_checkpoint(ckpt_path, cfg.device)
        extended = _check_resume(cfg, out, ck["state"])
    t_start = time.perf_counter()
    victim = load_attack_victim(cfg)  # a wrong victim or class name fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    torch.manual_seed(cfg.seed)
    bank, heldout_bank, bank_cache_key = scene_banks(cfg, progress)
    write_json(out / "run.json", manifest("attack", cfg.seed, to_dict(cfg), torch_threads=torch.get_num_threads(),
                                          scene_bank_cache_key=bank_cache_key))
    bank, heldout_bank = bank.to(cfg.device), heldout_bank.to(cfg.device)
    profile_copy = out / "printer_profile.json"
    if resume and profile_copy.is_file():
        profile = load_profile(profile_copy)  # the profile the run started with, wherever it runs now
    else:
        profile = load_profile(cfg.printer_profile)
        profile.save(profile_copy)
    palette = torch.as_tensor(profile.palette, dtype=torch.float32, device=cfg.device)
    eot = EOT(cfg.eot, profile)
    slot = SlotInfo(cfg.scenes.slot, bank.slot_kind, bank.slot_size_m, bank.sign_kind)
    patch = Patch(slot, cfg.patch, device=cfg.device, generator=torch.Generator().manual_seed(cfg.seed),
                  target_kind=cfg.target_class)
    objective = Objective(cfg, victim, eot, palette)

    # held-out frames split in two: even frames choose the best patch, odd frames report its metrics,
    # so the reported rate is not measured on the conditions the patch was selected on
    n_frames = len(heldout_bank)
    select_frames = torch.arange(0, n_frames, 2)
    report_frames = torch.arange(1, n_frames, 2) if n_frames > 1 else select_frames
    gen = torch.Generator().manual_seed(cfg.seed + 99_991)
    select_params = eot.sample(heldout_bank, cfg.eval_samples, gen, full_frame=True,
                               scenes=select_frames[torch.randint(0, len(select_frames), (cfg.eval_samples,),
                                                                  generator=gen)])
    heldout = eot.sample(heldout_bank, cfg.final_samples, gen, full_frame=True,
                         scenes=report_frames[torch.randint(0, len(report_frames), (cfg.final_samples,),
                                                            generator=gen)])
    write_json(out / "heldout_params.json", {"select": params_to_json(select_params),
                                             "report": params_to_json(heldout)})
    clean_cache: dict = {}

    def heldout_eval(colours: torch.Tensor, params: dict, cache: dict, margin: bool = False):
        return evaluate_heldout(victim, eot, heldout_bank, params, colours, patch.mask, objective.goal,
                                device=cfg.device, clean_cache=cache, margin=margin)

    opt = torch.optim.Adam([patch.colours], lr=cfg.lr)
    state = {"step": 0, "best_score": -1.0, "best_tiebreak": -math.inf, "best_step": -1, "best_colours": None,
             "history": [], "evals": [], "elapsed_s": 0.0, "eval_s": 0.0, "positions": None,
             "pool_sampling": SAMPLING_SCHEME}
    if resume:
        patch.colours.data.copy_(ck["colours"])
        patch.mask = ck["mask"].to(patch.mask)  # already clipped to the outline when it was saved
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        scheme = state.get("pool_sampling", 1)  # checkpoints from before the scheme was recorded: 1
        if eot.cfg.background_reuse > 1 and scheme != SAMPLING_SCHEME:
            raise CheckpointError(f"{ckpt_path}: written by a patchsim whose background pool drew its samples "
                                  f"another way (scheme {scheme}, now {SAMPLING_SCHEME}); "
                                  f"resuming would not repeat the run, so start it again with a new --out")
        # a checkpoint from before the tie-break: its best patch keeps winning ties, as it did then
        state.setdefault("best_tiebreak", math.inf if state["best_step"] >= 0 else -math.inf)
        if extended:
            state.setdefault("extensions", []).append(
                {"at_step": state["step"], **{k: getattr(cfg, k) for k in extended}})
    else:
        if cfg.patch.mask == "stickers":
            positions = cfg.patch.sticker_positions_m or _search_sticker_positions(cfg, patch, objective, bank)
            state["positions"] = [list(p) for p in positions]
            patch.set_mask(patch.sticker_mask(positions))
        elif cfg.patch.mask == "file":
            patch.set_mask(_read_mask(cfg.patch.mask_file, patch.hw, cfg.device))
        patch.check_applicable()

    def lr_at(step: int) -> float:
        if cfg.lr_schedule == "constant":
            return cfg.lr
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps)))

    def save_checkpoint() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"colours": patch.colours.detach().clone(), "mask": patch.mask.detach().clone(),
                        "optimizer": opt.state_dict(), "state": state}, tmp)

    drives = bool(cfg.closed_loop_seeds) and not cfg.heldout.photos
    n_candidates = cfg.closed_loop_candidates if drives else 1
    pool = BackgroundPool.for_steps(eot, bank, cfg.batch, cfg.seed, cfg.device)
    writer = _tensorboard(out)
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=cfg.name, disable=not progress, leave=False)
    elapsed0 = state["elapsed_s"]
    t_loop = time.perf_counter()
    # a run killed after its loop had ended (before its outputs were written) only finishes
    done = resume and not extended and (state.get("stopped_by") is not None or (
        cfg.time_budget_s is not None and state["elapsed_s"] >= cfg.time_budget_s))
    stopped = (state.get("stopped_by") or "time_budget") if done else "steps"
    while state["step"] < cfg.steps and not done:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if pool is not None:
            params, background = pool.draw(step, patch.hw)
        else:
            params, background = eot.sample(bank, cfg.batch, _step_generator(cfg.seed, step)), None
        parts = attack_step(objective, patch, opt, bank, params, background)
        state["step"] = step + 1
        state["history"].append({"step": step + 1, **{k: round(v, 5) for k, v in parts.items()}})
        if writer:
            for k, v in parts.items():
                writer.add_scalar(f"train/{k}", v, step + 1)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            t_eval = time.perf_counter()
            image = patch.image().detach().clone()  # scored, and kept if it is the best or a candidate
            res = heldout_eval(image, select_params, clean_cache, margin=cfg.select_by_margin)
            state["eval_s"] += time.perf_counter() - t_eval
            score, tie = res.selection_score
            optimize_s = elapsed0 + time.perf_counter() - t_loop - state["eval_s"]
            entry = {"step": step + 1, "heldout_success_rate": round(score, 4), "optimize_s": round(optimize_s, 2)}
            if res.tiebreak_name == "steer_change_to_side_deg" or cfg.select_by_margin:
                # steering: the mean change, signed towards steer_direction; detectors: the mean logit past the goal
                entry[res.tiebreak_name] = round(tie, 3)
            state["evals"].append(entry)
            # the success rate first; a steering patch with the same rate wins by its mean change, a detector
            # patch (select_by_margin) by how far its scores are past the goal
            if (score, tie) > (state["best_score"], state["best_tiebreak"]):
                state["best_score"], state["best_tiebreak"], state["best_step"] = score, tie, step + 1
                state["best_colours"] = image
            if n_candidates > 1:  # the best few, to be driven in closed loop at the end
                state["candidates"] = _keep_candidates(
                    state.get("candidates", []), {"step": step + 1, "score": score, "tie": tie, "colours": image},
                    n_candidates, max(cfg.eval_every, cfg.steps // (2 * n_candidates)))
            if writer:
                writer.add_scalar("heldout/success_rate", score, step + 1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}", heldout=f"{score:.2f}")
        else:
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
        bar.update(1)
        state["elapsed_s"] = elapsed0 + time.perf_counter() - t_loop
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_checkpoint()
        if cfg.target_success is not None and state["best_score"] >= cfg.target_success:
            stopped = "target_success"
            break
        if cfg.plateau_evals is not None and state["best_step"] >= 0 and \
                state["step"] - state["best_step"] >= cfg.plateau_evals * cfg.eval_every:
            stopped = "plateau"
            break
        if cfg.time_budget_s is not None and state["elapsed_s"] >= cfg.time_budget_s:
            stopped = "time_budget"
            break
    bar.close()
    state["stopped_by"] = stopped
    save_checkpoint()
    if writer:
        writer.close()

    selection = None
    if len(state.get("candidates", [])) > 1:
        selection = _choose_by_driving(cfg, out, patch, state["candidates"], objective.goal, progress)
        best_step = selection["chosen_step"]
        chosen = next(c for c in state["candidates"] if c["step"] == best_step)
        state["best_step"], state["best_score"], state["best_colours"] = best_step, chosen["score"], chosen["colours"]
    best = state["best_colours"] if state["best_colours"] is not None else patch.image().detach()
    patch.colours.data.copy_(best)
    final = heldout_eval(best, heldout, {})
    metrics = {**final.summary(), "steps": state["step"], "best_step": state["best_step"],
               "selection_success_rate": round(state["best_score"], 4), "stopped_by": stopped,
               "optimize_s": round(state["elapsed_s"] - state["eval_s"], 1), "eval_s": round(state["eval_s"], 1),
               "wall_s": round(time.perf_counter() - t_start, 1),
               "coverage": round(patch.coverage(), 4)}
    if selection is not None:
        metrics["closed_loop_selection"] = selection
    failures = np.where(~final.success)[0].tolist()
    write_json(out / "failures.json", {"indices": failures,
                                       "params": params_to_json(select(heldout, failures)) if failures else None})
    _write_outputs(out, cfg, patch, state, metrics, profile)
    if drives:
        metrics["closed_loop"] = closed_loop_check(cfg, out, progress)
        _write_outputs(out, cfg, patch, state, metrics, profile)
    return AttackResult(out, metrics, patch)


def _drive_heldout(cfg: AttackConfig, out: Path, patch_dirs: list[Path], progress: bool) -> dict:
    """``run_scenario`` of the held-out scenario for ``cfg.closed_loop_seeds`` seeds from the held-out seed,
    clean and with each patch; the victim drives (a lane-keeper) or sits in the planner (a detector)."""
    from patchsim.closedloop.run import run_scenario

    steers = cfg.victim_kind == "lanekeeper"
    return run_scenario(cfg.heldout.scenario, out, [str(d) for d in patch_dirs], cfg.closed_loop_seeds,
                        seed_start=cfg.heldout.seed, detector="detector:default" if steers else cfg.victim,
                        lanekeeper=cfg.victim if steers else None, videos=0, progress=progress)


def _slot_doc(patch: Patch) -> dict:
    """The slot a patch is made for, as ``patch.json`` records it."""
    s = patch.slot
    return {"name": s.name, "kind": s.kind, "size_m": list(s.size_m), "sign_kind": s.sign_kind}


def _keep_candidates(kept: list[dict], new: dict, n: int, min_gap_steps: int) -> list[dict]:
    """The ``n`` best patches by held-out (score, tie-break), at least ``min_gap_steps`` apart: of two
    nearer than that the better stays, so the candidates come from different stages of the run
    (neighbouring steps give nearly the same patch, which a drive cannot tell apart)."""
    rank = (new["score"], new["tie"])
    near = [c for c in kept if abs(c["step"] - new["step"]) < min_gap_steps]
    if any((c["score"], c["tie"]) >= rank for c in near):
        return kept
    rest = [c for c in kept if all(c is not d for d in near)] + [new]
    return sorted(rest, key=lambda c: (c["score"], c["tie"]), reverse=True)[:n]


def _choose_by_driving(cfg: AttackConfig, out: Path, patch: Patch, candidates: list[dict], goal,
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
                                      "slot": _slot_doc(patch)})
        dirs[name] = (d, c)
    patch.colours.data.copy_(keep)
    _drive_heldout(cfg, folder / "closed_loop", [d for d, _ in dirs.values()], progress)
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
    summary = _drive_heldout(cfg, out / "closed_loop", [out], progress)
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


def _read_checkpoint(path: Path, device: str) -> dict:
    """A run checkpoint, or a CheckpointError naming the file when it is truncated or not one."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch reports a damaged zip or pickle with several exception types
        raise CheckpointError(f"{path}: not a readable patchsim checkpoint (truncated or damaged: "
                              f"{type(exc).__name__}); start the run again with a new --out") from exc
    missing = [k for k in ("colours", "mask", "optimizer", "state") if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise CheckpointError(f"{path}: not a patchsim attack checkpoint (missing {', '.join(missing)})")
    return ck


EXTENDABLE = ("steps", "time_budget_s", "target_success", "plateau_evals")  # keys a resume may change: how long the run goes on


def _check_resume(cfg: AttackConfig, out: Path, state: dict) -> list[str]:
    """The keys of ``EXTENDABLE`` that this resume changes; a CheckpointError naming the keys when the
    config differs otherwise, or when the new limits would not let the run go on."""
    cfg_path = out / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing beside the checkpoint; start the run again with a new --out")
    try:  # keys added to patchsim since the run started take their defaults, as the run had them
        saved = to_dict(from_dict(AttackConfig, yaml.safe_load(cfg_path.read_text()), str(cfg_path)))
    except ConfigError as exc:
        raise CheckpointError(f"{exc}; this run cannot be resumed by this patchsim, start it again with a new --out") \
            from exc
    differ = _differing_keys(yaml.safe_load(yaml.safe_dump(saved)), yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    fixed = [k for k in differ if k not in EXTENDABLE]
    if fixed:
        raise CheckpointError(f"{cfg_path} differs from the config given in {', '.join(fixed[:5])}"
                              f"{' and more' if len(fixed) > 5 else ''}; resume with the same config "
                              f"(only {', '.join(EXTENDABLE)} may change, to extend the run)")
    if cfg.steps < state["step"]:
        raise CheckpointError(f"{out}: the run has made {state['step']} steps; --steps {cfg.steps} is fewer, so it "
                              f"cannot continue (give more steps to extend it)")
    if cfg.time_budget_s is not None and state["elapsed_s"] >= cfg.time_budget_s and state["step"] < cfg.steps \
            and differ:  # asked to go on; with the same config a spent budget just finishes the run
        raise CheckpointError(f"{out}: the run has used its time budget ({state['elapsed_s']:.0f} s of "
                              f"{cfg.time_budget_s:g} s); give a larger --time-budget to extend it")
    return differ


def _differing_keys(a, b, path: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs (mappings compared key by key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            out += [sub] if (k in a) != (k in b) else _differing_keys(a[k], b[k], sub)
        return out
    return [] if a == b else [path or "(the whole config)"]


def _search_sticker_positions(cfg: AttackConfig, patch: Patch, objective: Objective,
                              bank: SceneBank) -> list[tuple[float, ...]]:
    """RP2-style: optimize a poster briefly, then put the stickers where the gradient was largest.

    Returns top-left corners (x, y) (free layout) or rectangles (x, y, w, h) (grid layout), in metres."""
    colours = patch.colours.detach().clone()
    opt = torch.optim.Adam([patch.colours], lr=cfg.lr)
    saliency = torch.zeros(patch.hw, device=patch.colours.device)
    for k in range(cfg.mask_search_steps):
        params = objective.eot.sample(bank, cfg.batch, _step_generator(cfg.seed, -1 - k))
        loss, _ = objective(patch, bank, params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        saliency += patch.colours.grad.abs().sum(0)
        opt.step()
        with torch.no_grad():
            patch.colours.clamp_(0, 1)
    if cfg.mask_search_steps == 0:
        saliency = torch.ones(patch.hw, device=patch.colours.device)
    else:  # reward where the poster moved far from the sign as well as where the gradient was strong
        saliency = saliency / saliency.max().clamp(min=1e-12) + (patch.image() - colours).abs().sum(0).detach()
    patch.colours.data.copy_(colours)
    if cfg.patch.sticker_layout == "grid":
        return place_grid_stickers(saliency, patch, cfg.patch.sticker_size_m, cfg.patch.max_coverage)
    return place_stickers(saliency, patch, cfg.patch.stickers, cfg.patch.sticker_size_m, cfg.patch.max_coverage)


def _read_mask(path: str | None, hw: tuple[int, int], device) -> torch.Tensor:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"{path}: mask image not found or unreadable")
    img = cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return torch.from_numpy(img)[None].to(device)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # pragma: no cover - tensorboard is a dependency, but logs are optional
        return None
    return SummaryWriter(str(out / "tb"))


def _write_outputs(out: Path, cfg: AttackConfig, patch: Patch, state: dict, metrics: dict, profile) -> None:
    from patchsim.runs import versions

    img, mask = patch.print_pixels()
    write_image(out / "patch.png", img, dpi=cfg.patch.print_dpi)
    write_image(out / "mask.png", mask, dpi=cfg.patch.print_dpi)
    preview = (patch.composite().detach().cpu().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    write_image(out / "patch_preview.png", preview)
    write_image(out / "patch_rgba.png", patch.rgba())
    _plot_curves(out / "curves.png", state)
    doc = {
        "patch_id": f"{cfg.name}-s{cfg.seed}",
        "slot": _slot_doc(patch),
        "pixels_per_m": cfg.patch.pixels_per_m,
        "print_dpi": cfg.patch.print_dpi,
        "mask": {"kind": cfg.patch.mask, "coverage": round(patch.coverage(), 4), "pieces": patch.pieces(),
                 "stickers_m": _cut_rects(patch, state.get("positions") or [], cfg.patch.sticker_size_m)},
        "victim": cfg.victim,
        "goal": {"goal": cfg.goal, "source_class": cfg.source_class, "target_class": cfg.target_class,
                 "steer_direction": cfg.steer_direction if cfg.victim_kind == "lanekeeper" else None},
        "losses": {"tv_weight": cfg.tv_weight, "nps_weight": cfg.nps_weight,
                   "similarity_weight": cfg.similarity_weight},
        "eot": to_dict(cfg.eot),
        "printer_profile": profile.name,
        "seed": cfg.seed,
        "versions": versions(),
        "metrics": metrics,
        "files": {"patch": "patch.png", "mask": "mask.png", "preview": "patch_preview.png", "rgba": "patch_rgba.png",
                  "config": "config.yaml", "checkpoint": "checkpoint.pt"},
    }
    write_json(out / "patch.json", doc)


def _cut_rects(patch: Patch, positions: list, size_m: tuple[float, float]) -> list[dict]:
    """The stickers as the mask has them (whole patch pixels), in metres."""
    from patchsim.attack.patch import sticker_pixels

    h, w = patch.hw
    ppm_x, ppm_y = w / patch.slot.size_m[0], h / patch.slot.size_m[1]
    out = []
    for x, y, sw, sh in sticker_rects(positions, size_m):
        kw, kh = sticker_pixels((sw, sh), ppm_x, ppm_y)
        out.append({"x_m": round(x, 4), "y_m": round(y, 4), "w_m": round(kw / ppm_x, 4), "h_m": round(kh / ppm_y, 4)})
    return out


def _plot_curves(path: Path, state: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = state["history"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    if hist:
        ax[0].plot([h["step"] for h in hist], [h["attack"] for h in hist], lw=0.8, label="attack loss")
        ax[0].plot([h["step"] for h in hist], [h["loss"] for h in hist], lw=0.8, label="total loss")
        ax[0].legend()
    ax[0].set_xlabel("step")
    ev = state["evals"]
    if ev:
        ax[1].plot([e["step"] for e in ev], [e["heldout_success_rate"] for e in ev], marker="o")
    ax[1].set_ylim(0, 1)
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("held-out success rate")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

