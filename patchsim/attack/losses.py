"""Loss terms and detection tests that the attack goals (:mod:`patchsim.attack.goals`) are built from.

Detector goals act on the candidates near the attacked object (the slot's outline box):

- ``vanish`` (hide a class): the highest score of the source class among nearby candidates
  (Thys et al. 2019 use max(objectness x class); YOLOv8 heads have class scores only).
- ``misclassify`` (e.g. stop -> speed_limit): push the source's best nearby score down and the
  target's up.
- ``appear`` (a phantom object): push the target's best nearby score up.

In ``logit`` space (the default) each term is a hinge on the score's logit,
``softplus(logit(p) - logit(floor))`` to push a score down and ``softplus(logit(ceil) - logit(p))``
to push one up: a confidently detected sign (p = 0.99) still gets a full-size gradient, where the
probability itself (``prob`` space, Thys et al.'s choice) saturates and leaves the optimizer
working only on the samples that are already nearly won; and a sample already below the floor
stops pulling.

Drive-level loss (samples drawn in drives, ``eot.drive_frames`` > 1): what the planner acts on is
whether the sign is seen at any point of the approach, so the hidden class's term is a hinge on the
drive's soft-OR, the probability that some frame of the drive detects it,
``P = 1 - prod_i (1 - p_i)`` (:func:`drive_logit`), instead of on each frame. Its gradient goes to
the frames that still show the sign most clearly. The floor applies to the drive's ``P`` (about
the sum of its frames' scores when they are small), so each of K frames is pushed to about
floor / K. With one frame per drive it is the per-frame hinge.

Class competition (``class_competition``): the decoding keeps one class per candidate box, its best
(Ultralytics' single-label NMS, :meth:`~patchsim.victims.detector.YoloDetector.predict`), so a candidate
shows the source class only where the source scores above the threshold *and* above every other
class. :func:`decision_logit` is that test as one logit, ``min(z_s, logit(conf) + z_s - z_other)``:
it equals ``logit(conf)`` exactly where the source ties with another class, and falls as another
class overtakes it. Hiding the source on it lets the optimizer lift another class over the source
where that is easier than pushing the source below the threshold.

Lane-keeper goal ``steer``: minus the steering command towards the chosen side.
"""

from __future__ import annotations

import torch

from patchsim.victims.detector import Detections, iou_xyxy


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


SCORE_FLOOR = 0.05  # a hidden class's score needs no push below this
SCORE_CEIL = 0.9  # a wanted class's score needs no push above this
SPACES = ("logit", "prob")


def best_near(score: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """(B,) the highest score among the near candidates; ``score`` and ``near`` (B, N)."""
    return (score * near).amax(-1)


def logit(p: torch.Tensor | float) -> torch.Tensor:
    p = torch.as_tensor(p).clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def push_down(p: torch.Tensor, floor: float = SCORE_FLOOR) -> torch.Tensor:
    """Hinge that pushes a score down to ``floor`` and stops pulling below it."""
    return push_down_logit(logit(p), floor)


def push_down_logit(z: torch.Tensor, floor: float = SCORE_FLOOR) -> torch.Tensor:
    """:func:`push_down` of a score given by its logit ``z``."""
    return torch.nn.functional.softplus(z - logit(floor).to(z))


def push_up(p: torch.Tensor) -> torch.Tensor:
    """Hinge that pushes a score up to ``SCORE_CEIL``."""
    return torch.nn.functional.softplus(logit(SCORE_CEIL).to(p) - logit(p))


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


def decision_logit(scores: torch.Tensor, source: list[int], conf: float) -> torch.Tensor:
    """(B, N) the logit of the source class as the single-label decoding decides it (see the module's docstring).

    Args:
        scores: (B, N, C) per-class probabilities. source: the source's model class indices. conf: the
            detection threshold.
    """
    z = logit(scores)
    z_source = z[..., source].amax(-1)
    others = [c for c in range(scores.shape[-1]) if c not in source]
    if not others:
        return z_source
    z_other = z[..., others].amax(-1)
    return torch.minimum(z_source, logit(conf).to(z) + z_source - z_other)


def drive_logit(p: torch.Tensor, drive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit of each drive's soft-OR ``1 - prod (1 - p)`` over its frames' scores.

    Args:
        p: (B,) per-frame scores. drive: (B,) which drive each frame belongs to.

    Returns:
        (G,) the logits, one per drive in ``torch.unique(drive)`` order, and (B,) each frame's drive among them.
    """
    ids, member = torch.unique(drive, return_inverse=True)
    seen = torch.nn.functional.softplus(logit(p))  # -log(1 - p)
    total = torch.zeros(len(ids), dtype=seen.dtype, device=seen.device).index_add(0, member, seen)
    # logit(1 - exp(-S)) = S + log(1 - exp(-S)), stable for small and large S
    return total + torch.log(-torch.expm1(-total.clamp(min=1e-12))), member


def per_frame_share(per_drive: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(B,) each frame's share of its drive's loss (``per_drive`` (G,)): the batch mean of the shares is the mean
    over drives, whatever their sizes."""
    count = torch.zeros_like(per_drive).index_add(0, member, torch.ones_like(member, dtype=per_drive.dtype))
    return per_drive[member] * (len(member) / (len(per_drive) * count[member]))
