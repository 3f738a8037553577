"""The shared cache: what several runs can reuse and anyone can rebuild (scene banks).

One folder, ``$PATCHSIM_CACHE`` or ``~/.cache/patchsim``, with a subfolder per kind. An entry's
name is a hash of everything that made it (its config, the scenario file's text, the patchsim
version), so a changed input never reuses a stale entry; ``patchsim cache`` shows the size and
clears it. Run directories keep only what reproduces and explains a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


KINDS = ("scenes",)  # the kinds of entry, one subfolder each


def cache_dir() -> Path:
    return Path(os.environ.get("PATCHSIM_CACHE") or Path.home() / ".cache" / "patchsim")


def cache_key(*parts: Any) -> str:
    """A short hash of JSON-able parts (configs, file texts, versions)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def check_kind(kind: str) -> None:
    """A ValueError naming ``kind`` when the cache has no such kind of entry."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r} (kinds: {', '.join(KINDS)})")


def entry_path(kind: str, key: str, suffix: str = ".pt") -> Path:
    check_kind(kind)
    return cache_dir() / kind / f"{key}{suffix}"


def usage() -> dict[str, Any]:
    """Bytes and entries per kind, and the folder."""
    root = cache_dir()
    kinds = {}
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            files = [f for f in sub.iterdir() if f.is_file() and not f.name.startswith(".")]
            kinds[sub.name] = {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
    return {"dir": str(root), "bytes": sum(k["bytes"] for k in kinds.values()), "kinds": kinds}


def clear(kind: str | None = None) -> int:
    """Delete the cache (or one kind of it); returns the bytes freed."""
    root = cache_dir()
    target = root / kind if kind else root
    freed = usage()["kinds"].get(kind, {}).get("bytes", 0) if kind else usage()["bytes"]
    if target.is_dir():
        shutil.rmtree(target)
    return freed
