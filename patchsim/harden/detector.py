"""Detector hardening: a min-max game in rounds between attacks on the current model and fine-tuning it.

Each round:

1. **Attack** the current model with every configured attack (the EOT optimizer, a short budget, a
   seed of its own); each patch joins a pool that grows over the rounds.
2. **Attacker network**: train the patch generator (:mod:`patchsim.harden.attacker`) against the
   current model, going on from the last round's generator.
3. **Fine-tune** the model with Ultralytics' trainer on the clean training images, where each face of
   an attacked sign kind carries, with probability ``share``, random stickers (``random_share`` of
   them, :mod:`patchsim.harden.random_paint`), a pool patch or a fresh generated one
   (:mod:`patchsim.harden.trainer`), labels kept.

Run directory::

    OUT/state.json             finished rounds (a killed run resumes after the last one)
    OUT/pool/*.png             every round's optimizer patches (RGBA)
    OUT/round_K/attacks/NAME/  the round's attack runs (resumable)
    OUT/round_K/attacker.pt    the attacker network after round K
    OUT/round_K/train/         the Ultralytics fine-tuning run; OUT/round_K/detector.pt its result
    OUT/detector.pt            the hardened detector (patchsim checkpoint)
    OUT/detector_ultralytics.pt  the same weights as an Ultralytics .pt (``yolo predict model=...``)
    OUT/report.json, report.md, rounds.png
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import yaml

from patchsim.config import to_dict
from patchsim.errors import ConfigError
from patchsim.harden.config import HardenDetectorConfig
from patchsim.harden.rounds import attack_config_for, attack_round, check_round_attacks, plot_rounds, read_state
from patchsim.runs import manifest, output_dir, write_json, write_text

STATE_FORMAT = "patchsim-harden-detector/1"


def attack_device(train_device: str) -> str:
    """The attacks' device for a training device (``0,1``, Ultralytics' DDP, attacks on ``cuda:0``)."""
    if train_device.replace(",", "").isdigit():
        return f"cuda:{train_device.split(',')[0]}"
    return train_device


def _data(path: str, model_names: dict[int, str]) -> dict:
    """The data set's YAML (its root made absolute), checked: the model's classes in the same order, and the
    sign faces' corners that the patches are placed with."""
    from patchsim.harden.trainer import corners_dir
    from patchsim.victims.train_detector import read_data_yaml

    p = Path(path)
    data = read_data_yaml(p)
    if not isinstance(data, dict) or "names" not in data or "train" not in data:
        raise ConfigError("not a detector data set (needs names and train)", p)
    names = data["names"]
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    if [str(n) for n in names] != [model_names[i] for i in sorted(model_names)]:
        raise ConfigError(f"the data set's classes {names} differ from the model's "
                          f"{[model_names[i] for i in sorted(model_names)]}", p, "names")
    corners = corners_dir(Path(data["path"]) / str(data["train"]))
    if not corners.is_dir() or not any(corners.glob("*.json")):
        raise ConfigError(f"no sign-face corners in {corners} (written by `patchsim data generate --task detector`); "
                          f"hardening places its patches with them", p, "train")
    return data


def run_round_attacks(cfg: HardenDetectorConfig, k: int, current: str, folder: Path, pool_dir: Path,
                      progress: bool) -> tuple[list[dict], list[dict]]:
    """Round ``k``'s attacks on the model ``current``; returns their figures and pool entries."""
    figures, made = attack_round(cfg.attacks, k, current, cfg.seed, attack_device(cfg.device), folder, pool_dir,
                                progress)
    return figures, [{"file": f"../pool/{name}", "sign_kind": doc["slot"]["sign_kind"],
                      "size_m": doc["slot"]["size_m"], "goal": acfg.goal, "round": k, "attack": acfg.name}
                     for name, acfg, doc in made]


def run_round_attacker(cfg: HardenDetectorConfig, k: int, current: str, folder: Path, previous: Path | None,
                       progress: bool) -> dict | None:
    """Train the attacker network against ``current`` (from the previous round's); write ``attacker.pt``."""
    from patchsim.harden.attacker import PatchGenerator, train_against

    if cfg.attacker.steps == 0:
        return None
    acfg = attack_config_for(cfg.attacker_attack, current, cfg.seed + 1000 * k + 999, device=attack_device(cfg.device))
    init = PatchGenerator.load(previous)[0] if previous is not None and previous.is_file() else None
    g, slot, stats, score = train_against(cfg.attacker, acfg, init, progress)
    g.save(folder / "attacker.pt", {"round": k, "attack": acfg.name, "victim": current})
    return {"file": "attacker.pt", "sign_kind": slot.sign_kind, "size_m": list(slot.size_m),
            "config": to_dict(cfg.attacker), "train": stats, "score": score}


def fine_tune(cfg: HardenDetectorConfig, start: str, data: dict, patches: Path | None, folder: Path) -> dict:
    """Fine-tune ``start`` with Ultralytics' trainer on ``data`` (patches from the folder ``patches``);
    write ``folder/detector.pt`` and return the validation metrics and time."""
    from patchsim.harden.trainer import PATCHES_KEY, _harden_trainer_class
    from patchsim.victims.detector import save_detector_checkpoint, save_ultralytics_checkpoint, trainable_detector
    from patchsim.victims.offline import ultralytics
    from patchsim.victims.train_detector import AUGMENT, results_metrics

    ultralytics()
    from ultralytics import YOLO

    model, meta = trainable_detector(start)
    names = {int(i): str(n) for i, n in model.names.items()}
    start_pt = save_ultralytics_checkpoint(folder / "start.pt", model, names)
    round_data = {**data, **({PATCHES_KEY: str(patches.resolve())} if patches is not None else {})}
    data_yaml = write_text(folder / "data.yaml", yaml.safe_dump(round_data, sort_keys=False))
    shutil.rmtree(folder / "train", ignore_errors=True)  # a killed fine-tuning starts again
    t0 = time.perf_counter()
    YOLO(str(start_pt)).train(
        trainer=_harden_trainer_class(), data=str(data_yaml), epochs=cfg.epochs_per_round, imgsz=cfg.imgsz,
        batch=cfg.batch, device=cfg.device, workers=cfg.workers, seed=cfg.seed, deterministic=True,
        project=str(folder.resolve()), name="train", exist_ok=True, pretrained=True, amp=cfg.device != "cpu",
        plots=False, val=True, cache="ram", fraction=cfg.fraction, patience=1000, verbose=False,
        optimizer="AdamW", lr0=cfg.lr, lrf=0.1, cos_lr=True, warmup_epochs=0.0,
        close_mosaic=1 if cfg.close_mosaic and cfg.epochs_per_round >= 2 else 0, **AUGMENT)
    seconds = time.perf_counter() - t0
    last = folder / "train" / "weights" / "last.pt"
    trained, _ = trainable_detector(last)
    save_detector_checkpoint(folder / "detector.pt", trained, names, {
        **{k: v for k, v in meta.items() if k in ("imgsz", "train_imgsz")}, "hardened_from": str(start),
        "train_config": to_dict(cfg)})
    (folder / "start.pt").unlink(missing_ok=True)
    (folder / "train" / "weights" / "best.pt").unlink(missing_ok=True)  # the last epoch's weights are the round's
    return {"val_metrics": results_metrics(folder / "train" / "results.csv"), "train_s": round(seconds, 1),
            "ultralytics_weights": str(last)}


def harden_detector(cfg: HardenDetectorConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the rounds; write the hardened detector and the report. Returns the report."""
    from patchsim.harden.trainer import write_patch_source
    from patchsim.victims.detector import load_detector

    baseline = load_detector(cfg.baseline)  # every input checked before the first round
    check_round_attacks(cfg.attacks, cfg.baseline, cfg.seed, "detector")
    attacker_cfg = attack_config_for(cfg.attacker_attack, cfg.baseline, cfg.seed)
    if attacker_cfg.victim_kind != "detector":
        raise ConfigError(f"attacker_attack {cfg.attacker_attack!r} is not a detector attack", key="attacker_attack")
    data = _data(cfg.data, baseline.names)
    out = Path(out_dir)
    state_path = out / "state.json"
    with output_dir(out, keep=("state.json", "round_1")):
        state = read_state(state_path, cfg, STATE_FORMAT)
        write_json(out / "run.json", manifest("harden detector", cfg.seed, to_dict(cfg)))
        pool_dir = out / "pool"
        pool_dir.mkdir(exist_ok=True)
        t_run = time.perf_counter()
        for k in range(len(state["rounds"]) + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            current = str(out / state["rounds"][-1]["detector"]) if state["rounds"] else cfg.baseline
            folder = out / f"round_{k}"
            figures, entries = run_round_attacks(cfg, k, current, folder / "attacks", pool_dir, progress)
            previous = out / f"round_{k - 1}" / "attacker.pt" if k > 1 else None
            attacker = run_round_attacker(cfg, k, current, folder, previous, progress)
            pool = state["pool"] + entries
            profile = folder / "attacks" / figures[0]["attack"] / "printer_profile.json"
            write_patch_source(folder, pool, cfg.share, cfg.attacker_share, cfg.gain_jitter,
                               str(profile.relative_to(folder)), attacker,
                               {"share": cfg.random_share,
                                "layout": to_dict(replace(cfg.attacker, full_face_share=0.0))})
            trained = fine_tune(cfg, current, data, folder, folder)
            state["pool"] = pool
            # paths in the state are relative to the run directory, so a moved run resumes
            trained["ultralytics_weights"] = os.path.relpath(trained["ultralytics_weights"], out)
            state["rounds"].append({"round": k, "model_attacked": os.path.relpath(current, out) if state["rounds"]
                                    else current, "detector": f"round_{k}/detector.pt", "attacks": figures,
                                    "attacker": attacker, **trained, "round_s": round(time.perf_counter() - t0, 1)})
            state["elapsed_s"] = round(state.get("elapsed_s", 0.0) + time.perf_counter() - t0, 1)
            write_json(state_path, state)
        last = state["rounds"][-1]
        shutil.copyfile(out / last["detector"], out / "detector.pt")
        shutil.copyfile(out / last["ultralytics_weights"], out / "detector_ultralytics.pt")
        report = {"baseline": cfg.baseline, "detector": str(out / "detector.pt"),
                  "ultralytics_weights": str(out / "detector_ultralytics.pt"), "rounds": state["rounds"],
                  "pool_size": len(state["pool"]), "elapsed_s": state["elapsed_s"],
                  "this_call_s": round(time.perf_counter() - t_run, 1), "config": to_dict(cfg)}
        write_json(out / "report.json", report)
        write_text(out / "report.md", _report_md(report))
        plot_rounds(out / "rounds.png", state["rounds"])
    return report


def _report_md(report: dict) -> str:
    lines = ["# Detector hardening", "", f"Baseline `{report['baseline']}`; hardened model `{report['detector']}` "
             f"(Ultralytics weights: `{report['ultralytics_weights']}`). {len(report['rounds'])} rounds, "
             f"{report['pool_size']} patches in the pool, {report['elapsed_s']:.0f} s.", "",
             "Each round's attacks were optimized against the model as it was at the start of that round.", "",
             "| round | attack | held-out success | attacker network success | val mAP50 | round s |",
             "|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        att = r.get("attacker") or {}
        a_rate = att.get("score", {}).get("heldout_success_rate")
        m = r.get("val_metrics", {}).get("metrics/mAP50(B)")
        for j, a in enumerate(r["attacks"]):
            lines.append(f"| {r['round']} | {a['attack']} | {a['heldout_success_rate']:.1%} | "
                         f"{'' if j or a_rate is None else f'{a_rate:.1%}'} | "
                         f"{'' if j or m is None else f'{m:.3f}'} | {'' if j else r['round_s']} |")
    lines += ["", "Judge the hardened model with `patchsim harden eval`: a fresh attack against it, with the "
                  "baseline's budget, in closed loop."]
    return "\n".join(lines) + "\n"
