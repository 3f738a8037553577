"""Run directories and atomic file writes.

A run directory holds everything a result needs to be repeated: the resolved config, the seed,
the package versions, the command line, and the outputs. Files are written to a temporary name
in the same directory and renamed into place, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

_VERSIONED = ("patchsim", "torch", "torchvision", "kornia", "ultralytics", "numpy", "opencv-python", "panda3d",
              "reportlab")


def versions() -> dict[str, str]:
    """Installed versions of patchsim and the packages its results depend on."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def output_dir(path: str | Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Create the output folder ``path`` for a command; if the command fails, remove the folders this
    call created, so a failed command leaves nothing behind. A folder that already existed stays.

    Args:
        keep: names inside ``path`` that a ``--resume`` can use (a checkpoint, finished episodes):
            when one of them exists at the failure, the folder is kept.
    """
    path = Path(path)
    created = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        created = folder
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        resumable = any((path / name).exists() and (not (path / name).is_dir() or any((path / name).iterdir()))
                        for name in keep)
        if created is not None and not resumable:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (indented, NaN-free)."""
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_image(path: str | Path, image: np.ndarray, dpi: float | None = None) -> Path:
    """Write an RGB/RGBA/gray uint8 image atomically (PNG or TIFF by suffix), with dpi metadata if given."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {arr.dtype}")
    img = Image.fromarray(arr)
    kwargs: dict[str, Any] = {}
    if dpi is not None:
        kwargs["dpi"] = (float(dpi), float(dpi))
    with atomic_path(path) as tmp:
        img.save(tmp, format="TIFF" if Path(path).suffix.lower() in (".tif", ".tiff") else "PNG", **kwargs)
    return Path(path)


def manifest(command: str, seed: int | None, config: Any = None, **extra: Any) -> dict[str, Any]:
    """The reproducibility record every run directory carries as ``run.json``."""
    return {
        "command": command,
        "argv": sys.argv,
        "seed": seed,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "platform": platform.platform(),
        "config": config,
        **extra,
    }
