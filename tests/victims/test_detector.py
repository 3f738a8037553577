"""The differentiable detector wrapper against finite differences and Ultralytics' own predict()."""

import copy

import numpy as np
import pytest
import torch

from patchsim.errors import CheckpointError, ConfigError, ShapeError
from patchsim.victims.detector import letterbox_params, load_detector


@pytest.fixture(scope="module")
def det():
    return load_detector("detector:default")


def test_shipped_detector_has_the_four_classes(det):
    assert set(det.names.values()) == {"stop_sign", "speed_limit", "yield", "vehicle"}
    assert det.class_indices("stop sign") == det.class_indices("stop_sign")


def test_score_gradient_matches_finite_differences():
    det = load_detector("detector:default")
    det.model.double()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)

    def score(img):
        raw = det(img)
        return raw.scores[0, :, det.class_indices("stop_sign")[0]].sum()

    s = score(x)
    (grad,) = torch.autograd.grad(s, x)
    assert grad.abs().sum() > 0
    eps = 1e-5
    for idx in [(0, 0, 10, 10), (0, 1, 32, 40), (0, 2, 60, 3), (0, 0, 33, 31)]:
        xp, xm = x.detach().clone(), x.detach().clone()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (score(xp) - score(xm)).item() / (2 * eps)
        assert fd == pytest.approx(grad[idx].item(), rel=1e-4, abs=1e-9)


def test_predict_agrees_with_ultralytics(tmp_path, det):
    from patchsim.sim.embedded import EmbeddedSimulator
    from patchsim.sim.scenario import load_scenario
    from patchsim.victims.offline import ultralytics

    ultralytics()
    from ultralytics import YOLO

    sc = load_scenario("scenarios/stop_sign_approach.yaml")
    with EmbeddedSimulator() as sim:
        sim.reset(sc, seed=0)
        image = sim.set_ego_pose(81.0 - 18.0 - sc.camera.forward_m).image
    ours = det.predict(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, conf=0.25, iou=0.7)[0]
    ckpt = tmp_path / "ultralytics_format.pt"
    torch.save({"model": copy.deepcopy(det.model).float(), "train_args": {}}, ckpt)
    theirs = YOLO(str(ckpt), task="detect").predict(image[:, :, ::-1].copy(), imgsz=640, conf=0.25, iou=0.7,
                                                    verbose=False)[0].boxes
    assert len(ours.scores) == len(theirs.conf) > 0
    order_ours = ours.scores.argsort(descending=True)
    order_theirs = theirs.conf.argsort(descending=True)
    assert torch.equal(ours.classes[order_ours].cpu(), theirs.cls[order_theirs].long().cpu())
    assert torch.allclose(ours.scores[order_ours], theirs.conf[order_theirs], atol=2e-3)
    assert torch.allclose(ours.boxes_xyxy[order_ours], theirs.xyxy[order_theirs], atol=1.0)


def test_letterbox_matches_ultralytics_rule():
    lb = letterbox_params(384, 640, None, 32)
    assert lb.size_hw == (384, 640) and lb.pad_left == lb.pad_top == 0
    lb = letterbox_params(300, 520, 640, 32)
    assert lb.size_hw[1] == 640 and lb.size_hw[0] % 32 == 0 and lb.pad_top > 0


def test_bad_input_and_checkpoints(tmp_path, det):
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\)"):
        det(torch.rand(3, 64, 64))
    with pytest.raises(CheckpointError, match="not found"):
        load_detector(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_detector(bad)
    with pytest.raises(CheckpointError, match="needed here"):
        load_detector("lanekeeper:pilotnet")
    with pytest.raises(CheckpointError, match="detector:nope: no shipped detector"):
        load_detector("detector:nope")
    with pytest.raises(ConfigError, match="class 'person' is not in detector"):
        det.class_indices("person")


def test_segmentation_checkpoint_is_refused(tmp_path):
    from patchsim.victims.offline import ultralytics

    ultralytics()
    from ultralytics.nn.tasks import SegmentationModel

    seg = SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False)
    path = tmp_path / "seg.pt"
    torch.save({"model": seg, "train_args": {}}, path)
    with pytest.raises(CheckpointError, match="segmentation model"):
        load_detector(path)


def test_half_precision_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        load_detector("detector:default", half=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_half_matches_float():
    d32 = load_detector("detector:default", device="cuda")
    d16 = load_detector("detector:default", device="cuda", half=True)
    x = torch.rand(2, 3, 384, 640, device="cuda")
    assert torch.allclose(d32(x).scores, d16(x).scores, atol=2e-2)


def test_raw_scores_are_probabilities(det):
    raw = det(torch.rand(2, 3, 96, 160))
    assert raw.scores.shape[0] == 2 and raw.scores.shape[2] == 4
    assert float(raw.scores.min()) >= 0 and float(raw.scores.max()) <= 1
    assert np.isfinite(raw.boxes_xyxy.detach().numpy()).all()
