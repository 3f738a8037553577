"""`patchsim victims eval`: all clean-quality metrics of the victims in one object."""

from __future__ import annotations

import tempfile
from pathlib import Path

#: held-out detector test scenes are drawn with this seed, never used for training data
HELDOUT_SEED = 10_000
HELDOUT_SCENES = 40


def evaluate_victims(detector: str, lanekeepers: list[str], data: Path | None = None, seeds: int = 10,
                     device: str = "cpu", do_detector: bool = True, do_lanekeepers: bool = True,
                     sim_spec=None) -> dict:
    """Returns ``{"detector": {...}, "lanekeepers": {name: {...}}}`` (see the README for the keys).

    ``sim_spec`` (:class:`~patchsim.sim.factory.SimSpec`) picks the simulator of the recall and
    closed-loop checks; the held-out mAP set is always rendered by the built-in simulator.
    """
    out: dict = {}
    if do_detector:
        from patchsim.victims.detector import load_detector
        from patchsim.victims.evaluate import RecallConfig, detector_map50, stop_sign_recall

        det = load_detector(detector, device=device)
        with tempfile.TemporaryDirectory(prefix="patchsim-eval-") as tmp:
            data_yaml = Path(data) if data is not None else _heldout_set(Path(tmp))
            m = detector_map50(det, data_yaml, split="test")
        recall = stop_sign_recall(det, RecallConfig(seeds=seeds), sim_spec=sim_spec)
        out["detector"] = {
            "spec": detector,
            "map50": round(m["map50"], 4),
            "ap50": m["ap50"],
            "test_images": m["images"],
            "stop_sign_recall_5_30m": recall["recall"]["5-30m"],
            "stop_sign_recall_30_40m": recall["recall"]["30-40m"],
            "recall_frames": recall["frames"],
            "recall_frames_sign_out_of_view": recall["frames_sign_out_of_view"],
        }
    if do_lanekeepers:
        from patchsim.victims.evaluate import lanekeeper_closed_loop
        from patchsim.victims.lanekeeper import load_lanekeeper

        out["lanekeepers"] = {}
        for spec in lanekeepers:
            model = load_lanekeeper(spec, device=device)
            name = spec.split(":", 1)[1] if spec.startswith("lanekeeper:") else Path(spec).stem
            out["lanekeepers"][name] = {"spec": spec, **lanekeeper_closed_loop(model, seeds=seeds, device=device,
                                                                                        sim_spec=sim_spec)}
    return out


def _heldout_set(root: Path) -> Path:
    from patchsim.data.generate import DetectorDataConfig, generate_detector_dataset

    cfg = DetectorDataConfig(seed=HELDOUT_SEED, train_scenes=0, val_scenes=0, test_scenes=HELDOUT_SCENES)
    generate_detector_dataset(cfg, root, progress=False)
    return root / "data.yaml"


def format_eval(result: dict) -> str:
    lines = []
    d = result.get("detector")
    if d:
        lines.append(f"detector {d['spec']}: mAP50 {d['map50']:.3f} on {d['test_images']} held-out frames "
                     f"({', '.join(f'{k} {v:.3f}' for k, v in d['ap50'].items())})")
        lines.append(f"  stop-sign recall 5-30 m: {d['stop_sign_recall_5_30m']}   30-40 m: {d['stop_sign_recall_30_40m']}"
                     f"   (frames {d['recall_frames']})")
    for name, lk in result.get("lanekeepers", {}).items():
        lines.append(f"lane-keeper {name}: mean |offset| {lk['mean_abs_offset_m']:.3f} m, departures "
                     f"{lk['departures']}/{lk['runs']}")
        for sc, v in lk["scenarios"].items():
            lines.append(f"  {sc}: mean |offset| {v['mean_abs_offset_m']:.3f} m, max {v['max_abs_offset_m']:.3f} m, "
                         f"departures {v['departures']}")
    return "\n".join(lines)
