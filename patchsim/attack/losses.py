"""Attack losses and success tests.

Detector goals act on the candidates near the attacked object (the slot's outline box):

- ``vanish`` (hide a class): the highest score of the source class among nearby candidates
  (Thys et al. 2019 use max(objectness x class); YOLOv8 heads have class scores only).
- ``misclassify`` (e.g. stop -> speed_limit): the source's best nearby score minus the target's.
- ``appear`` (a phantom object): minus the target's best nearby score.

Lane-keeper goal ``steer``: minus the steering command towards the chosen side.
"""

from __future__ import annotations

import torch

from patchsim.victims.detector import Detections, RawDetections, YoloDetector, iou_xyxy


def near_candidates(boxes: torch.Tensor, target: torch.Tensor, iou_min: float = 0.1) -> torch.Tensor:
    """(B, N) weights in {0, 1}: candidates overlapping the target box or centred inside it.

    Args:
        boxes: (B, N, 4) candidate boxes. target: (B, 4) object boxes.
    """
    iou = iou_xyxy(boxes, target[:, None, :])
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    inside = (cx >= target[:, None, 0]) & (cx <= target[:, None, 2]) & (cy >= target[:, None, 1]) & (
        cy <= target[:, None, 3])
    return ((iou >= iou_min) | inside).to(boxes.dtype)


def _best_near(score: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    return (score * near).amax(-1)


def detector_loss(det: YoloDetector, raw: RawDetections, target_boxes: torch.Tensor, goal: str, source_class: str,
                  target_class: str | None = None) -> torch.Tensor:
    """(B,) loss per sample; lower is a more successful attack."""
    near = near_candidates(raw.boxes_xyxy.detach(), target_boxes)
    if goal == "vanish":
        return _best_near(det.class_score(raw, source_class), near)
    if target_class is None:
        raise ValueError(f"goal {goal!r} needs a target class")
    tgt = _best_near(det.class_score(raw, target_class), near)
    if goal == "misclassify":
        return _best_near(det.class_score(raw, source_class), near) - tgt
    if goal == "appear":
        return -tgt
    raise ValueError(f"unknown detector goal {goal!r}")


def steer_loss(steer: torch.Tensor, direction: str) -> torch.Tensor:
    """(B,) minus the steer command towards ``direction`` ("left" is positive steer)."""
    sign = 1.0 if direction == "left" else -1.0
    return -sign * steer


def detected(dets: list[Detections], boxes: torch.Tensor, class_indices: list[int], conf: float = 0.25,
             iou_min: float = 0.3) -> torch.Tensor:
    """(B,) bool: a detection of one of ``class_indices`` with score >= conf overlaps the object.

    Overlap: IoU >= ``iou_min`` with the object box, or the detection's centre inside it.
    """
    out = []
    for d, box in zip(dets, boxes):
        keep = (d.scores >= conf) & torch.isin(d.classes, torch.tensor(class_indices, device=d.classes.device))
        b = d.boxes_xyxy[keep]
        if len(b) == 0:
            out.append(False)
            continue
        near = near_candidates(b[None], box[None].to(b), iou_min)[0]
        out.append(bool(near.any()))
    return torch.tensor(out)
