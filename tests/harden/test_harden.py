"""Hardening, small: one round of attack-then-train makes the detector harder to attack afresh, and the
evaluation reports the baseline and the hardened model side by side."""

from __future__ import annotations

import json

import pytest

from patchsim.harden.attacker import AttackerConfig
from patchsim.harden.config import HardenDetectorConfig, HardenEvalConfig, RoundAttack


def _harden_cfg(data, attack, rounds=1) -> HardenDetectorConfig:
    return HardenDetectorConfig(
        data=str(data), rounds=rounds, attacks=[RoundAttack(str(attack), 30, None)],
        attacker=AttackerConfig(steps=20, batch=4, eval_patches=2, full_face_share=1.0), attacker_attack=str(attack),
        share=1.0, attacker_share=0.5, epochs_per_round=2, lr=0.001, batch=16, workers=0)


def test_a_hardened_detector_falls_less_to_a_fresh_attack_than_its_baseline(small_detector_data, small_poster_attack,
                                                                          tmp_path):
    from patchsim.harden.detector import harden_detector
    from patchsim.harden.evaluate import evaluate_hardening
    from patchsim.victims.detector import load_detector

    report = harden_detector(_harden_cfg(small_detector_data, small_poster_attack), tmp_path / "h", progress=False)
    assert (tmp_path / "h" / "detector.pt").is_file() and (tmp_path / "h" / "report.md").is_file()
    r1 = report["rounds"][0]
    assert r1["attacks"][0]["heldout_success_rate"] > 0 and r1["attacker"]["score"]["patches_per_s"] > 0
    # the Ultralytics weights load as Ultralytics and as a patchsim victim
    from ultralytics import YOLO

    YOLO(str(tmp_path / "h" / "detector_ultralytics.pt"))
    load_detector(tmp_path / "h" / "detector_ultralytics.pt")

    ev = evaluate_hardening(HardenEvalConfig(
        model=str(tmp_path / "h" / "detector.pt"), data=str(small_detector_data), attacks=[str(small_poster_attack)],
        attacker=AttackerConfig(steps=10, batch=4, eval_patches=2), sweep=None, recall_seeds=0),
        tmp_path / "eval", progress=False)
    base, hard = ev["baseline"], ev["hardened"]
    for r in (base, hard):
        assert {"map50", "adaptive", "attacker_network"} <= set(r)
    b, h = (r["adaptive"]["small_poster"]["heldout_success_rate"] for r in (base, hard))
    assert b >= 0.4, base  # the small attack works on the baseline
    assert h < b, json.dumps(ev, indent=1)  # and less on the hardened model, though made afresh against it
    assert "small_poster" in ev["transfer"] and ev["headline_attack"] == "small_poster"
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["hardened"]["map50"] == hard["map50"]
    assert (tmp_path / "eval" / "report.png").stat().st_size > 1000


def test_a_run_resumes_after_its_last_finished_round_and_refuses_other_settings(small_detector_data,
                                                                                small_poster_attack, tmp_path,
                                                                                monkeypatch):
    """The round loop with its three stages faked (each is tested above): what resume does."""
    import shutil

    import patchsim.harden.detector as hd
    from patchsim.errors import CheckpointError
    from patchsim.victims.registry import resolve_weights

    calls: list[str] = []

    def attacks(cfg, k, current, folder, pool_dir, progress):
        calls.append(f"attack {k} on {current}")
        (pool_dir / f"r{k}.png").write_bytes(b"png")
        return [{"attack": "a", "heldout_success_rate": 0.5}], [{"file": f"../pool/r{k}.png", "sign_kind": "stop_sign"}]

    def fine_tune(cfg, start, data, patches, folder):
        calls.append(f"train {folder.name}")
        if folder.name == "round_3" and "killed" not in calls:
            calls.append("killed")
            raise KeyboardInterrupt
        shutil.copyfile(resolve_weights(start, "detector"), folder / "detector.pt")
        (folder / "last.pt").write_bytes(b"pt")
        return {"val_metrics": {}, "train_s": 0.0, "ultralytics_weights": str(folder / "last.pt")}

    monkeypatch.setattr(hd, "run_round_attacks", attacks)
    monkeypatch.setattr(hd, "run_round_attacker", lambda *a, **k: None)
    monkeypatch.setattr(hd, "fine_tune", fine_tune)
    cfg = _harden_cfg(small_detector_data, small_poster_attack, rounds=1)
    hd.harden_detector(cfg, tmp_path / "h", progress=False)
    cfg.rounds = 3
    with pytest.raises(KeyboardInterrupt):
        hd.harden_detector(cfg, tmp_path / "h", progress=False)
    state = json.loads((tmp_path / "h" / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1, 2] and len(state["pool"]) == 2
    report = hd.harden_detector(cfg, tmp_path / "h", progress=False)
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    r1, r2 = str(tmp_path / "h" / "round_1" / "detector.pt"), str(tmp_path / "h" / "round_2" / "detector.pt")
    assert calls == ["attack 1 on detector:default", "train round_1", f"attack 2 on {r1}", "train round_2",
                     f"attack 3 on {r2}", "train round_3", "killed", f"attack 3 on {r2}", "train round_3"]
    cfg.share = 0.2
    with pytest.raises(CheckpointError, match="share"):
        hd.harden_detector(cfg, tmp_path / "h", progress=False)


def test_the_shipped_hardened_detector_loads_by_name_with_the_baselines_classes():
    from patchsim.victims.detector import load_detector

    hardened, baseline = load_detector("detector:hardened"), load_detector("detector:default")
    assert hardened.names == baseline.names and hardened.source == "detector:hardened"


def test_a_data_set_that_does_not_fit_the_model_is_refused_before_any_work(small_detector_data, small_poster_attack,
                                                                          tmp_path):
    import yaml

    from patchsim.errors import ConfigError
    from patchsim.harden.detector import harden_detector

    data = yaml.safe_load(small_detector_data.read_text())
    data["path"] = str(small_detector_data.parent)
    swapped = {**data, "names": {0: "speed_limit", 1: "stop_sign", 2: "yield", 3: "vehicle"}}
    (tmp_path / "swapped.yaml").write_text(yaml.safe_dump(swapped))
    with pytest.raises(ConfigError, match="swapped.yaml.*classes"):
        harden_detector(_harden_cfg(tmp_path / "swapped.yaml", small_poster_attack), tmp_path / "h", progress=False)
    (tmp_path / "other" / "images" / "train").mkdir(parents=True)
    (tmp_path / "no_corners.yaml").write_text(yaml.safe_dump({**data, "path": str(tmp_path / "other")}))
    with pytest.raises(ConfigError, match="no sign-face corners"):
        harden_detector(_harden_cfg(tmp_path / "no_corners.yaml", small_poster_attack), tmp_path / "h", progress=False)
    cfg = _harden_cfg(small_detector_data, small_poster_attack)
    cfg.attacks = cfg.attacks * 2
    from patchsim.config import FieldError

    with pytest.raises(FieldError, match="two attacks are named 'small_poster'"):
        harden_detector(cfg, tmp_path / "h", progress=False)
    assert not (tmp_path / "h").exists()


def test_the_report_shows_where_by_distance_the_fresh_attack_still_wins():
    from patchsim.harden.evaluate import _report_md

    def side(near, far):
        bands = {"10-20": {"counted": 30, "heldout_success_rate": near, "clean_detection_rate": 1.0},
                 "40-60": {"counted": 20, "heldout_success_rate": far, "clean_detection_rate": 0.8},
                 "60+": {"counted": 0, "heldout_success_rate": 0.0, "clean_detection_rate": 0.0}}
        return {"map50": 0.9, "adaptive": {"stickers": {"heldout_success_rate": 0.5, "heldout_by_distance_m": bands}}}

    report = {"baseline_model": "b", "hardened_model": "h", "headline_attack": "stickers", "transfer": {},
              "baseline": side(0.6, 0.9), "hardened": side(0.0, 0.75)}
    md = _report_md(report)
    assert "| adaptive stickers at 10-20 m: held-out success (clean detection) | 60% (100%) | 0% (100%) |" in md
    assert "at 40-60 m" in md and "at 60+ m" not in md  # a band with no counted frame says nothing
