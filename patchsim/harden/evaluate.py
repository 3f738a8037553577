"""Judging a hardened model against its baseline, as the field's lesson asks (APDE, ICCV 2025): by fresh
attacks optimized against each model with the same configuration and budget, in closed loop.

For each model (``baseline``, ``hardened``):

- clean quality: detectors, mAP50 on the data set's held-out test frames and stop-sign recall by
  distance; lane-keepers, the mean lateral offset of clean drives (straight and curved road);
- adaptive attacks: every configured attack made afresh against the model (same config, seed and
  budget for both), its held-out per-frame success;
- detectors: the attacker network retrained from scratch against the model, its held-out success;
- closed loop: the held-out sweep with the model at work and its own adaptive patch in place, clean
  vs patched: how often the car still stops before the line, or leaves its lane.

And transfer: the baseline's adaptive patches against the hardened model, on the same held-out samples.

Run directory::

    OUT/attacks/{baseline,hardened}/NAME/   the adaptive attack runs (resumable)
    OUT/closed_loop/{baseline,hardened}/    the held-out sweeps
    OUT/report.json, OUT/report.md, OUT/report.png
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from patchsim.config import to_dict
from patchsim.harden.config import HardenEvalConfig
from patchsim.harden.rounds import attack_config_for, check_attacks
from patchsim.runs import manifest, output_dir, write_json, write_text

DEFAULT_ATTACKS = {"detector": ["stop_sticker_vanish"], "lanekeeper": ["road_depart_pilotnet"]}
HELDOUT_SWEEPS = {"detector": "scenarios/sweeps/stop_sign_heldout.yaml",
                  "lanekeeper": "scenarios/sweeps/lane_keep_straight_heldout.yaml"}


def model_kind(spec: str) -> str:
    """``detector`` or ``lanekeeper``: the kind of the model a spec loads."""
    from patchsim.victims.registry import load_victim

    return "lanekeeper" if hasattr(load_victim(spec), "road_view") else "detector"


def _attack_cfg(cfg: HardenEvalConfig, name: str, victim: str):
    over = {"device": cfg.device}
    if cfg.attack_steps is not None:
        over["steps"] = cfg.attack_steps
    if cfg.attack_time_budget_s is not None:
        over["time_budget_s"] = cfg.attack_time_budget_s
    return attack_config_for(name, victim, cfg.seed, **over)


def headline_attack(attacks: dict[str, tuple[str, object]], kind: str) -> str:
    """The attack whose patch the closed-loop sweep carries: for detectors the first sticker attack (the
    adaptive sticker figure), else the first attack."""
    if kind == "detector":
        for name, (_, acfg) in attacks.items():
            if acfg.patch.mask == "stickers":
                return name
    return next(iter(attacks))


def _run_attack(acfg, folder: Path, progress: bool) -> dict:
    from patchsim.attack.optimizer import run_attack
    from patchsim.config import read_json

    if not (folder / "patch.json").is_file():
        run_attack(acfg, folder, resume=(folder / "checkpoint.pt").is_file(), progress=progress)
    return read_json(folder / "patch.json", "attack result")["metrics"]


def transfer_success(acfg, patch_dir: Path, victim_spec: str, params_dir: Path) -> float:
    """Held-out success of the patch in ``patch_dir`` against ``victim_spec``, on the held-out samples
    recorded in ``params_dir/heldout_params.json`` (the report samples of an attack with the same config)."""
    from patchsim.attack.banks import scene_banks
    from patchsim.attack.evaluate import evaluate_heldout
    from patchsim.closedloop.patches import load_patch
    from patchsim.config import read_json
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile
    from patchsim.eot.transforms import params_from_json
    from patchsim.victims.registry import load_victim

    t = torch.from_numpy(load_patch(patch_dir).rgba.astype(np.float32) / 255.0).permute(2, 0, 1)
    _, heldout_bank, _ = scene_banks(acfg)
    params = params_from_json(read_json(params_dir / "heldout_params.json", "held-out samples")["report"])
    eot = EOT(acfg.eot, load_profile(str(patch_dir / "printer_profile.json")))
    victim = load_victim(victim_spec, device=acfg.device)
    res = evaluate_heldout(victim, eot, heldout_bank.to(acfg.device), params, t[:3].to(acfg.device),
                           t[3:].to(acfg.device), acfg.make_goal(), device=acfg.device)
    return round(res.success_rate, 4)


def attacker_network_success(cfg: HardenEvalConfig, name: str, victim_spec: str, progress: bool) -> dict:
    """Train the attacker network from scratch against ``victim_spec`` on attack ``name``'s scenes; score it."""
    from patchsim.harden.attacker import train_against

    _, _, stats, score = train_against(cfg.attacker, _attack_cfg(cfg, name, victim_spec), progress=progress)
    return {"train": stats, **score}


def evaluate_hardening(cfg: HardenEvalConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Measure both models as the module says; write ``report.json``, ``report.md`` and ``report.png``. Returns
    the report."""
    from patchsim.closedloop.sweep import load_sweep
    from patchsim.errors import ConfigError

    kind = model_kind(cfg.model)  # every input checked before the first measurement
    if model_kind(cfg.baseline) != kind:
        raise ConfigError(f"the baseline {cfg.baseline!r} is not a {kind} like the model {cfg.model!r}", key="baseline")
    if kind == "detector" and not Path(cfg.data).is_file():
        raise FileNotFoundError(f"{cfg.data}: data.yaml not found (make it with `patchsim data generate`)")
    named = check_attacks([(given, _attack_cfg(cfg, given, cfg.baseline))
                           for given in cfg.attacks or DEFAULT_ATTACKS[kind]], kind)
    attacks = {name: given for name, (given, _) in named.items()}  # run folders and report keys -> as given
    sweep = HELDOUT_SWEEPS[kind] if cfg.sweep == "auto" else cfg.sweep
    if sweep:
        load_sweep(sweep)
    headline = headline_attack(named, kind)
    sticker_headline = named[headline][1].patch.mask == "stickers"
    out = Path(out_dir)
    t0 = time.perf_counter()
    report: dict = {"kind": kind, "baseline_model": cfg.baseline, "hardened_model": cfg.model,
                    "headline_attack": headline, "config": to_dict(cfg)}
    with output_dir(out, keep=("attacks",)):
        write_json(out / "run.json", manifest("harden eval", cfg.seed, to_dict(cfg)))
        for role, spec in (("baseline", cfg.baseline), ("hardened", cfg.model)):
            r: dict = {"model": spec, **_clean_quality(cfg, spec, kind)}
            r["adaptive"] = {}
            for name, given in attacks.items():
                metrics = _run_attack(_attack_cfg(cfg, given, spec), out / "attacks" / role / name, progress)
                r["adaptive"][name] = {k: metrics[k] for k in ("heldout_success_rate", "clean_detection_rate",
                                                             "adversarial_detection_rate", "mean_steer_change_deg",
                                                             "steps", "optimize_s", "heldout_by_distance_m")
                                           if k in metrics}
            if kind == "detector":
                if sticker_headline:
                    r["adaptive_sticker_success"] = r["adaptive"][headline]["heldout_success_rate"]
                if cfg.attacker.steps:
                    r["attacker_network"] = attacker_network_success(cfg, attacks[headline], spec, progress)
            if sweep:
                r.update(_closed_loop(cfg, sweep, spec, kind, out / "attacks" / role / headline,
                                      out / "closed_loop" / role, progress))
            report[role] = r
        report["transfer"] = {name: transfer_success(_attack_cfg(cfg, given, cfg.model),
                                                     out / "attacks" / "baseline" / name, cfg.model,
                                                     out / "attacks" / "hardened" / name)
                              for name, given in attacks.items()}
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        write_json(out / "report.json", report)
        write_text(out / "report.md", _report_md(report))
        plot_report(out / "report.png", report)
    return report


def _clean_quality(cfg: HardenEvalConfig, spec: str, kind: str) -> dict:
    from patchsim.victims.evaluate import RecallConfig, detector_map50, lanekeeper_closed_loop, stop_sign_recall
    from patchsim.victims.registry import load_victim

    model = load_victim(spec, device=cfg.device)
    if kind == "lanekeeper":
        drives = lanekeeper_closed_loop(model, seeds=cfg.clean_seeds, device=cfg.device)
        return {"clean_mean_abs_offset_m": drives["mean_abs_offset_m"], "clean_departures": drives["departures"],
                "clean_drives": drives["runs"], "clean_by_scenario": drives["scenarios"]}
    m = detector_map50(model, cfg.data)
    r = {"map50": round(m["map50"], 4), "ap50": m["ap50"]}
    if cfg.recall_seeds:
        r["stop_sign_recall"] = stop_sign_recall(model, RecallConfig(seeds=cfg.recall_seeds))["recall"]
    return r


def _closed_loop(cfg: HardenEvalConfig, sweep: str, spec: str, kind: str, patch_dir: Path, out: Path,
                 progress: bool) -> dict:
    """The held-out sweep with ``spec`` at work, clean and with its own adaptive patch."""
    from patchsim.closedloop.sweep import run_sweep

    victim = {"detector": spec} if kind == "detector" else {"lanekeeper": spec}
    summary = run_sweep(sweep, out, workers=cfg.workers, patches=[str(patch_dir)], samples=cfg.sweep_samples,
                        progress=progress, **victim)
    variants = summary["variants"]
    clean, patched = variants["clean"], next(v for k, v in variants.items() if k != "clean")
    r = {"closed_loop_episodes": summary["episodes"]}
    if kind == "detector":
        r["closed_loop_stop_rate"] = patched["stopped_before_line"]["rate"]
        r["clean_closed_loop_stop_rate"] = clean["stopped_before_line"]["rate"]
    else:
        r["adaptive_departure_rate"] = patched["lane_departure"]["rate"]
        r["clean_departure_rate"] = clean["lane_departure"]["rate"]
        if patched.get("mean_time_to_departure_s") is not None:
            r["mean_time_to_departure_s"] = patched["mean_time_to_departure_s"]
    return r


def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}" if isinstance(v, float) else str(v)


def _band_cell(band: dict) -> str:
    """A distance band's held-out success, with the clean detection rate in brackets."""
    return f"{_pct(band['heldout_success_rate'])} ({_pct(band['clean_detection_rate'])})"


def _headline_bands(report: dict) -> tuple[dict, dict, list[str]]:
    """The headline attack's held-out figures by distance band for the baseline and the hardened model, and
    the bands both have counted samples in."""
    headline = report["headline_attack"]
    bands_b = report["baseline"]["adaptive"].get(headline, {}).get("heldout_by_distance_m") or {}
    bands_h = report["hardened"]["adaptive"].get(headline, {}).get("heldout_by_distance_m") or {}
    return bands_b, bands_h, [k for k in bands_b if bands_b[k].get("counted") and bands_h.get(k, {}).get("counted")]


def _report_md(report: dict) -> str:
    b, h = report["baseline"], report["hardened"]
    rows = []
    if "map50" in b:
        rows.append(("clean mAP50 (test frames)", f"{b['map50']:.3f}", f"{h['map50']:.3f}"))
        for key in (b.get("stop_sign_recall") or {}):
            rows.append((f"stop-sign recall {key}", _pct(b["stop_sign_recall"][key]), _pct(h["stop_sign_recall"][key])))
    if "clean_mean_abs_offset_m" in b:
        rows.append(("clean drives: mean lateral offset", f"{b['clean_mean_abs_offset_m']:.3f} m",
                     f"{h['clean_mean_abs_offset_m']:.3f} m"))
        rows.append(("clean drives: departures", f"{b['clean_departures']}/{b['clean_drives']}",
                     f"{h['clean_departures']}/{h['clean_drives']}"))
    for name in b["adaptive"]:
        rows.append((f"adaptive {name}: held-out success", _pct(b["adaptive"][name]["heldout_success_rate"]),
                     _pct(h["adaptive"][name]["heldout_success_rate"])))
    bands_b, bands_h, bands = _headline_bands(report)
    for band in bands if "map50" in b else ():
        rows.append((f"adaptive {report['headline_attack']} at {band} m: held-out success (clean detection)",
                     _band_cell(bands_b[band]), _band_cell(bands_h[band])))
    for name, v in report["transfer"].items():
        rows.append((f"transfer: the baseline's {name} patch", _pct(b["adaptive"][name]["heldout_success_rate"]),
                     _pct(v)))
    if "attacker_network" in b:
        rows.append(("attacker network (retrained): held-out success",
                     _pct(b["attacker_network"]["heldout_success_rate"]),
                     _pct(h["attacker_network"]["heldout_success_rate"])))
    headline = report["headline_attack"]
    if "closed_loop_stop_rate" in b:
        rows.append(("closed loop, clean: stopped before the line", _pct(b["clean_closed_loop_stop_rate"]),
                     _pct(h["clean_closed_loop_stop_rate"])))
        rows.append((f"closed loop, own adaptive {headline}: stopped before the line",
                     _pct(b["closed_loop_stop_rate"]), _pct(h["closed_loop_stop_rate"])))
    if "adaptive_departure_rate" in b:
        rows.append(("closed loop, clean: lane departures", _pct(b["clean_departure_rate"]),
                     _pct(h["clean_departure_rate"])))
        rows.append((f"closed loop, own adaptive {headline}: lane departures", _pct(b["adaptive_departure_rate"]),
                     _pct(h["adaptive_departure_rate"])))
    lines = ["# Hardening evaluation", "",
             f"Baseline `{report['baseline_model']}`, hardened `{report['hardened_model']}`. Every attack was made "
             "afresh against each model with the same configuration, seed and budget.", "",
             "| measure | baseline | hardened |", "|---|---|---|"]
    lines += [f"| {a} | {x} | {y} |" for a, x, y in rows]
    return "\n".join(lines) + "\n"


def plot_report(path: Path, report: dict) -> None:
    """Baseline and hardened side by side: each adaptive attack's held-out success (and the transfer of the
    baseline's patch); the headline attack's success by distance band; the closed-loop rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchsim.runs import atomic_path

    b, h, headline = report["baseline"], report["hardened"], report["headline_attack"]
    bands_b, bands_h, bands = _headline_bands(report)
    loop = [(k, label) for k, label in (("closed_loop_stop_rate", "stopped, own patch"),
                                        ("clean_closed_loop_stop_rate", "stopped, clean"),
                                        ("adaptive_departure_rate", "departures, own marking"),
                                        ("clean_departure_rate", "departures, clean")) if k in b and k in h]
    panels = 1 + bool(bands) + bool(loop)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    axes = list(axes[0])

    def bars(ax, labels: list[str], base: list[float], hard: list[float], title: str, ylabel: str) -> None:
        x = np.arange(len(labels))
        ax.bar(x - 0.2, base, 0.4, label="baseline")
        ax.bar(x + 0.2, hard, 0.4, label="hardened")
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
        ax.set_ylim(0, 1.25)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7, ncol=2, loc="upper center")

    names = list(b["adaptive"])
    labels = [f"{n} (adaptive)" for n in names] + [f"{n} (baseline's patch)" for n in report["transfer"]]
    base = [b["adaptive"][n]["heldout_success_rate"] for n in names] + [
        b["adaptive"][n]["heldout_success_rate"] for n in report["transfer"]]
    hard = [h["adaptive"][n]["heldout_success_rate"] for n in names] + list(report["transfer"].values())
    bars(axes.pop(0), labels, base, hard, "fresh attacks, held-out success", "success")
    if bands:
        bars(axes.pop(0), [f"{k} m" for k in bands],
             [bands_b[k]["heldout_success_rate"] for k in bands], [bands_h[k]["heldout_success_rate"] for k in bands],
             f"{headline} by distance", "success")
    if loop:
        bars(axes.pop(0), [label for _, label in loop], [b[k] for k, _ in loop], [h[k] for k, _ in loop],
             f"held-out sweep, own adaptive {headline}", "share of episodes")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
