"""The run directory of an attack: its checkpoint (read, written atomically, checked before a resume)
and its outputs.

    config.yaml            the resolved attack config
    run.json               seed, versions, command line
    printer_profile.json   the printer profile the run started with
    heldout_params.json    the held-out EOT conditions (replayable)
    checkpoint.pt          patch, optimizer and progress; ``--resume`` continues from it
    patch.png, mask.png    the best patch at print resolution, and its mask
    patch_preview.png      the slot as printed (patch over the original face)
    patch_rgba.png         the patch with its mask as alpha (what scenarios and hardening load)
    patch.json             slot, size, dpi, victim, losses, EOT config, seed, versions, metrics
    failures.json          held-out conditions where the patch failed (replay them)
    curves.png, tb/        loss and held-out success curves; TensorBoard logs
    candidates/, closed_loop/   the closed-loop choice and check, when the config asks for them
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from patchsim.attack.config import AttackConfig
from patchsim.attack.patch import Patch, sticker_rects
from patchsim.config import from_dict, to_dict
from patchsim.errors import CheckpointError, ConfigError
from patchsim.runs import atomic_path, write_image, write_json


def write_checkpoint(path: Path, state_dict: dict) -> None:
    """``state_dict`` (an ``AttackLoop``'s) to ``path``, atomically: a killed run leaves the last whole one."""
    with atomic_path(path) as tmp:
        torch.save(state_dict, tmp)


def read_checkpoint(path: Path, device: str) -> dict:
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


#: keys a resume may change: how long the run goes on
EXTENDABLE = ("steps", "time_budget_s", "target_success", "plateau_evals")


def check_resume(cfg: AttackConfig, out: Path, state: dict) -> list[str]:
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


def tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # pragma: no cover - tensorboard is a dependency, but logs are optional
        return None
    return SummaryWriter(str(out / "tb"))


def slot_doc(patch: Patch) -> dict:
    """The slot a patch is made for, as ``patch.json`` records it."""
    s = patch.slot
    return {"name": s.name, "kind": s.kind, "size_m": list(s.size_m), "sign_kind": s.sign_kind}


def write_outputs(out: Path, cfg: AttackConfig, patch: Patch, state: dict, metrics: dict, profile) -> None:
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
        "slot": slot_doc(patch),
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

