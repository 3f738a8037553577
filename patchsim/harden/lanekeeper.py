"""Lane-keeper hardening: the detector's round loop with road markings, and DAgger over the patch.

Each round:

1. **Attack** the current lane-keeper with every configured road attack; the markings join a pool.
2. **Collect**: drive the attack's scenario with a pool marking painted on its slot, in the
   scenario's randomized conditions and over a range of camera mounts; in a share of the drives the
   current lane-keeper itself steers (DAgger: it meets the marking as it would, and the states it
   drifts into), otherwise the expert with steering noise (DART). Every frame is labelled with the
   expert's steering, which the marking does not change. Fresh random roads without a patch keep
   clean driving in the mix.
3. **Fine-tune** the network on both (PilotNet: its steering; LaneNet: its marking segmenter, whose
   labels come from the label render, where a painted patch is not a lane marking).

Run directory: as :mod:`patchsim.harden.detector` (``state.json``, ``pool/``, ``round_K/``,
``lanekeeper.pt``, ``report.json``, ``report.md``, ``rounds.png``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from patchsim.config import FieldError, param, to_dict
from patchsim.harden.config import RoundAttack
from patchsim.harden.random_paint import random_marking
from patchsim.harden.rounds import attack_round, check_round_attacks, plot_rounds, read_state
from patchsim.runs import manifest, output_dir, write_json, write_text

STATE_FORMAT = "patchsim-harden-lanekeeper/1"
MODELS = ("pilotnet", "lanenet")


def _default_attacks() -> list[RoundAttack]:
    # the drive-level ego-lane marking (the attack a fresh evaluation makes) and the per-frame one over the
    # centre line: two placements, so the network does not learn to ignore one strip of road only
    return [RoundAttack("road_depart_pilotnet", 150, 200.0), RoundAttack("road_steer_pilotnet", 300, 90.0)]


@dataclass
class HardenLaneKeeperConfig:
    model: str = param("pilotnet", help="pilotnet or lanenet: which network to harden")
    baseline: str | None = param(None, help="the lane-keeper to harden (default lanekeeper:MODEL) or a checkpoint")
    rounds: int = param(8, range=(1, 100), help="attack-then-train rounds")
    attacks: list[RoundAttack] = param(default_factory=_default_attacks, help="road attacks made in every round")
    patched_drives: int = param(16, range=(1, 10000), help="drives over a marking per attack slot and round")
    clean_drives: int = param(16, range=(0, 10000), help="drives on fresh random roads without a patch per round")
    policy_share: float = param(0.5, range=(0.0, 1.0), help="share of the drives the lane-keeper steers (DAgger)")
    steer_noise: float = param(0.06, range=(0.0, 1.0), help="steering noise of the expert's drives (DART)")
    camera_height_m: tuple[float, float] = param((1.2, 1.8), unit="m", range=(0.5, 4.0),
                                                 help="camera mounts the drives are collected with")
    camera_pitch_deg: tuple[float, float] = param((-4.0, 0.0), unit="deg", range=(-20.0, 20.0),
                                                  help="camera pitch range of the drives")
    speed_mps: tuple[float, float] = param((8.0, 15.0), unit="m/s", range=(1.0, 40.0), help="drive speeds")
    random_marking_share: float = param(0.3, range=(0.0, 1.0), help="share of the patched drives painted with a "
                                        "random marking (colour noise and stripes) instead of a pool one")
    mirror_share: float = param(0.5, range=(0.0, 1.0), help="share of the pool markings painted mirrored left to "
                                                           "right (over the ego lane: pushing the other way)")
    epochs_per_round: int = param(4, range=(1, 1000), help="fine-tuning epochs in a round")
    lr: float = param(3e-4, range=(1e-7, 0.1), help="Adam learning rate (cosine over the round's epochs)")
    batch: int = param(64, range=(1, 4096), help="batch size")
    seed: int = param(0, range=(0, 2**31 - 1), help="seeds the attacks, the drives and the training")
    device: str = param("cpu", help="cpu, cuda or cuda:N for the attacks (the fine-tuning runs on the CPU)")

    def __post_init__(self) -> None:
        from patchsim.config import check_device

        if self.model not in MODELS:
            raise FieldError("model", f"model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if not self.attacks:
            raise FieldError("attacks", "attacks must name at least one road attack")
        check_device(self.device)

    @property
    def baseline_spec(self) -> str:
        return self.baseline or f"lanekeeper:{self.model}"


def _marking_for_drive(marking: np.ndarray, cfg: HardenLaneKeeperConfig, rng: np.random.Generator) -> np.ndarray:
    """In a share ``cfg.random_marking_share`` a random marking of the pool marking's size, otherwise the pool
    marking, mirrored left to right (columns run across the road) in a share ``cfg.mirror_share`` of those."""
    if rng.random() < cfg.random_marking_share:
        return random_marking(marking.shape[:2], rng)
    return np.ascontiguousarray(marking[:, ::-1]) if rng.random() < cfg.mirror_share else marking


def patched_lane_samples(scenario_path: str, slot: str, pool: list[np.ndarray], cfg: HardenLaneKeeperConfig,
                         seed: int, policy=None) -> Iterator:
    """Frames of ``cfg.patched_drives`` drives of the scenario with a marking on ``slot`` (from ``pool`` or
    random: :func:`_marking_for_drive`), labelled with the expert's steering (see the module)."""
    from patchsim.closedloop.drivers import GroundTruthDriver
    from patchsim.closedloop.episode import run_episode
    from patchsim.data.generate import LaneSampleRecorder, far_off_lane
    from patchsim.sim.factory import make_simulator
    from patchsim.sim.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    slot_s = next(p.s_m for p in scenario.patch_slots if p.name == slot)
    with make_simulator("embedded", labels=True) as sim:
        for k in range(cfg.patched_drives):
            rng = np.random.default_rng([seed, 23, k])
            speed = float(rng.uniform(*cfg.speed_mps))
            scenario.ego.speed_mps = scenario.driver.target_speed_mps = speed
            scenario.camera.height_m = float(rng.uniform(*cfg.camera_height_m))
            scenario.camera.pitch_deg = float(rng.uniform(*cfg.camera_pitch_deg))
            use_policy = policy is not None and rng.random() < cfg.policy_share
            driver = GroundTruthDriver(steer_noise_std=cfg.steer_noise, policy=policy if use_policy else None, rng=rng)
            rec = LaneSampleRecorder(2)
            marking = _marking_for_drive(pool[int(rng.integers(len(pool)))], cfg, np.random.default_rng([seed, 29, k]))
            run_episode(sim, scenario, int(rng.integers(2**31)), driver, patches={slot: marking}, recorders=[rec],
                        until=lambda f: far_off_lane(f) or f.ego.s_m > slot_s + 15.0, run_to_end=True)
            yield from rec.samples


def _read_rgba(path: Path) -> np.ndarray:
    from patchsim.closedloop.patches import read_rgba

    rgba = read_rgba(path)
    if rgba is None:
        raise FileNotFoundError(f"{path}: cannot read the patch image")
    return rgba


def fine_tune_lanekeeper(cfg: HardenLaneKeeperConfig, current: str, out: Path, pool: list[dict], k: int,
                         folder: Path) -> dict:
    """Collect the round's drives with the model ``current`` and fine-tune it; write ``folder/lanekeeper.pt``."""
    from patchsim.data.generate import LaneDataConfig, lane_samples
    from patchsim.victims.lanekeeper import LaneNetKeeper, PilotNet, load_lanekeeper, save_lanekeeper_checkpoint
    from patchsim.victims.train_lanekeeper import LaneBuffers, LaneTrainConfig, collect, fit_pilotnet, fit_segmenter

    model = load_lanekeeper(current, device="cpu")
    for p in model.parameters():
        p.requires_grad_(True)
    seed = cfg.seed + 1000 * k

    def policy(frame) -> float:
        with torch.no_grad():
            x = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float().div(255)
            return float(model(x)[0])

    t0 = time.perf_counter()
    images = {e["file"]: _read_rgba(out / e["file"]) for e in pool}
    by_slot: dict[tuple[str, str], list[np.ndarray]] = {}
    for e in pool:
        by_slot.setdefault((e["scenario"], e["slot"]), []).append(images[e["file"]])
    pilot = model if isinstance(model, PilotNet) else PilotNet()
    lanenet = model if isinstance(model, LaneNetKeeper) else LaneNetKeeper()
    masks = isinstance(model, LaneNetKeeper)
    buf = LaneBuffers()
    n_patched = 0
    for j, ((scenario, slot), patches) in enumerate(sorted(by_slot.items(), key=lambda kv: kv[0])):
        n_patched += collect(patched_lane_samples(scenario, slot, patches, cfg, seed + j, policy), pilot, lanenet,
                             buf, with_masks=masks)
    n_clean = 0
    if cfg.clean_drives:
        clean_cfg = LaneDataConfig(seed=seed + 500, scenes=cfg.clean_drives, steer_noise=cfg.steer_noise)
        n_clean = collect(lane_samples(clean_cfg, policy=policy, policy_share=cfg.policy_share), pilot, lanenet, buf,
                          with_masks=masks)
    collect_s = time.perf_counter() - t0
    tcfg = LaneTrainConfig(seed=seed, lr=cfg.lr, batch=cfg.batch, lanenet_epochs=cfg.epochs_per_round)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if isinstance(model, PilotNet):
        loss = fit_pilotnet(model, torch.cat(buf.pilot_views), torch.cat(buf.labels), cfg.epochs_per_round, tcfg, gen)
    else:
        loss = fit_segmenter(model, torch.cat(buf.seg_views), torch.cat(buf.seg_masks), tcfg, gen)
    save_lanekeeper_checkpoint(folder / "lanekeeper.pt", model.eval(), {
        "hardened_from": current, "round": k, "train_config": to_dict(cfg)})
    return {"frames_patched": n_patched, "frames_clean": n_clean, "collect_s": round(collect_s, 1),
            "train_s": round(time.perf_counter() - t0 - collect_s, 1), "final_loss": round(loss, 5)}


def harden_lanekeeper(cfg: HardenLaneKeeperConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run (or resume) the rounds; write the hardened lane-keeper and the report. Returns the report."""
    from patchsim.victims.lanekeeper import load_lanekeeper

    baseline = load_lanekeeper(cfg.baseline_spec)  # every input checked before the first round
    if baseline.kind != cfg.model:
        raise FieldError("model", f"model is {cfg.model!r} but the baseline {cfg.baseline_spec!r} is a {baseline.kind}")
    check_round_attacks(cfg.attacks, cfg.baseline_spec, cfg.seed, "lanekeeper")
    out = Path(out_dir)
    state_path = out / "state.json"
    with output_dir(out, keep=("state.json", "round_1")):
        state = read_state(state_path, cfg, STATE_FORMAT)
        write_json(out / "run.json", manifest("harden lanekeeper", cfg.seed, to_dict(cfg)))
        (out / "pool").mkdir(exist_ok=True)
        for k in range(len(state["rounds"]) + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            current = str(out / state["rounds"][-1]["lanekeeper"]) if state["rounds"] else cfg.baseline_spec
            folder = out / f"round_{k}"
            figures, made = attack_round(cfg.attacks, k, current, cfg.seed, cfg.device, folder / "attacks",
                                         out / "pool", progress)
            entries = [{"file": f"pool/{name}", "round": k, "attack": acfg.name, "scenario": acfg.scenes.scenario,
                        "slot": acfg.scenes.slot} for name, acfg, _ in made]
            pool = state["pool"] + entries
            trained = fine_tune_lanekeeper(cfg, current, out, pool, k, folder)
            state["pool"] = pool
            # paths in the state are relative to the run directory, so a moved run resumes
            state["rounds"].append({"round": k, "model_attacked": os.path.relpath(current, out) if state["rounds"]
                                    else current, "lanekeeper": f"round_{k}/lanekeeper.pt", "attacks": figures,
                                    **trained, "round_s": round(time.perf_counter() - t0, 1)})
            state["elapsed_s"] = round(state.get("elapsed_s", 0.0) + time.perf_counter() - t0, 1)
            write_json(state_path, state)
        shutil.copyfile(out / state["rounds"][-1]["lanekeeper"], out / "lanekeeper.pt")
        report = {"baseline": cfg.baseline_spec, "lanekeeper": str(out / "lanekeeper.pt"), "rounds": state["rounds"],
                  "pool_size": len(state["pool"]), "elapsed_s": state["elapsed_s"], "config": to_dict(cfg)}
        write_json(out / "report.json", report)
        write_text(out / "report.md", _report_md(report))
        plot_rounds(out / "rounds.png", state["rounds"])
    return report


def _report_md(report: dict) -> str:
    lines = ["# Lane-keeper hardening", "",
             f"Baseline `{report['baseline']}`; hardened `{report['lanekeeper']}`. {len(report['rounds'])} rounds, "
             f"{report['pool_size']} markings in the pool, {report['elapsed_s']:.0f} s.", "",
             "| round | attack | held-out success | mean steering change (deg) | frames patched / clean | round s |",
             "|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        frames = f"{r['frames_patched']} / {r['frames_clean']}"
        for j, a in enumerate(r["attacks"]):
            change = a.get("mean_steer_change_deg")
            lines.append(f"| {r['round']} | {a['attack']} | {a['heldout_success_rate']:.1%} | "
                         f"{'' if change is None else f'{change:.2f}'} | "
                         f"{'' if j else frames} | {'' if j else r['round_s']} |")
    lines += ["", "Judge it with `patchsim harden eval --model ... --baseline lanekeeper:...`."]
    return "\n".join(lines) + "\n"
