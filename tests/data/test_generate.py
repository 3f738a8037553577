import hashlib

import yaml

from patchsim.data.generate import DetectorDataConfig, LaneDataConfig, generate_detector_dataset, lane_samples


def _tiny(seed):
    return DetectorDataConfig(seed=seed, train_scenes=2, val_scenes=1, test_scenes=1, frames_per_scene=3)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_detector_dataset_is_yolo_format_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_detector_dataset(_tiny(3), a, progress=False)
    generate_detector_dataset(_tiny(3), b, progress=False)
    assert _digest(a) == _digest(b)
    meta = yaml.safe_load((a / "data.yaml").read_text())
    assert meta["names"] == {0: "stop_sign", 1: "speed_limit", 2: "yield", 3: "vehicle"}
    train = sorted((a / "images" / "train").glob("*.jpg"))
    assert len(train) == 6 and len(list((a / "images" / "test").glob("*.jpg"))) == 3
    boxes = 0
    for label in (a / "labels" / "train").glob("*.txt"):
        for line in label.read_text().splitlines():
            cls, *xywh = line.split()
            assert 0 <= int(cls) <= 3 and all(0.0 <= float(v) <= 1.0 for v in xywh)
            boxes += 1
    assert boxes > 0
    assert (a / "corners" / "train" / f"{train[0].stem}.json").is_file()
    c = tmp_path / "c"
    generate_detector_dataset(_tiny(4), c, progress=False)
    assert _digest(c) != _digest(a)


def test_lane_samples_carry_expert_labels_and_masks():
    cfg = LaneDataConfig(scenes=1, steps_per_scene=12, every_n_steps=3)
    samples = list(lane_samples(cfg))
    assert len(samples) == 4
    s = samples[0]
    assert s.image.shape == (384, 640, 3) and s.marking_mask.shape == (384, 640)
    assert s.marking_mask.any() and -1 <= s.expert_steer <= 1
