"""Keep Ultralytics offline: no downloads, no installs, no network checks.

Import this module before ``ultralytics`` (every patchsim module that needs Ultralytics calls
:func:`ultralytics`); it sets the environment switches Ultralytics reads at import time.
"""

from __future__ import annotations

import os
from types import ModuleType

_ENV = {
    "YOLO_OFFLINE": "1",  # is_online() -> False: no hub, no downloads of weights or fonts
    "YOLO_AUTOINSTALL": "false",  # never pip-install a missing requirement at run time
    "YOLO_VERBOSE": "false",
}


def ultralytics() -> ModuleType:
    """The ``ultralytics`` package, imported with the offline switches set."""
    import torch

    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    # Ultralytics sets OMP_NUM_THREADS=1 at import when it is unset ("reduced CPU utilization during
    # training"), which would leave torch, if not yet started, on one thread: keep the user's setting.
    omp_was_set = "OMP_NUM_THREADS" in os.environ
    threads = torch.get_num_threads()
    import ultralytics as _ul

    if not omp_was_set:
        os.environ.pop("OMP_NUM_THREADS", None)
        torch.set_num_threads(threads)
    from ultralytics.utils import SETTINGS

    # no telemetry or hub sync (the settings file is local; nothing here contacts a server)
    try:
        SETTINGS.update({"sync": False, "hub": False})
    except Exception:  # pragma: no cover - a read-only settings file must not stop patchsim
        pass
    return _ul
