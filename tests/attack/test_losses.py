"""Detector goals' losses: which candidates count, and the hinged-logit form."""

import pytest
import torch

from patchsim.attack.goals import Misclassify, Vanish, make_goal
from patchsim.attack.losses import SCORE_FLOOR, decision_logit, logit, near_candidates
from patchsim.victims.detector import RawDetections, YoloDetector


class _TwoClassDetector:
    """A stand-in exposing only what the losses read: class scores by canonical name."""

    names = {0: "stop_sign", 1: "speed_limit"}

    def class_indices(self, name: str) -> list[int]:
        return [0 if name == "stop_sign" else 1]

    def class_score(self, raw: RawDetections, name: str) -> torch.Tensor:
        return raw.scores[..., 0 if name == "stop_sign" else 1]


def _raw(stop: list[float], speed: list[float]) -> RawDetections:
    boxes = torch.tensor([[[10.0, 10, 20, 20], [12, 12, 22, 22], [100, 100, 110, 110]]])
    scores = torch.stack([torch.tensor([stop]), torch.tensor([speed])], -1).requires_grad_(True)
    return RawDetections(boxes, scores)


TARGET = torch.tensor([[10.0, 10, 20, 20]])


def test_only_candidates_on_the_object_count():
    near = near_candidates(_raw([0.1] * 3, [0.1] * 3).boxes_xyxy, TARGET)
    assert near.tolist() == [[1.0, 1.0, 0.0]]
    # a confident candidate far from the sign does not enter the loss
    far_only = Vanish("stop_sign").loss_of(_TwoClassDetector(), _raw([0.01, 0.01, 0.99], [0, 0, 0]), TARGET)
    assert far_only.item() < 0.25


def test_logit_vanish_does_not_saturate_on_confident_detections():
    det = _TwoClassDetector()
    grads = {}
    for space in ("logit", "prob"):
        raw = _raw([0.995, 0.5, 0.1], [0.0] * 3)
        Vanish("stop_sign", space=space).loss_of(det, raw, TARGET).sum().backward()
        grads[space] = raw.scores.grad[0, 0, 0].item()
    assert grads["prob"] == pytest.approx(1.0)
    # d softplus(logit(p) - c)/dp = sigmoid(.) / (p (1 - p)): large where the probability is flat
    assert grads["logit"] > 50


def test_logit_hinge_stops_pulling_below_the_floor():
    det = _TwoClassDetector()
    low = Vanish().loss_of(det, _raw([SCORE_FLOOR / 20, 0.0, 0.0], [0.0] * 3), TARGET)
    high = Vanish().loss_of(det, _raw([0.9, 0.0, 0.0], [0.0] * 3), TARGET)
    assert low.item() < 0.06 < 2.0 < high.item()


def test_misclassify_pushes_source_down_and_target_up():
    det = _TwoClassDetector()
    raw = _raw([0.8, 0.1, 0.0], [0.2, 0.1, 0.0])
    Misclassify("stop_sign", "speed_limit").loss_of(det, raw, TARGET).sum().backward()
    assert raw.scores.grad[0, 0, 0] > 0 > raw.scores.grad[0, 0, 1]  # descent lowers stop, raises speed limit
    won = Misclassify("stop_sign", "speed_limit").loss_of(det, _raw([0.001, 0.0, 0.0], [0.99, 0.0, 0.0]), TARGET)
    assert won.item() < 0.25


def test_the_decision_logit_says_where_the_decoding_shows_the_source_class():
    g = torch.Generator().manual_seed(0)
    n = 200  # under predict's max_det
    scores = torch.rand(1, n, 3, generator=g) ** 2
    x, y = (torch.arange(n) % 20) * 30.0, (torch.arange(n) // 20) * 30.0
    boxes = torch.stack([x, y, x + 20, y + 20], -1)[None]  # disjoint boxes: the NMS removes none of them
    decoder = type("Decoder", (), {"end2end": False})()
    dets = YoloDetector.predict(decoder, None, conf=0.25, raw=RawDetections(boxes, scores))[0]
    shown = torch.zeros(n, dtype=torch.bool)
    mine = dets.boxes_xyxy[dets.classes == 0]
    shown[(mine[:, 1] / 30 * 20 + mine[:, 0] / 30).long()] = True
    z = decision_logit(scores, [0], 0.25)[0]
    assert shown.any() and (~shown).any()
    assert torch.equal(z > logit(0.25), shown)
    tie = decision_logit(torch.tensor([[[0.6, 0.6, 0.1]]]), [0], 0.25)
    assert tie.item() == pytest.approx(logit(0.25).item(), abs=1e-5)


def test_class_competition_hides_a_sign_that_another_class_outscores():
    det = _TwoClassDetector()
    outscored = _raw([0.8, 0.0, 0.0], [0.999, 0.0, 0.0])  # the decoding shows a speed limit here, not a stop sign
    assert Vanish().loss_of(det, outscored, TARGET).item() > 1.0
    assert Vanish(competition=True).loss_of(det, outscored, TARGET).item() < 0.06
    close = _raw([0.8, 0.0, 0.0], [0.6, 0.0, 0.0])
    Vanish(competition=True).loss_of(det, close, TARGET).sum().backward()
    assert close.scores.grad[0, 0, 0] > 0 > close.scores.grad[0, 0, 1]  # descent lowers stop, lifts its rival
    alone = _raw([0.8, 0.0, 0.0], [0.0, 0.0, 0.0])  # no rival: the same loss as without competition
    assert Vanish(competition=True).loss_of(det, alone, TARGET).item() == pytest.approx(
        Vanish().loss_of(det, alone, TARGET).item(), rel=1e-5)


def test_class_competition_is_refused_for_a_head_that_keeps_every_class():
    from patchsim.errors import ConfigError

    nms_free = _TwoClassDetector()
    nms_free.end2end = True
    with pytest.raises(ConfigError, match="NMS-free head"):
        Vanish(competition=True).check_victim(nms_free, "yolo26n.pt")
    Vanish().check_victim(nms_free, "yolo26n.pt")


def test_bad_goal_and_space_are_refused():
    with pytest.raises(ValueError, match="unknown loss space 'linear'"):
        Vanish("stop_sign", space="linear")
    with pytest.raises(ValueError, match="needs a target class"):
        Misclassify("stop_sign")
    with pytest.raises(ValueError, match="unknown goal 'hide'"):
        make_goal("hide")


def test_each_goal_tests_success_its_own_way():
    import numpy as np

    clean = {"hit": np.array([True, True, False, True]), "target": np.zeros(4, bool)}
    adv = {"hit": np.array([False, True, False, False]), "target": np.array([True, False, True, False])}
    vanish = make_goal("vanish").result(clean, adv)
    assert vanish.success.tolist() == [True, False, True]  # only where the clean sign was seen
    assert vanish.failed_samples().tolist() == [1]  # indices among all samples, for failures.json
    near = vanish.part_summary(np.array([True, True, False, False]))  # e.g. one distance band
    assert near == {"samples": 2, "counted": 2, "heldout_success_rate": 0.5, "clean_detection_rate": 1.0,
                    "adversarial_detection_rate": 0.5}
    assert vanish.part_summary(np.array([False, False, True, True]))["counted"] == 1  # sample 2: clean sign missed
    wrong = make_goal("misclassify", target_class="speed_limit").result(clean, adv)
    assert wrong.success.tolist() == [True, False, False]  # the target seen and the source not
    phantom = make_goal("appear", target_class="speed_limit").result(clean, adv)
    assert phantom.success.tolist() == [True, False, True, False]
    steer = make_goal("steer", steer_direction="right").result({"steer_deg": np.zeros(3)},
                                                               {"steer_deg": np.array([-2.0, 0.5, 3.0])})
    assert steer.success.tolist() == [True, False, False] and steer.summary()["mean_steer_change_deg"] == 0.5


def test_each_goal_names_the_closed_loop_failure_it_is_after():
    ran = {"stopped_before_line": False, "speed_limit_confirmed": False, "lane_departure": False}
    stopped = {**ran, "stopped_before_line": True}
    confused = {**ran, "speed_limit_confirmed": True}
    assert make_goal("vanish").drove_as_wanted(ran) and not make_goal("vanish").drove_as_wanted(stopped)
    wrong = make_goal("misclassify", target_class="speed_limit")
    assert wrong.drove_as_wanted(confused) and not wrong.drove_as_wanted(ran)  # no stop is not enough
    assert make_goal("steer").drove_as_wanted({"lane_departure": True, "stopped_before_line": None})
    assert make_goal("vanish").drove_as_wanted({"lane_departure": False, "stopped_before_line": None}) is None


def test_the_drive_loss_is_on_whether_any_frame_of_the_drive_shows_the_sign():
    """Four frames of two drives: the sign seen clearly in one frame of the first drive, faintly in the second."""
    from patchsim.attack.losses import drive_logit

    det, target = _TwoClassDetector(), TARGET.repeat(4, 1)
    boxes = torch.tensor([[10.0, 10, 20, 20]]).repeat(4, 1, 1)
    stop = torch.tensor([[0.9], [0.01], [0.1], [0.1]])  # (B, N = 1)
    raw = RawDetections(boxes, torch.stack([stop, torch.zeros_like(stop)], -1).requires_grad_(True))
    drive = torch.tensor([0, 0, 1, 1])
    z, member = drive_logit(raw.scores[:, 0, 0], drive)
    assert torch.sigmoid(z).tolist() == pytest.approx([1 - 0.1 * 0.99, 1 - 0.9 * 0.9])  # P(seen in some frame)
    assert member.tolist() == [0, 0, 1, 1]
    loss = Vanish("stop_sign", floor=0.01).loss_of(det, raw, target, drive)
    loss.mean().backward()
    g = raw.scores.grad[:, 0, 0]
    # the frame that shows the sign in its drive takes the pull, and the drive's own frames share one loss
    assert g[0] > 5 * g[1] > 0 and loss[0] == loss[1] and loss[0] > loss[2]
    # with one frame per drive it is the per-frame hinge
    one_each = Vanish("stop_sign", floor=0.01).loss_of(det, raw, target, torch.arange(4))
    assert one_each.tolist() == pytest.approx(Vanish("stop_sign", floor=0.01).loss_of(det, raw, target).tolist(),
                                              rel=1e-5)
