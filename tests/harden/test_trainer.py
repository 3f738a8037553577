"""Training images get patches on the attacked signs' faces as Ultralytics loads them; labels stay."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from patchsim.harden.trainer import PatchSource, adopt, write_patch_source


def _dataset(data_yaml, mosaic: float = 0.0):
    import yaml

    from patchsim.victims.offline import ultralytics

    ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset

    data = yaml.safe_load(data_yaml.read_text())
    data["path"] = str(data_yaml.parent)
    cfg = get_cfg(overrides={"imgsz": 320, "mosaic": mosaic, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0,
                             "translate": 0.0, "scale": 0.0, "task": "detect"})
    return build_yolo_dataset(cfg, str(data_yaml.parent / "images" / "train"), 4, data, mode="train")


def _white_source(folder) -> PatchSource:
    rgba = np.full((96, 96, 4), 255, np.uint8)
    (folder / "pool").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "pool" / "white.png"), rgba)
    write_patch_source(folder, [{"file": "pool/white.png", "sign_kind": "stop_sign"}], 1.0, 0.0, 0.0, None, None)
    return PatchSource.load(folder)


def test_stop_faces_carry_the_patch_and_the_labels_stay(small_detector_data, tmp_path):
    import json

    clean = _dataset(small_detector_data)
    patched = _dataset(small_detector_data)
    adopt(patched, _white_source(tmp_path))
    checked = 0
    for i, f in enumerate(clean.im_files):
        faces = json.loads((small_detector_data.parent / "corners" / "train" / f"{f.rsplit('/', 1)[1][:-4]}.json")
                           .read_text())
        q = [np.array(c["face_corners_px"]) for c in faces]
        big_stops = [c for c, p in zip(faces, q) if c["kind"] == "stop_sign" and np.ptp(p[:, 0]) > 20
                     and p.min() >= 0 and p.max() < 319]  # large and wholly inside the 320 px crop
        if not big_stops:
            continue
        a, b = clean.get_image_and_label(i), patched.get_image_and_label(i)
        assert np.array_equal(a["cls"], b["cls"]) and np.allclose(a["instances"].bboxes, b["instances"].bboxes)
        p = np.array(big_stops[0]["face_corners_px"])
        (x0, y0), (x1, y1) = p.min(0), p.max(0)
        inner = (slice(int(y0 + 0.25 * (y1 - y0)), int(y1 - 0.25 * (y1 - y0))),
                 slice(int(x0 + 0.25 * (x1 - x0)), int(x1 - 0.25 * (x1 - x0))))

        def darkest_channel(img):
            return float(img[inner].min(-1).mean())

        # a stop face is red with white letters: under a white patch it turns bright in every channel
        assert darkest_channel(b["img"]) > darkest_channel(a["img"]) + 40, i
        # away from the signs nothing changed
        assert np.array_equal(a["img"][-5:], b["img"][-5:]) or faces
        checked += 1
        if checked == 3:
            break
    assert checked, "no training image with a stop sign larger than 20 px"
    # the RAM-cached or buffered clean image was not written into
    again = clean.get_image_and_label(i)
    assert np.array_equal(again["img"], a["img"])


def test_mosaics_are_built_from_patched_images(small_detector_data, tmp_path):
    ds = _dataset(small_detector_data, mosaic=1.0)
    adopt(ds, _white_source(tmp_path))
    mosaic = ds.transforms.transforms[0].transforms[0]  # Compose([Compose([Mosaic, ...]), ...])
    assert getattr(mosaic, "dataset", None) is ds  # the mosaic draws its other images through the patched dataset
    sample = ds[0]
    assert sample["img"].shape[0] == 3


def test_random_stickers_come_in_their_share_varied_and_within_the_face(tmp_path):
    from patchsim.config import to_dict
    from patchsim.harden.attacker import AttackerConfig

    rgba = np.zeros((96, 96, 4), np.uint8)
    (tmp_path / "pool").mkdir()
    cv2.imwrite(str(tmp_path / "pool" / "black.png"), rgba)
    entry = {"file": "pool/black.png", "sign_kind": "stop_sign", "size_m": [0.75, 0.75]}
    layout = AttackerConfig(full_face_share=0.0)
    write_patch_source(tmp_path, [entry], 1.0, 0.0, 0.0, None, None, {"share": 0.4, "layout": to_dict(layout)})
    source = PatchSource.load(tmp_path)
    outline = source.random_slots["stop_sign"][0][0].numpy()
    draws = [source.draw("stop_sign", np.random.default_rng(i)) for i in range(200)]
    pool_like = [d for d in draws if d[..., 3].max() == 0]  # the pool's patch is transparent here
    random = [d for d in draws if d[..., 3].max() > 0]
    assert 0.3 < len(random) / len(draws) < 0.5
    for d in random:
        alpha = d[..., 3]
        assert (alpha <= outline + 1e-6).all()  # on the face only (its anti-aliased outline)
        assert alpha.sum() <= layout.max_coverage * outline.sum() + 1e-3
    colours = np.stack([d[..., :3][d[..., 3] > 0].mean(0) for d in random])
    assert colours.std(0).min() > 0.1  # many kinds of stickers, not one
    again = source.draw("stop_sign", np.random.default_rng(int(np.flatnonzero([d[..., 3].max() > 0
                                                                               for d in draws])[0])))
    assert np.array_equal(again, random[0])  # seeded
    assert len(pool_like) + len(random) == len(draws)
    write_patch_source(tmp_path, [entry], 1.0, 0.0, 0.0, None, None, {"share": 0.0, "layout": to_dict(layout)})
    assert all(PatchSource.load(tmp_path).draw("stop_sign", np.random.default_rng(i))[..., 3].max() == 0
               for i in range(50))


@pytest.mark.parametrize("hardening", [True, False], ids=["harden", "victims-train-detector"])
def test_a_ddp_worker_rebuilds_the_trainer_with_its_patches_and_patchsims_settings(small_detector_data, tmp_path,
                                                                                    hardening):
    """Ultralytics' multi-GPU training writes a launch file and starts fresh processes that unpickle the trainer
    class from it; run that file (up to where it would train) in a fresh interpreter, as a DDP worker does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from patchsim.harden.trainer import PATCHES_KEY, HardenTrainer
    from patchsim.victims.train_detector import PatchsimDetectionTrainer

    _white_source(tmp_path / "patches")
    data = yaml.safe_load(small_detector_data.read_text())
    data.update(path=str(small_detector_data.parent), **({PATCHES_KEY: str(tmp_path / "patches")} if hardening else {}))
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    from ultralytics.utils.dist import generate_ddp_file

    trainer_class = HardenTrainer if hardening else PatchsimDetectionTrainer
    trainer = trainer_class(overrides={"model": "start.pt", "data": str(tmp_path / "data.yaml"), "imgsz": 320,
                                       "epochs": 1, "device": "cpu", "project": str(tmp_path), "name": "train"})
    trainer.model = trainer.get_model(cfg="yolo11n.yaml", verbose=False)  # as YOLO.train() sets it before launching
    launch = generate_ddp_file(trainer)
    try:
        script = Path(launch).read_text()
        assert "trainer.train()" in script  # Ultralytics' launch file as this test knows it
        check = ("    import ultralytics.engine.trainer as trainer_mod\n"
                 "    ds = trainer.build_dataset(trainer.data['train'], 'train', 4)\n"
                 "    kinds = sorted(ds.patch_source.kinds) if hasattr(ds, 'patch_source') else None\n"
                 "    amp = trainer_mod.check_amp(trainer.model)\n"
                 "    print('WORKER', type(trainer).__name__, type(ds).__name__, kinds, amp)\n")
        (tmp_path / "worker.py").write_text(script.replace("    trainer.train()\n", check))
        out = subprocess.run([sys.executable, str(tmp_path / "worker.py")], capture_output=True, text=True,
                             timeout=300)
    finally:
        os.unlink(launch)
        os.unlink(os.path.splitext(launch)[0] + ".pt")
    assert out.returncode == 0, out.stderr[-3000:]
    # the hardening worker's training set pastes the patches; in both, Ultralytics' AMP check (which would
    # download a model on a GPU; on the CPU it answers False) is patchsim's
    expected = ("HardenTrainer PatchedYOLODataset ['stop_sign'] True" if hardening
                else "PatchsimDetectionTrainer YOLODataset None True")
    assert f"WORKER {expected}" in out.stdout, out.stdout[-2000:]
