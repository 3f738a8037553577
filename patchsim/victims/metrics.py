"""Detection metrics: average precision at IoU 0.5 (COCO-style 101-point interpolation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageResult:
    """Detections and ground truth of one image, classes as indices of one shared list."""

    pred_boxes: np.ndarray  # (K, 4) xyxy
    pred_scores: np.ndarray  # (K,)
    pred_classes: np.ndarray  # (K,)
    gt_boxes: np.ndarray  # (M, 4)
    gt_classes: np.ndarray  # (M,)
    gt_ignore: np.ndarray | None = None  # (M,) bool: too small to score; a detection on one is neither TP nor FP


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, 4) x (M, 4) -> (K, M) IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope, sampled at 101 recall points."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


def map50(results: list[ImageResult], num_classes: int, iou_threshold: float = 0.5) -> dict:
    """Per-class AP at ``iou_threshold`` and their mean over classes that have ground truth.

    Ground truth marked ``gt_ignore`` is not counted, and a detection matching it is not scored
    (as KITTI does with objects below its minimum height).

    Returns:
        ``{"map50": float, "ap50": {class_index: float}, "gt_count": {class_index: int}}``
    """
    aps: dict[int, float] = {}
    counts: dict[int, int] = {}
    for c in range(num_classes):
        scores, tps = [], []
        n_gt = 0
        for r in results:
            in_class = r.gt_classes == c
            gt = r.gt_boxes[in_class]
            ignore = (np.zeros(len(gt), bool) if r.gt_ignore is None else r.gt_ignore[in_class])
            n_gt += int((~ignore).sum())
            keep = r.pred_classes == c
            boxes, sc = r.pred_boxes[keep], r.pred_scores[keep]
            order = np.argsort(-sc)
            boxes, sc = boxes[order], sc[order]
            matched = np.zeros(len(gt), bool)
            ious = box_iou(boxes, gt)
            for k in range(len(boxes)):
                tp, skip = False, False
                if len(gt):
                    cand = np.where(~matched & ~ignore & (ious[k] >= iou_threshold))[0]
                    if len(cand):
                        j = cand[np.argmax(ious[k, cand])]
                        matched[j] = True
                        tp = True
                    else:  # on an ignored (too small) object: not scored
                        skip = bool((ignore & (ious[k] >= iou_threshold)).any())
                if skip:
                    continue
                scores.append(sc[k])
                tps.append(tp)
        counts[c] = n_gt
        if n_gt == 0:
            continue
        if not scores:
            aps[c] = 0.0
            continue
        order = np.argsort(-np.array(scores), kind="stable")
        tp = np.array(tps)[order].astype(float)
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        aps[c] = average_precision(ctp / n_gt, ctp / np.maximum(ctp + cfp, 1e-9))
    return {"map50": float(np.mean(list(aps.values()))) if aps else 0.0, "ap50": aps, "gt_count": counts}
