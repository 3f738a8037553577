"""One place that builds a simulator by backend name.

Nothing outside ``patchsim/sim`` names a backend class: commands, the episode engine and the
sweep workers call :func:`make_simulator` with a :class:`SimSpec` (or a name and options).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from patchsim.config import param
from patchsim.errors import ConfigError
from patchsim.sim.base import Simulator

BACKENDS: tuple[str, ...] = ("embedded", "carla")


@dataclass(frozen=True)
class SimSpec:
    """Which simulator to build, with the CARLA connection where it is CARLA. Picklable, so a
    sweep job can carry it to a worker process."""

    backend: Literal["embedded", "carla"] = param("embedded", help="embedded (built-in Panda3D) or carla")
    carla_host: str = param("localhost", help="CARLA server address")
    carla_port: int = param(2000, range=(1, 65535), help="CARLA server RPC port")
    carla_town: str | None = param(None, help="CARLA map to load, e.g. Town03; None keeps the server's")
    carla_timeout_s: float = param(10.0, unit="s", range=(0.1, 3600.0), help="timeout of each CARLA call")
    carla_load_timeout_s: float = param(120.0, unit="s", range=(1.0, 3600.0), help="timeout for loading a town")
    carla_tm_port: int = param(8000, range=(1, 65535), help="CARLA Traffic Manager port")
    carla_spawn_index: int = param(0, range=(0, 100000), help="the ego starts at the map's spawn point of this index")

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown simulator {self.backend!r} (choose one of: {', '.join(BACKENDS)})",
                              key="sim")

    def to_json(self) -> dict[str, Any]:
        if self.backend == "embedded":
            return {"backend": "embedded"}
        return asdict(self)


def make_simulator(spec: SimSpec | str = "embedded", labels: bool | str = "auto", **options: Any) -> Simulator:
    """A simulator for ``spec`` (a :class:`SimSpec`, or a backend name with ``SimSpec`` options).

    Args:
        labels: for the embedded backend, when to make the label render ("auto", True, False).
            CARLA has no label render and refuses ``labels=True``.

    Raises:
        ConfigError: an unknown backend or option.
        PatchsimError: the backend cannot start (no CARLA server answering, say).
    """
    if isinstance(spec, str):
        unknown = sorted(set(options) - set(SimSpec.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown simulator option {unknown[0]!r}", key=unknown[0])
        spec = SimSpec(backend=spec, **options)  # type: ignore[arg-type]
    elif options:
        raise ConfigError("pass simulator options in the SimSpec, not beside it")
    if spec.backend == "embedded":
        from patchsim.sim.embedded import EmbeddedSimulator

        return EmbeddedSimulator(labels=labels)
    if labels is True:
        raise ConfigError("the CARLA backend has no label render; this command needs one (use --sim embedded)",
                          key="sim")
    from patchsim.sim.carla_backend import CarlaSimulator

    return CarlaSimulator(host=spec.carla_host, port=spec.carla_port, timeout_s=spec.carla_timeout_s,
                          town=spec.carla_town, tm_port=spec.carla_tm_port,
                          load_timeout_s=spec.carla_load_timeout_s, spawn_index=spec.carla_spawn_index)
