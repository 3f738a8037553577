"""An attack run: the config's victim, scene banks, patch, objective and loop put together, with its
run directory (:mod:`patchsim.attack.rundir`: resume, outputs) and, when the config asks, the
closed-loop choice and check of the patch (:mod:`patchsim.attack.closed_loop`).

The scene banks (frames, corners, shading: about 200 MB) live in the shared cache
(``patchsim cache``), named by a hash of their configuration, scenario and rendering code; a run
records that key in ``run.json`` and rebuilds the banks identically when the cache was cleared.
Checkpoints hold the loop's whole state (:mod:`patchsim.attack.loop`), so a resumed run ends with the
same patch as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from patchsim.attack.banks import scene_banks
from patchsim.attack.closed_loop import choose_by_driving, closed_loop_check
from patchsim.attack.config import AttackConfig
from patchsim.attack.evaluate import HeldoutSamples
from patchsim.attack.loop import AttackLoop
from patchsim.attack.objective import Objective, load_attack_victim, step_generator
from patchsim.attack.patch import Patch, SlotInfo, place_grid_stickers, place_stickers
from patchsim.attack.rundir import check_resume, read_checkpoint, tensorboard, write_checkpoint, write_outputs
from patchsim.config import to_dict
from patchsim.eot.pipeline import EOT
from patchsim.eot.printer import load_profile
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import params_to_json, select
from patchsim.errors import CheckpointError
from patchsim.runs import manifest, output_dir, write_json, write_text


@dataclass
class AttackResult:
    out_dir: Path
    metrics: dict
    patch: Patch


def run_attack(cfg: AttackConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> AttackResult:
    """Optimize a patch as ``cfg`` says; write the run directory; return the held-out metrics.

    A run that fails before its first checkpoint leaves no run directory behind; after it, the
    directory stays for ``--resume``.
    """
    with output_dir(out_dir, keep=("checkpoint.pt",)):
        return _run(cfg, Path(out_dir), resume, progress)


def _run(cfg: AttackConfig, out: Path, resume: bool, progress: bool) -> AttackResult:
    from tqdm import tqdm

    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: nothing to resume (no checkpoint)")
    if not resume and ckpt_path.is_file():
        raise CheckpointError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    extended: list[str] = []
    if resume:  # everything checked before anything in the run directory is rewritten
        ck = read_checkpoint(ckpt_path, cfg.device)
        extended = check_resume(cfg, out, ck["state"])
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
    heldout = HeldoutSamples(eot, heldout_bank, cfg.eval_samples, cfg.final_samples, cfg.seed)
    write_json(out / "heldout_params.json", {"select": params_to_json(heldout.select),
                                             "report": params_to_json(heldout.report)})

    drives = bool(cfg.closed_loop_seeds) and not cfg.heldout.photos
    loop = AttackLoop(cfg, objective, patch, bank, heldout, candidates=cfg.closed_loop_candidates if drives else 1)
    if resume:
        try:
            loop.load_state_dict(ck)
        except CheckpointError as exc:
            raise CheckpointError(f"{ckpt_path}: {exc}") from exc
        if extended:  # the run goes on past where it stopped
            loop.state.pop("stopped_by", None)
            loop.state.setdefault("extensions", []).append(
                {"at_step": loop.state["step"], **{k: getattr(cfg, k) for k in extended}})
    else:
        _set_mask(cfg, patch, objective, bank, loop.state)
    state = loop.state

    # a run killed after its loop had ended (before its outputs were written) only finishes
    done_by = loop.stop_reason() if resume else None
    if done_by is not None:
        state["stopped_by"] = done_by
    else:
        writer = tensorboard(out)
        bar = tqdm(total=cfg.steps, initial=state["step"], desc=cfg.name, disable=not progress, leave=False)

        def on_step(parts: dict, entry: dict | None) -> None:
            step = state["step"]
            if writer:
                for k, v in parts.items():
                    writer.add_scalar(f"train/{k}", v, step)
                if entry is not None:
                    writer.add_scalar("heldout/success_rate", entry["heldout_success_rate"], step)
            postfix = {"loss": f"{parts['loss']:.3f}"}
            if entry is not None:
                postfix["heldout"] = f"{entry['heldout_success_rate']:.2f}"
            bar.set_postfix(**postfix)
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                write_checkpoint(ckpt_path, loop.state_dict())

        loop.run(on_step)
        bar.close()
        if writer:
            writer.close()
    stopped = state["stopped_by"]
    write_checkpoint(ckpt_path, loop.state_dict())

    selection = None
    if len(state.get("candidates", [])) > 1:
        selection = choose_by_driving(cfg, out, patch, state["candidates"], objective.goal, progress)
        best_step = selection["chosen_step"]
        chosen = next(c for c in state["candidates"] if c["step"] == best_step)
        state["best_step"], state["best_score"], state["best_colours"] = best_step, chosen["score"], chosen["colours"]
    best = loop.best_image()
    patch.colours.data.copy_(best)
    final = heldout.report_result(victim, eot, objective.goal, best, patch.mask, cfg.device)
    metrics = {**final.summary(), "steps": state["step"], "best_step": state["best_step"],
               "selection_success_rate": round(state["best_score"], 4), "stopped_by": stopped,
               "optimize_s": round(state["elapsed_s"] - state["eval_s"], 1), "eval_s": round(state["eval_s"], 1),
               "wall_s": round(time.perf_counter() - t_start, 1),
               "coverage": round(patch.coverage(), 4), "heldout_by_distance_m": heldout.by_distance(final)}
    if selection is not None:
        metrics["closed_loop_selection"] = selection
    failures = final.failed_samples().tolist()
    write_json(out / "failures.json", {"indices": failures,
                                       "params": params_to_json(select(heldout.report, failures)) if failures
                                       else None})
    write_outputs(out, cfg, patch, state, metrics, profile)
    if drives:
        metrics["closed_loop"] = closed_loop_check(cfg, out, progress)
        write_outputs(out, cfg, patch, state, metrics, profile)
    return AttackResult(out, metrics, patch)


def _set_mask(cfg: AttackConfig, patch: Patch, objective: Objective, bank: SceneBank, state: dict) -> None:
    """The patch's mask as the config says: stickers (placed by a short poster search unless given),
    a mask image, or the whole slot; ``state["positions"]`` records where the stickers went."""
    if cfg.patch.mask == "stickers":
        positions = cfg.patch.sticker_positions_m or _search_sticker_positions(cfg, patch, objective, bank)
        state["positions"] = [list(p) for p in positions]
        patch.set_mask(patch.sticker_mask(positions))
    elif cfg.patch.mask == "file":
        patch.set_mask(_read_mask(cfg.patch.mask_file, patch.hw, cfg.device))
    patch.check_applicable()


def _search_sticker_positions(cfg: AttackConfig, patch: Patch, objective: Objective,
                              bank: SceneBank) -> list[tuple[float, ...]]:
    """RP2-style: optimize a poster briefly, then put the stickers where the gradient was largest.

    Returns top-left corners (x, y) (free layout) or rectangles (x, y, w, h) (grid layout), in metres."""
    colours = patch.colours.detach().clone()
    opt = torch.optim.Adam([patch.colours], lr=cfg.lr)
    saliency = torch.zeros(patch.hw, device=patch.colours.device)
    for k in range(cfg.mask_search_steps):
        params = objective.eot.sample(bank, cfg.batch, step_generator(cfg.seed, -1 - k))
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


