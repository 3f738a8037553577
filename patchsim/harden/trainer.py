"""Fine-tuning a detector on clean images and images whose sign faces carry adversarial patches, through
Ultralytics' own trainer: its losses, augmentations (mosaic, affine, colour), EMA, validation and,
for users with several GPUs, its DDP training.

The patches go on before Ultralytics' augmentations: :class:`PatchedYOLODataset` puts a patch on each
face of an attacked sign kind (with probability ``share``) as the image is loaded, so mosaic and
affine transforms move patch and box together, and the labels stay as they were. What is pasted is
described by a folder named in the data YAML under ``patchsim_patches`` (a key Ultralytics carries
along), so a DDP worker, which rebuilds the trainer from its arguments, finds it too:

    PATCHES/patches.json   share, gain jitter, the pool's PNG files and the attacker network
    PATCHES/pool/*.png     RGBA patches at slot resolution (alpha: where the patch is printed)
    PATCHES/attacker.pt    a :class:`~patchsim.harden.attacker.PatchGenerator` (optional)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from patchsim.harden.paste import paste_on_face

PATCHES_KEY = "patchsim_patches"
GENERATED_BATCH = 32


@dataclass
class PatchSource:
    """Where the patches pasted on training images come from.

    Attributes:
        pool: sign kind -> (K, h, w, 4) float32 RGBA patches as printed (the optimizer's).
        share: probability that a face of an attacked kind gets a patch.
        attacker_share: of the patches that are not random, the share drawn from the attacker network
            instead of the pool.
        gain_jitter: see :func:`~patchsim.harden.paste.paste_on_face`.
        random_share: of the patched faces, the share that get random sticker colours
            (:func:`~patchsim.harden.random_paint.random_sticker_colours`) in a random layout
            (:func:`~patchsim.harden.attacker.random_masks` with ``random_layout``), for the kinds in
            ``random_slots`` (kind -> the face's (1, h, w) outline and its size in m).
    """

    pool: dict[str, list[np.ndarray]] = field(default_factory=dict)
    share: float = 0.5
    attacker_share: float = 0.5
    gain_jitter: float = 0.15
    generator: object | None = None  # PatchGenerator
    generator_kind: str | None = None
    generator_cfg: object | None = None  # AttackerConfig
    generator_outline: torch.Tensor | None = None
    generator_size_m: tuple[float, float] = (0.75, 0.75)
    printer: object | None = None  # PrinterProfile
    random_share: float = 0.0
    random_layout: object | None = None  # AttackerConfig
    random_slots: dict[str, tuple[torch.Tensor, tuple[float, float]]] = field(default_factory=dict)
    _generated: list = field(default_factory=list)  # generated patches not yet used (made GENERATED_BATCH at a time)

    @property
    def _printed(self):
        """Colours (B, 3, H, W) -> as printed, or None without a printer profile."""
        return self.printer.apply if self.printer is not None else None

    @property
    def kinds(self) -> set[str]:
        return set(self.pool) | ({self.generator_kind} if self.generator is not None else set()) | (
            set(self.random_slots) if self.random_share > 0 else set())

    @classmethod
    def load(cls, folder: str | Path) -> "PatchSource":
        from patchsim.attack.patch import SlotInfo, raster_polygon
        from patchsim.config import from_dict, read_json
        from patchsim.eot.printer import load_profile
        from patchsim.harden.attacker import AttackerConfig, PatchGenerator

        folder = Path(folder)
        spec = read_json(folder / "patches.json", "patch source")
        printer = load_profile(str(folder / spec["printer_profile"])) if spec.get("printer_profile") else None
        pool: dict[str, list[np.ndarray]] = {}
        slots: dict[str, tuple[float, float]] = {}
        for entry in spec.get("pool", []):
            rgba = cv2.imread(str(folder / entry["file"]), cv2.IMREAD_UNCHANGED)
            if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
                raise FileNotFoundError(f"{folder / entry['file']}: not an RGBA PNG")
            rgba = cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA).astype(np.float32) / 255.0
            if printer is not None:
                rgba[..., :3] = printer.apply_np(rgba[..., :3])
            pool.setdefault(entry["sign_kind"], []).append(rgba)
            if "size_m" in entry:
                slots[entry["sign_kind"]] = tuple(entry["size_m"])
        src = cls(pool, spec.get("share", 0.5), spec.get("attacker_share", 0.5), spec.get("gain_jitter", 0.15),
                  printer=printer)
        rnd = spec.get("random")
        if rnd and rnd.get("share", 0.0) > 0:
            src.random_share = float(rnd["share"])
            src.random_layout = from_dict(AttackerConfig, rnd["layout"], str(folder / "patches.json"))
            for kind, size_m in slots.items():
                hw = pool[kind][0].shape[:2]
                outline = raster_polygon(SlotInfo("face", "sign_face", size_m, kind).outline_uv(), hw)
                src.random_slots[kind] = (torch.from_numpy(outline)[None], size_m)
        att = spec.get("attacker")
        if att:
            g, _ = PatchGenerator.load(folder / att["file"])
            src.generator, src.generator_kind = g, att["sign_kind"]
            src.generator_cfg = from_dict(AttackerConfig, att["config"], str(folder / "patches.json"))
            src.generator_size_m = tuple(att["size_m"])
            outline = raster_polygon(SlotInfo("face", "sign_face", src.generator_size_m, att["sign_kind"]).outline_uv(),
                                     g.hw)
            src.generator_outline = torch.from_numpy(outline)[None]
        return src

    def draw(self, kind: str, rng: np.random.Generator) -> np.ndarray | None:
        """(h, w, 4) a patch for a face of ``kind``, or None when it stays clean."""
        if kind not in self.kinds or rng.random() >= self.share:
            return None
        if kind in self.random_slots and rng.random() < self.random_share:
            return self._random_patch(kind, rng)
        use_generator = self.generator is not None and kind == self.generator_kind and (
            kind not in self.pool or rng.random() < self.attacker_share)
        if use_generator:
            if not self._generated:  # one forward pass for many patches costs little more than for one
                from patchsim.harden.attacker import generated_rgba

                gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
                self._generated = list(generated_rgba(self.generator, self.generator_cfg, self.generator_outline,
                                                      self.generator_size_m, GENERATED_BATCH, gen, self._printed))
            return self._generated.pop()
        options = self.pool[kind]
        return options[int(rng.integers(len(options)))]

    def _random_patch(self, kind: str, rng: np.random.Generator) -> np.ndarray:
        """(h, w, 4) random sticker colours, as printed, in a random layout on a face of ``kind``."""
        from patchsim.harden.attacker import layout_rgba
        from patchsim.harden.random_paint import random_sticker_colours

        outline, size_m = self.random_slots[kind]
        colours = torch.from_numpy(random_sticker_colours(tuple(outline.shape[-2:]), rng)).permute(2, 0, 1)[None]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return layout_rgba(colours, self.random_layout, outline, size_m, gen, self._printed)[0]


def write_patch_source(folder: str | Path, pool: list[dict], share: float, attacker_share: float,
                       gain_jitter: float, printer_profile: str | None, attacker: dict | None,
                       random: dict | None = None) -> Path:
    """Write ``patches.json`` (``pool``: entries with ``file`` relative to ``folder``, ``sign_kind`` and the
    face's ``size_m``; ``random``: ``share`` and the sticker ``layout``, an ``AttackerConfig`` as a dict)."""
    from patchsim.runs import write_json

    return write_json(Path(folder) / "patches.json", {
        "share": share, "attacker_share": attacker_share, "gain_jitter": gain_jitter,
        "printer_profile": printer_profile, "pool": pool, "attacker": attacker, "random": random})


def corners_dir(images_dir: Path) -> Path:
    """``.../images/<split>`` -> ``.../corners/<split>``, where ``patchsim data generate`` writes the faces'
    corners of each image."""
    return images_dir.parent.parent / "corners" / images_dir.name


def _corners_file(im_file: str) -> Path:
    p = Path(im_file)
    return corners_dir(p.parent) / f"{p.stem}.json"


def _faces(dataset, index: int) -> list[dict]:
    """The sign faces recorded for a training image (cached on the dataset)."""
    if index not in dataset._faces:
        f = _corners_file(dataset.im_files[index])
        dataset._faces[index] = json.loads(f.read_text()) if f.is_file() else []
    return dataset._faces[index]


def _with_patches(dataset, label: dict, index: int) -> dict:
    """``label`` (an Ultralytics sample) with patches on the faces of the attacked sign kinds."""
    source: PatchSource = dataset.patch_source
    faces = [f for f in _faces(dataset, index) if f["kind"] in source.kinds]
    if not faces:
        return label
    rng = np.random.default_rng(random.getrandbits(63))  # seeded per worker by Ultralytics
    sy, sx = label["ratio_pad"]
    rgb = None
    for face in faces:
        rgba = source.draw(face["kind"], rng)
        if rgba is None:
            continue
        if rgb is None:  # the loaded image may be the RAM cache's own array: work on a copy
            rgb = np.ascontiguousarray(label["img"][..., ::-1])
        corners = np.asarray(face["face_corners_px"], np.float32) * np.array([sx, sy], np.float32)
        paste_on_face(rgb, corners, rgba, face["kind"], source.gain_jitter, rng)
    if rgb is not None:
        label["img"] = np.ascontiguousarray(rgb[..., ::-1])
    return label


def adopt(dataset, source: PatchSource) -> None:
    """Make an Ultralytics ``YOLODataset`` paste patches, in place.

    In place because the dataset's mosaic transform holds the dataset object itself and calls it for
    the other images of each mosaic; a new object would leave those unpatched.
    """
    dataset.__class__ = _patched_dataset_class()
    dataset.patch_source = source
    dataset._faces = {}


@lru_cache(maxsize=1)
def _patched_dataset_class() -> type:
    from ultralytics.data.dataset import YOLODataset

    class PatchedYOLODataset(YOLODataset):
        """A ``YOLODataset`` whose every loaded image (mosaic parts included) gets its patches."""

        def get_image_and_label(self, index: int) -> dict:
            return _with_patches(self, super().get_image_and_label(index), index)

    PatchedYOLODataset.__module__ = __name__
    PatchedYOLODataset.__qualname__ = "PatchedYOLODataset"
    return PatchedYOLODataset


@lru_cache(maxsize=1)
def _harden_trainer_class() -> type:
    # a subclass of patchsim's trainer, so its Ultralytics settings hold also in a DDP worker
    from patchsim.victims.train_detector import detection_trainer_class

    base = detection_trainer_class()

    def build_dataset(self, img_path, mode="train", batch=None):
        ds = base.build_dataset(self, img_path, mode, batch)
        folder = self.data.get(PATCHES_KEY)
        if mode == "train" and folder:
            adopt(ds, PatchSource.load(folder))
        return ds

    return type("HardenTrainer", (base,), {"__module__": __name__, "build_dataset": build_dataset,
                                           "__doc__": "patchsim's DetectionTrainer whose training set pastes the "
                                                      "patches named in the data YAML."})


def __getattr__(name: str):
    # the classes that subclass Ultralytics' are made on first use (importing Ultralytics is slow and must
    # follow patchsim's offline settings), and found here by name when a data loader worker or a DDP
    # process unpickles them
    if name == "PatchedYOLODataset":
        return _patched_dataset_class()
    if name == "HardenTrainer":
        return _harden_trainer_class()
    raise AttributeError(name)
