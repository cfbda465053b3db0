"""``hndsr batch``: resolve the sources, run every scene's stages in process or as a Ray Data pipeline, and keep
``batch.json`` in the destination up to date (each input's status, outputs, times and error).

On Ray (``--ray ADDRESS``) planning and committing are CPU tasks, the model runs in actors that load the weights
once (``--gpus-per-worker`` of a GPU each, fractional allowed; CPU actors where the cluster has no GPU). Ray
retries a scene whose worker died and restarts the actor elsewhere; a scene's COG and item appear only once
complete, so a scene run twice is still written once. Without ``--ray`` the same stages run here, one scene after
another, with a progress bar over tiles.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

from .locations import destination, storage_errors
from .sources import resolve
from .work import BatchParameters, Row, SceneStatus, Upscaler, commit, new_row, plan

REPORT = "batch.json"
DONE_WELL = (SceneStatus.SUCCEEDED.value, SceneStatus.SKIPPED.value)  # the scenes whose outputs exist
# Each CPU stage's share of a CPU (planning reads a header and statistics; committing writes a small JSON).
STAGE_CPUS = 0.25
# Environment forwarded to Ray's workers, which start with their node's own: the object storage's endpoint and
# credentials, and GDAL's settings.
FORWARDED_PREFIXES = ("AWS_", "GDAL_", "CPL_", "HNDSR_")


class Report:
    """``batch.json``: rewritten atomically after every scene, so that it tells what happened even after a kill."""

    def __init__(self, params: BatchParameters, rows: list[Row], ray_address: str | None) -> None:
        self.params, self.ray_address = params, ray_address
        self.out = destination(params.output)
        self.rows = {row["source"]: row for row in rows}
        self.started = _now()

    def update(self, row: Row) -> None:
        self.rows[row["source"]] = row

    def stop(self, unfinished: SceneStatus) -> None:
        """The last report of a run that ended early: every scene not done gets ``unfinished``."""
        for row in self.rows.values():
            if not SceneStatus(row["status"]).done:
                row["status"] = unfinished.value
        self.write(finished=True)

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in SceneStatus}
        for row in self.rows.values():
            counts[row["status"]] += 1
        return {status: n for status, n in counts.items() if n}

    def write(self, finished: bool = False) -> None:
        scenes = [{"source": r["source"], "href": r["href"], "status": r["status"], "error": r["error"],
                   "cog": r["cog"] if r["status"] in DONE_WELL else None,
                   "item": r["item"] if r["status"] in DONE_WELL else None,
                   "input": json.loads(r["input"]) if r["input"] else None, "tiles": r["tiles"],
                   "seconds": {"plan": round(r["plan_s"], 3), "upscale": round(r["upscale_s"], 3),
                               "commit": round(r["commit_s"], 3)}} for r in self.rows.values()]
        report = {"parameters": self.params.recorded(), "output": self.out.root, "ray": self.ray_address,
                  "started_at": self.started, "finished_at": _now() if finished else None,
                  "counts": self.counts(), "scenes": scenes}
        self.out.write_text(REPORT, json.dumps(report, indent=2) + "\n")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def in_process(rows: Iterable[Row], params: BatchParameters, tiles: tqdm) -> Iterator[Row]:
    """The stages one scene after another here; the model is loaded at the first scene that needs it."""
    upscaler: Upscaler | None = None

    def advance(done: int, total: int) -> None:
        tiles.total = total
        tiles.update(done - tiles.n)

    for row in rows:
        row = plan(row, params)
        if row["status"] == SceneStatus.PLANNED.value:
            upscaler = upscaler or Upscaler(params)
            tiles.reset()
            tiles.set_description(row["stem"])
            row = upscaler(row, progress=advance)
        yield commit(row, params)


def on_ray(rows: list[Row], params: BatchParameters, address: str, gpus_per_worker: float) -> Iterator[Row]:
    """The stages as a Ray Data pipeline on the cluster at ``address`` (``auto``, ``ray://HOST:PORT`` for Ray
    Client, or a head node's ``HOST:PORT``); rows come back as scenes finish."""
    import ray

    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_PREFIXES)}
    ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts scenes
        resources = ray.cluster_resources()
        if gpus_per_worker > 0 and resources.get("GPU", 0) >= gpus_per_worker:
            actors = max(1, int(resources["GPU"] / gpus_per_worker))
            model = {"num_gpus": gpus_per_worker, "num_cpus": 1}
        else:  # CPU actors, leaving about half the CPUs to the planning and committing tasks
            actors = max(1, int(resources.get("CPU", 1) // 2))
            model = {"num_cpus": 1}
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        dataset = dataset.map(plan, fn_kwargs={"params": params}, num_cpus=STAGE_CPUS)
        # Ray Data restarts a dead actor and retries its scene on whichever node is left (its actor pools default
        # to max_restarts=-1 and max_task_retries=-1).
        dataset = dataset.map(Upscaler, fn_constructor_kwargs={"params": params},
                              compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors), **model)
        dataset = dataset.map(commit, fn_kwargs={"params": params}, num_cpus=STAGE_CPUS)
        yield from dataset.iter_rows()
    finally:
        ray.shutdown()


def run_batch(sources: list[str], params: BatchParameters, asset: str | None = None, ray: str | None = None,
              gpus_per_worker: float = 1.0) -> int:
    """0 when every input succeeded or was already done, 1 when any failed, 130 when interrupted."""
    rows = [new_row(scene) for scene in resolve(sources, asset)]
    report = Report(params, rows, ray)
    pending = [row for row in rows if row["status"] == SceneStatus.PENDING.value]
    for row in rows:
        if row["status"] == SceneStatus.FAILED.value:  # a SOURCE that gave nothing, an item without the asset
            print(f"failed: {row['source']}: {row['error']}", file=sys.stderr)
    try:
        report.write()
    except storage_errors() as exc:
        print(f"error: cannot write {report.out.href(REPORT)}: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    scenes = tqdm(total=len(rows), initial=len(rows) - len(pending), desc="scenes", unit="scene", position=0)
    tiles = tqdm(desc="tiles", unit="tile", position=1, leave=False, disable=ray is not None)
    try:
        if not pending:
            results: Iterable[Row] = ()
        elif ray:
            results = on_ray(pending, params, ray, gpus_per_worker)
        else:
            results = in_process(pending, params, tiles)
        for row in results:
            report.update(row)
            report.write()
            scenes.update(1)
            if row["status"] == SceneStatus.FAILED.value:
                tqdm.write(f"failed: {row['source']}: {row['error']}", file=sys.stderr)
    except KeyboardInterrupt:
        report.stop(SceneStatus.INTERRUPTED)
        print(f"\ninterrupted: {report.out.href(REPORT)} says what was done; run the same command to go on",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (the run itself failed: no Ray cluster there, the model not loadable)
        report.stop(SceneStatus.PENDING)
        print(f"error: {type(exc).__name__}: {exc}; {report.out.href(REPORT)} says what was done", file=sys.stderr)
        return 2
    finally:
        tiles.close()
        scenes.close()
    report.write(finished=True)
    counts = report.counts()
    print(f"{len(rows)} inputs in {time.monotonic() - started:.1f} s: "
          + ", ".join(f"{n} {status}" for status, n in counts.items()) + f"; {report.out.href(REPORT)}")
    return 1 if counts.get("failed") else 0
