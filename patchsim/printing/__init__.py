"""Printables: print-ready PDFs of patches at true scale, rasters and cut outlines, and printer colour calibration.

- :func:`export_pdf`: a patch (run directory or patch.json) as a PDF: one page, tiles with an assembly
  page, or sticker sheets with a placement guide; every page with a label and a 100 mm scale bar.
- :func:`export_raster`, :func:`export_cut_svg`: PNG/TIFF with dpi metadata; cut outlines in mm.
- :func:`make_chart`, :func:`calibrate`: print a colour chart, photograph it, fit a printer profile.

Submodules are imported lazily, so ``import patchsim.printing`` stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "export_pdf": "patchsim.printing.pdf",
    "PrintJob": "patchsim.printing.pdf",
    "export_raster": "patchsim.printing.raster",
    "export_cut_svg": "patchsim.printing.svg",
    "load_source": "patchsim.printing.source",
    "PatchSource": "patchsim.printing.source",
    "TilingError": "patchsim.printing.layout",
    "PAPER_SIZES_MM": "patchsim.printing.layout",
    "make_chart": "patchsim.printing.chart",
    "chart_layout": "patchsim.printing.chart",
    "calibrate": "patchsim.printing.calibrate",
    "CalibrationError": "patchsim.printing.calibrate",
    "CalibrationResult": "patchsim.printing.calibrate",
    "write_default_profile": "patchsim.printing.calibrate",
    "delta_e_2000": "patchsim.printing.colour",
    "srgb_to_lab": "patchsim.printing.colour",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'patchsim.printing' has no attribute {name!r}")
