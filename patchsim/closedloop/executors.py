"""Run many episode jobs: in this process, in local worker processes, or as Ray actors.

Whatever the executor, each finished episode is written at once and atomically as
``EPISODES/<job id>.json``, by this process; a job whose file is already there is not run again.
So a killed run resumes where it stopped: finished episodes are kept, unfinished ones run again,
none twice. A job that fails is written as ``EPISODES/<job id>.error.json`` (the message and
traceback) and the others go on.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

from patchsim.closedloop.jobs import EpisodeJob, EpisodeWorker, write_episode
from patchsim.errors import ConfigError, PatchsimError
from patchsim.runs import write_json
from patchsim.sim.factory import SimSpec

EXECUTORS = ("local", "ray")


def finished(episodes_dir: Path, job: EpisodeJob) -> dict[str, Any] | None:
    """The stored result of ``job``, or None when it has not finished. A damaged file (writes are atomic, so
    only outside damage makes one) counts as not finished: the episode runs again, with a line saying so."""
    path = Path(episodes_dir) / f"{job.job_id}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"{path}: damaged ({type(exc).__name__}); running this episode again", file=sys.stderr)
        return None


def check_executor(executor: str, workers: int) -> None:
    """A ConfigError naming the key, for an executor patchsim does not have or fewer than one worker."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r} (choose one of: {', '.join(EXECUTORS)})", key="executor")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}", key="workers")


def _error_record(job: EpisodeJob, exc: BaseException, tb: str) -> dict[str, Any]:
    return {"job_id": job.job_id, "job": job.identity(), "error": f"{type(exc).__name__}: {exc}", "traceback": tb}


# --------------------------------------------------------------------------- local worker processes

_WORKER: EpisodeWorker | None = None


def _init_process(specs, device: str) -> None:
    global _WORKER
    _WORKER = EpisodeWorker(specs.get(), device=device)


def _run_in_process(job: EpisodeJob) -> dict[str, Any]:
    try:
        return _WORKER.run(job)
    except Exception as exc:  # recorded per job, the sweep goes on
        return _error_record(job, exc, traceback.format_exc())


# --------------------------------------------------------------------------- executors


def _sim_specs(sim: SimSpec | list[SimSpec], workers: int) -> list[SimSpec]:
    specs = sim if isinstance(sim, list) else [sim] * workers
    if len(specs) < workers:
        raise ConfigError(f"{workers} workers need {workers} simulator servers, {len(specs)} given",
                          key="carla_servers")
    return specs[:workers]


def execute(jobs: Iterable[EpisodeJob], episodes_dir: str | Path, executor: str = "local", workers: int = 1,
            sim: SimSpec | list[SimSpec] | None = None, device: str = "cpu", ray_address: str | None = None,
            on_result: Callable[[dict[str, Any], bool], None] | None = None) -> list[dict[str, Any]]:
    """Run every job not yet finished in ``episodes_dir``; return all results in the order of ``jobs``.

    Args:
        executor: ``local`` (this process for one worker, worker processes for more) or ``ray``.
        sim: the simulator of each worker (a list gives each worker its own, e.g. one CARLA server each).
        ray_address: a Ray cluster to join; None starts a local Ray instance.
        on_result: called with each result as it arrives (``True`` when it was run now, ``False``
            when it was found finished), for progress reports.

    Raises:
        PatchsimError: after all jobs ran, when some failed (their errors are in ``*.error.json``).
    """
    check_executor(executor, workers)
    jobs = list(jobs)
    ids = [j.job_id for j in jobs]
    if len(set(ids)) != len(ids):
        raise PatchsimError("two jobs of this run are the same episode; check the sweep's seeds and conditions")
    out = Path(episodes_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.json"):  # the temporary file of a write that a kill interrupted
        stale.unlink(missing_ok=True)
    specs = _sim_specs(sim or SimSpec(), workers)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        done = finished(out, job)
        if done is not None:
            results[job.job_id] = done
            if on_result:
                on_result(done, False)
        else:
            todo.append(job)
    errors: list[dict[str, Any]] = []

    def take(result: dict[str, Any]) -> None:
        if "error" in result:
            write_json(out / f"{result['job_id']}.error.json", result)
            errors.append(result)
        else:
            (out / f"{result['job_id']}.error.json").unlink(missing_ok=True)
            write_episode(out, result)
            results[result["job_id"]] = result
        if on_result:
            on_result(result, True)

    if todo:
        if executor == "ray":
            _run_ray(todo, specs, device, ray_address, take)
        elif workers == 1:
            _run_here(todo, specs[0], device, take)
        else:
            _run_processes(todo, specs, device, take)
    if errors:
        first = errors[0]
        raise PatchsimError(f"{len(errors)} of {len(jobs)} episodes failed; the first ({first['job_id']}): "
                            f"{first['error']} (details in {out}/*.error.json)")
    return [results[i] for i in ids]


def _run_here(todo: list[EpisodeJob], spec: SimSpec, device: str, take) -> None:
    import torch

    threads = torch.get_num_threads()
    worker = EpisodeWorker(spec, device=device)
    try:
        for job in todo:
            try:
                result = worker.run(job)
            except Exception as exc:
                result = _error_record(job, exc, traceback.format_exc())
            take(result)
    finally:
        worker.close()
        torch.set_num_threads(threads)


def _run_processes(todo: list[EpisodeJob], specs: list[SimSpec], device: str, take) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked renderer or torch state
    queue = ctx.Queue()
    for spec in specs:
        queue.put(spec)
    with ProcessPoolExecutor(len(specs), mp_context=ctx, initializer=_init_process,
                             initargs=(queue, device)) as pool:
        pending = {pool.submit(_run_in_process, job) for job in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                take(fut.result())


def _run_ray(todo: list[EpisodeJob], specs: list[SimSpec], device: str, address: str | None, take) -> None:
    try:
        import ray
    except ImportError as exc:
        raise PatchsimError("--executor ray needs Ray: pip install 'patchsim[ray]'") from exc

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=len(specs), include_dashboard=False, log_to_driver=False)
        started = True
    try:
        actor_cls = ray.remote(num_cpus=1)(_RayWorker)
        actors = [actor_cls.remote(spec, device) for spec in specs]
        queue = list(todo)
        running: dict[Any, Any] = {}
        for actor in actors:
            if queue:
                running[actor.run.remote(queue.pop(0))] = actor
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                actor = running.pop(ref)
                take(ray.get(ref))
                if queue:
                    running[actor.run.remote(queue.pop(0))] = actor
        for actor in actors:
            ray.get(actor.close.remote())
    finally:
        if started:
            ray.shutdown()


class _RayWorker:
    """An :class:`EpisodeWorker` as a Ray actor (one simulator per actor)."""

    def __init__(self, spec: SimSpec, device: str):
        import os

        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
        self.worker = EpisodeWorker(spec, device=device)

    def run(self, job: EpisodeJob) -> dict[str, Any]:
        try:
            return self.worker.run(job)
        except Exception as exc:
            return _error_record(job, exc, traceback.format_exc())

    def close(self) -> None:
        self.worker.close()
