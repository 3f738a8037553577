"""A differentiable wrapper around any Ultralytics YOLO detection model.

Ultralytics' ``predict()`` detaches gradients; attacks need scores that are differentiable with
respect to the input pixels. :class:`YoloDetector` calls the underlying ``nn.Module`` on tensors
and does the letterboxing and box decoding itself:

- ``forward(images)`` -> :class:`RawDetections`: every candidate's box (in input pixels) and
  per-class probability, differentiable.
- ``predict(images)`` -> per-image :class:`Detections` after confidence filtering and NMS,
  matching Ultralytics' own ``predict()`` for the same image and thresholds.

Classes are looked up by name (``"stop_sign"`` finds COCO's ``"stop sign"``; ``"vehicle"``
finds ``car``, ``truck`` and ``bus``), never by index.

Security: an Ultralytics ``.pt`` file is a Python pickle. patchsim loads it with
``weights_only=True`` against Ultralytics' allow-list of model classes; a checkpoint that needs
anything else is refused unless the caller passes ``trust_checkpoint=True``, which unpickles it
fully and lets it run code. Only do that for checkpoints from a source you trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from patchsim.errors import CheckpointError, ConfigError, ShapeError

PATCHSIM_DETECTOR_FORMAT = "patchsim-detector/1"
PAD_VALUE = 114 / 255.0  # Ultralytics letterbox grey

#: canonical class -> names it may have in a model (normalized: lower case, "_" for spaces)
CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "stop_sign": ("stop_sign", "stop"),
    "speed_limit": ("speed_limit", "speed_limit_sign", "speedlimit"),
    "yield": ("yield", "yield_sign"),
    "vehicle": ("vehicle", "car", "truck", "bus", "van"),
}


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass
class RawDetections:
    """Dense, differentiable outputs.

    Attributes:
        boxes_xyxy: (B, N, 4) candidate boxes in input-image pixels.
        scores: (B, N, C) per-class probabilities in [0, 1].
    """

    boxes_xyxy: torch.Tensor
    scores: torch.Tensor


@dataclass
class Detections:
    """Decoded detections of one image: boxes (K, 4) xyxy px, scores (K,), classes (K,) model indices."""

    boxes_xyxy: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


@dataclass
class Letterbox:
    scale: float
    pad_left: int
    pad_top: int
    size_hw: tuple[int, int]  # network input size


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """float16 outputs are raised to float32 for the losses; float64 stays float64."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def letterbox_params(h: int, w: int, imgsz: int | None, stride: int) -> Letterbox:
    """Ultralytics' minimum-rectangle letterbox: scale the long side to ``imgsz`` (never up when
    ``imgsz`` is None), pad to a multiple of ``stride``, centred."""
    r = 1.0 if imgsz is None else min(imgsz / h, imgsz / w)
    nh, nw = int(round(h * r)), int(round(w * r))
    dh, dw = (-nh) % stride, (-nw) % stride
    top, left = int(round(dh / 2 - 0.1)), int(round(dw / 2 - 0.1))
    return Letterbox(r, left, top, (nh + dh, nw + dw))


class YoloDetector(torch.nn.Module):
    """Differentiable Ultralytics YOLO detector.

    Args:
        model: an Ultralytics ``DetectionModel`` (any YOLOv8/YOLO11/YOLO26 detection head).
        names: class index -> name, as stored in the model.
        imgsz: long side of the network input; None keeps the image size (padded to the stride).
        source: where the weights came from (for reports).

    Example:
        >>> det = load_detector("detector:default")  # doctest: +SKIP
        >>> raw = det(torch.rand(2, 3, 384, 640))
        >>> raw.scores.shape  # (B, N, C)
    """

    def __init__(self, model: torch.nn.Module, names: dict[int, str], imgsz: int | None = None, source: str = ""):
        super().__init__()
        self.model = model.eval()
        if hasattr(model, "fuse"):  # batch norms folded into the convolutions, as Ultralytics deploys them
            model.fuse(verbose=False)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.names = {int(k): str(v) for k, v in names.items()}
        self.imgsz = imgsz
        self.source = source
        self.stride = int(max(int(s) for s in getattr(model, "stride", torch.tensor([32.0])).tolist()))
        self._head = model.model[-1]

    # ------------------------------------------------------------------ classes

    def class_indices(self, name: str) -> list[int]:
        """Model class indices for a canonical name (or a model class name).

        Raises:
            ConfigError: naming the class and the names the model has.
        """
        wanted = _norm(name)
        aliases = CLASS_ALIASES.get(wanted, (wanted,))
        found = [i for i, n in self.names.items() if _norm(n) in aliases]
        if not found:
            raise ConfigError(f"class {name!r} is not in detector {self.source or 'model'} "
                              f"(it has: {', '.join(self.names.values())})")
        return sorted(found)

    def class_score(self, raw: RawDetections, name: str) -> torch.Tensor:
        """(B, N) probability of canonical class ``name`` (max over its model classes)."""
        idx = self.class_indices(name)
        return raw.scores[..., idx].amax(-1)

    # ------------------------------------------------------------------ forward

    @property
    def end2end(self) -> bool:
        """True for NMS-free heads, whose predictions are the top scores of the one-to-one branch."""
        return bool(getattr(self._head, "end2end", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _check(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ShapeError(f"detector input must be (B, 3, H, W), got {tuple(images.shape)}")

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        """(B, 3, H, W) in [0, 1] -> letterboxed network input (differentiable)."""
        self._check(images)
        h, w = images.shape[-2:]
        lb = letterbox_params(h, w, self.imgsz, self.stride)
        x = images
        nh, nw = int(round(h * lb.scale)), int(round(w * lb.scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        ph, pw = lb.size_hw[0] - nh, lb.size_hw[1] - nw
        if ph or pw:
            x = F.pad(x, (lb.pad_left, pw - lb.pad_left, lb.pad_top, ph - lb.pad_top), value=PAD_VALUE)
        return x.to(self.dtype), lb

    def forward(self, images: torch.Tensor) -> RawDetections:
        """Dense outputs for (B, 3, H, W) images in [0, 1]; gradients flow to ``images``."""
        x, lb = self.preprocess(images)
        y, preds = self.model(x)
        head = self._head
        nc = len(self.names)
        if self.end2end:  # NMS-free heads (YOLOv10, YOLO26): the deployed one-to-one branch, decoded densely
            dense = head._inference(preds["one2one"])
            xyxy = True
        else:
            dense = y
            xyxy = bool(getattr(head, "xyxy", False))
        boxes = _at_least_fp32(dense[:, :4].transpose(1, 2))
        if not xyxy:
            cxcy, wh = boxes[..., :2], boxes[..., 2:]
            boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], -1)
        offset = torch.tensor([lb.pad_left, lb.pad_top, lb.pad_left, lb.pad_top], device=boxes.device)
        boxes = (boxes - offset) / lb.scale
        scores = _at_least_fp32(dense[:, 4:4 + nc].transpose(1, 2))
        return RawDetections(boxes, scores)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                raw: RawDetections | None = None) -> list[Detections]:
        """Decoded detections per image (best class per box, class-aware NMS, like Ultralytics)."""
        import torchvision

        raw = raw if raw is not None else self.forward(images)
        out = []
        for boxes, scores in zip(raw.boxes_xyxy, raw.scores):
            if self.end2end:  # like Ultralytics: top-k (anchor, class) pairs by score, no NMS
                k = min(max_det, scores.numel())
                top, flat = scores.flatten().topk(k)
                keep = top > conf
                idx = torch.div(flat[keep], scores.shape[1], rounding_mode="floor")
                out.append(Detections(boxes[idx], top[keep], flat[keep] % scores.shape[1]))
                continue
            best, cls = scores.max(-1)
            keep = best > conf
            b, s, c = boxes[keep], best[keep], cls[keep]
            if len(s) > 30000:
                order = s.argsort(descending=True)[:30000]
                b, s, c = b[order], s[order], c[order]
            idx = torchvision.ops.nms(b + c[:, None].float() * 7680.0, s, iou)[:max_det]
            out.append(Detections(b[idx], s[idx], c[idx]))
        return out


# --------------------------------------------------------------------------- loading


def _check_detection_model(model: torch.nn.Module, path: Path) -> None:
    """Refuse segmentation, pose, oriented-box, classification and other non-YOLO-detect models."""
    from ultralytics.nn.tasks import DetectionModel

    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, (torch.nn.Sequential, torch.nn.ModuleList)) else None
    if isinstance(model, DetectionModel) and type(head).__name__ in ("Detect", "v10Detect"):
        return
    kind = {"SegmentationModel": "segmentation", "PoseModel": "pose", "OBBModel": "oriented-box",
            "ClassificationModel": "classification", "RTDETRDetectionModel": "RT-DETR"}.get(
        type(model).__name__, getattr(model, "task", None) or type(model).__name__)
    raise CheckpointError(f"{path}: this is a {kind} model; patchsim needs a YOLO detection model "
                          f"(an Ultralytics detect checkpoint)")


def save_detector_checkpoint(path: str | Path, model: torch.nn.Module, names: dict[int, str], meta: dict) -> Path:
    """Save weights in patchsim's own format: plain tensors and data, loadable with ``weights_only=True``."""
    from patchsim.runs import atomic_path

    ckpt = {
        "format": PATCHSIM_DETECTOR_FORMAT,
        # the architecture without Ultralytics' note of where its YAML file lay on the training machine
        "yaml": {k: v for k, v in dict(model.yaml).items() if k != "yaml_file"},
        "names": {int(k): str(v) for k, v in names.items()},
        "state_dict": {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype)
                       for k, v in model.state_dict().items()},
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def _model_of(ckpt: dict, path: Path) -> torch.nn.Module:
    """The trainable Ultralytics ``DetectionModel`` (float32, batch norms unfused) of a patchsim checkpoint."""
    from ultralytics.nn.tasks import DetectionModel

    try:
        model = DetectionModel(ckpt["yaml"], nc=len(ckpt["names"]), verbose=False)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt patchsim detector checkpoint ({exc})") from exc
    model.names = {int(k): str(v) for k, v in ckpt["names"].items()}
    return model


def _read_model(spec: str | Path, trust_checkpoint: bool = False) -> tuple[torch.nn.Module, dict[int, str], dict]:
    """The Ultralytics ``DetectionModel`` of a registry name or checkpoint path (float32, unfused, on the CPU),
    its class names and the checkpoint's ``meta`` (empty for Ultralytics checkpoints).

    Raises:
        CheckpointError: missing or corrupt file, or a model of another task.
    """
    from patchsim.victims.registry import resolve_weights

    path = resolve_weights(spec, "detector")
    if not path.is_file():
        raise CheckpointError(f"{path}: detector checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    from patchsim.victims.offline import ultralytics

    ultralytics()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        ckpt = None
    if isinstance(ckpt, dict) and ckpt.get("format") == PATCHSIM_DETECTOR_FORMAT:
        model, names, meta = _model_of(ckpt, path), ckpt["names"], dict(ckpt.get("meta", {}))
    else:
        from ultralytics.nn.tasks import torch_safe_load

        try:
            raw, _ = torch_safe_load(str(path), safe_only=not trust_checkpoint)
        except TypeError as exc:
            msg = str(exc)
            if "outside the supported" in msg:
                raise CheckpointError(f"{path}: the checkpoint references code outside Ultralytics' model classes; "
                                      "load it in Python with load_detector(path, trust_checkpoint=True) only if "
                                      "you trust its source") from exc
            raise CheckpointError(f"{path}: not a loadable checkpoint (empty, truncated or not a model)") from exc
        except Exception as exc:  # pickle errors, zip errors, missing modules
            raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
        candidate = raw.get("ema") or raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(candidate, torch.nn.Module):
            raise CheckpointError(f"{path}: no model inside the checkpoint")
        model, meta = candidate.float(), {}
        names = dict(getattr(model, "names", {}) or {})
    _check_detection_model(model, path)
    if not names:
        names = {i: str(i) for i in range(model.model[-1].nc)}
    return model, names, meta


def trainable_detector(spec: str | Path) -> tuple[torch.nn.Module, dict]:
    """A detector's Ultralytics ``DetectionModel`` to train further (float32, unfused, on the CPU) and the
    checkpoint's ``meta`` (empty for Ultralytics checkpoints), from a registry name or a path.

    Raises:
        CheckpointError: as :func:`load_detector`.
    """
    model, _, meta = _read_model(spec)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, meta


def save_ultralytics_checkpoint(path: str | Path, model: torch.nn.Module, names: dict[int, str]) -> Path:
    """Save ``model`` as Ultralytics saves its weights (``{"model": module, ...}``): it loads with
    ``YOLO(path)``, ``yolo predict`` and as a patchsim victim path, and a trainer can start from it."""
    from copy import deepcopy

    from patchsim.runs import atomic_path

    m = deepcopy(model).float().cpu()
    m.names = {int(k): str(v) for k, v in names.items()}
    for p in m.parameters():
        p.requires_grad_(False)
    with atomic_path(path) as tmp:
        torch.save({"model": m.half(), "train_args": {"task": "detect"}, "epoch": -1}, tmp)
    return Path(path)


def load_detector(spec: str | Path, device: str | torch.device = "cpu", imgsz: int | None = None,
                  half: bool = False, trust_checkpoint: bool = False) -> YoloDetector:
    """Load a detector from a registry name (``detector:default``) or a checkpoint path.

    Args:
        spec: ``detector:<name>`` for a shipped model, or a path to a patchsim detector
            checkpoint or any Ultralytics detection ``.pt``.
        half: run in float16 (CUDA only).
        trust_checkpoint: allow a full (code-running) unpickle of an Ultralytics checkpoint that
            the restricted loader refuses.

    Raises:
        CheckpointError: missing or corrupt file, or a model of another task.
    """
    model, names, meta = _read_model(spec, trust_checkpoint)
    imgsz = imgsz if imgsz is not None else meta.get("imgsz")
    model = model.to(device)
    if half:
        if torch.device(device).type != "cuda":
            raise ValueError("half precision needs a CUDA device")
        model = model.half()
    det = YoloDetector(model, names, imgsz=imgsz, source=str(spec))
    return det.to(device)


def iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (..., 4) against boxes (..., 4), broadcasting."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + 1e-9)

