"""Many scenes, and huge scenes, on a Dask cluster: the engine behind ``batch.run(..., client=...)``.

The flow of :func:`predict_scenes`, client side on the left, worker side on the right:

    one task per scene  ------------------------------>  a scene up to ``split_pixels``: Detector.predict
                                                          a larger one: open it, count its tiles -> "split"
    a split scene: one task per block of tiles  ------>  Detector.predict_tiles(scene, block) -> TileParts
                   one merge task on the blocks  ----->  Detector.merge_tiles(blocks, in tile order)
    as each scene completes: yield (index, Detections)  (``batch.run`` writes it at once)

Work units pickle: a scene path, a block of tile indexes, a :class:`~detector.batch.BatchConfig` and a
:class:`~detector.batch.ModelSpec` (a model path plus options). Each worker opens its own rasters and loads
the model once per process (``ModelSpec.load`` caches it); no session or open file ever travels. A split
scene gives the same detections as :meth:`Detector.predict <detector.pipeline.Detector.predict>`, because
the blocks' raw tile detections are merged once, in tile order, by the same code.

Failures: an exception inside a task is caught there and comes back as a one-line error for that scene, so
the batch goes on. A worker that dies (segfault, out of memory) takes its task with it: the scheduler runs
the task again once (``allowed-failures``, set to 1 by :func:`local_cluster`; an existing cluster keeps its
own setting, 3 by default), then the scene is reported as failed. No more tasks are in flight than the
cluster has worker threads (the rest wait on the client), so a dying worker holds no queued scene that
would be charged with its death.

Progress: tasks publish ``(scene, block, done, total)`` tile counts on a Dask event topic; the client drains
them between results and calls ``progress(scene_index, done_tiles, total_tiles)``.

Memory: a worker holds one model and at most two batches of tiles (the pipeline reads window by window);
:func:`worker_peak_rss` reports each worker process's peak resident memory for benchmarks.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
import os
import queue
import resource
import threading
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from detector.batch import BatchConfig, ModelSpec, describe_error, detect
from detector.errors import CommandError
from detector.tiling import TileConfig

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

    from detector.backends.base import ModelMeta
    from detector.detections import Detections
    from detector.pipeline import TileParts

logger = logging.getLogger(__name__)

#: Scenes with more pixels than this are split into blocks of tiles (about 7000 x 7000 px).
SPLIT_PIXELS = 50_000_000
#: Tiles per block of a split scene.
BLOCK_TILES = 64
#: How often (seconds) the client looks for tile progress while no scene has completed.
POLL_SECONDS = 0.1
#: Seconds to wait for an existing Dask scheduler (``--scheduler``) to answer.
CONNECT_TIMEOUT_S = 10
#: On a local cluster, a task that no worker can run for this many seconds fails (its scene is reported).
NO_WORKERS_TIMEOUT_S = 120


# ----------------------------------------------------------------------------------------------------------
# the cluster
# ----------------------------------------------------------------------------------------------------------


def local_cluster(workers: int, **kwargs: Any) -> LocalCluster:
    """A Dask cluster of ``workers`` processes on this machine, one task at a time per process.

    The scheduler retries the task of a worker that died once (``allowed-failures`` 1), then reports it; a
    task no worker can take for :data:`NO_WORKERS_TIMEOUT_S` (every worker gone) fails instead of waiting. The
    dashboard listens on a free port. ``kwargs`` go to ``distributed.LocalCluster`` (e.g. ``memory_limit``).
    Close it (or use it as a context manager) when done.

    Raises:
        ValueError: ``workers`` is below 1.
    """
    import dask
    from distributed import LocalCluster

    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    options: dict[str, Any] = {
        "n_workers": int(workers),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",  # any free port: several clusters (or users) never clash
    }
    options.update(kwargs)
    settings = {
        "distributed.scheduler.allowed-failures": 1,
        # a task that no worker can take for this long (every worker died and none restarted) fails
        "distributed.scheduler.no-workers-timeout": f"{NO_WORKERS_TIMEOUT_S}s",
    }
    with dask.config.set(settings):
        return LocalCluster(**options)


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client | None]:
    """A Dask client for the CLI: ``workers`` local processes, an existing ``scheduler``, or ``None`` for neither.

    Raises:
        CommandError: both are given, Dask is not installed, or the scheduler cannot be reached.
    """
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and scheduler is not None:
        raise CommandError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    try:
        from distributed import Client
    except ModuleNotFoundError as e:
        raise CommandError(
            f"Dask workers need the dask extra ({e.name} is missing): pip install 'overhead-detector[dask]'"
        ) from e
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as e:
            raise CommandError(
                f"{scheduler}: cannot reach the Dask scheduler ({' '.join(str(e).split())})"
            ) from e
        with client:
            yield client
        return
    with local_cluster(int(workers)) as cluster, Client(cluster) as client:  # type: ignore[arg-type]
        yield client


def worker_threads(client: Client) -> int:
    """Model threads per worker: the CPUs of each host shared by its worker threads (the smallest, at least 1)."""
    cpus = client.run(_cpu_count)
    info = client.scheduler_info(**_every_worker(client))["workers"]
    per_host: dict[str, int] = {}
    for worker in info.values():
        per_host[worker["host"]] = per_host.get(worker["host"], 0) + int(worker.get("nthreads", 1))
    shares = [cpus[a] // per_host[w["host"]] for a, w in info.items() if a in cpus]
    return max(1, min(shares, default=1))


def _every_worker(client: Client) -> dict[str, int]:
    """``scheduler_info`` arguments listing every worker (some distributed releases list only a few)."""
    return {"n_workers": -1} if "n_workers" in inspect.signature(client.scheduler_info).parameters else {}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_peak_rss(client: Client) -> dict[str, int]:
    """Peak resident memory (bytes) of every worker process since it started (or since :func:`reset_peak_rss`).

    Reads ``VmHWM`` from ``/proc/self/status`` on Linux, else ``getrusage``'s ``ru_maxrss``. Workers that are
    threads of one process (``processes=False``) all report that process.
    """
    return client.run(_peak_rss)


def reset_peak_rss(client: Client) -> dict[str, bool]:
    """Restart the peak-memory count of every worker process (Linux only); ``False`` where it cannot."""
    return client.run(_reset_peak_rss)


def _peak_rss() -> int:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if os.uname().sysname == "Darwin" else 1024)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# work units (run on the workers)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What a task sends back: detections, raw tile parts, a tile count to split by, or an error line."""

    dets: Detections | None = None
    parts: TileParts | None = None
    split: int = 0
    error: str | None = None


def _scene_task(
    scene: str,
    index: int,
    config: BatchConfig,
    model: ModelSpec,
    split_pixels: int | None,
    topic: str | None,
    gdal_env: dict[str, Any],
) -> _Outcome:
    """One whole scene (``Detector.predict``), or, above ``split_pixels``, its tile count for the client to split."""
    import rasterio

    try:
        with rasterio.Env(**gdal_env):
            detector = model.load()
            if split_pixels is not None and _pixels(scene) > split_pixels:
                from detector.raster import open_scene

                with open_scene(scene, bands=config.bands, gsd=config.gsd) as opened:
                    return _Outcome(split=len(detector.plan(opened, config.tile).windows))
            dets = detect(scene, config, detector, _publisher(topic, index, 0))
        return _Outcome(dets=dets)
    except Exception as e:  # a scene's failure is a value: the batch goes on
        return _Outcome(error=describe_error(e, scene))


def _block_task(
    scene: str,
    index: int,
    block: int,
    tiles: range,
    coarse: bool,
    config: BatchConfig,
    model: ModelSpec,
    topic: str | None,
    gdal_env: dict[str, Any],
) -> _Outcome:
    """The raw detections of one block of tiles of a split scene (or of its coarse pass: no tiles, ``coarse``)."""
    import rasterio

    try:
        with rasterio.Env(**gdal_env):
            parts = model.load().predict_tiles(
                scene,
                tiles,
                tile=config.tile,
                bands=config.bands,
                gsd=config.gsd,
                progress=_publisher(topic, index, block),
                coarse=coarse,
            )
        return _Outcome(parts=parts)
    except Exception as e:
        return _Outcome(error=describe_error(e, scene))


def _merge_task(scene: str, config: BatchConfig, model: ModelSpec, *blocks: _Outcome) -> _Outcome:
    """Merge the blocks of a split scene once, in tile order (the first failed block fails the scene)."""
    failed = next((b.error for b in blocks if b.error is not None), None)
    if failed is not None:
        return _Outcome(error=failed)
    try:
        dets = model.load().merge_tiles(
            [b.parts for b in blocks if b.parts is not None],
            classes=None if config.classes is None else list(config.classes),
        )
        return _Outcome(dets=dets)
    except Exception as e:
        return _Outcome(error=describe_error(e, scene))


def _pixels(scene: str) -> int:
    """Width x height from the file header (0 when it cannot be opened: ``predict`` then reports why)."""
    import rasterio

    try:
        with rasterio.open(scene) as ds:
            return int(ds.width) * int(ds.height)
    except Exception:  # noqa: BLE001 - the full open in Detector.predict gives the proper error
        return 0


def _publisher(topic: str | None, index: int, block: int) -> Callable[[int, int], None] | None:
    """A pipeline progress callback that publishes ``(index, block, done, total)`` on the Dask topic."""
    if topic is None:
        return None
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not inside a worker (a direct call)
        return None

    def publish(done: int, total: int) -> None:
        worker.log_event(topic, (index, block, done, total))

    return publish


# ----------------------------------------------------------------------------------------------------------
# the client side
# ----------------------------------------------------------------------------------------------------------


def predict_scenes(
    client: Client,
    scenes: Sequence[str],
    model: ModelSpec,
    config: BatchConfig | None = None,
    *,
    split_pixels: int | None = SPLIT_PIXELS,
    block_tiles: int = BLOCK_TILES,
    progress: Callable[[int, int, int], None] | None = None,
) -> Generator[tuple[int, Detections | str], None, None]:
    """Predict scenes on a Dask cluster; yield ``(index, detections)`` or ``(index, error line)`` as each completes.

    At most as many tasks are in flight as the cluster has worker threads (the rest wait here), so a worker
    never holds a queued scene that would die with it; the blocks of a split scene go before the scenes not
    yet started.

    Args:
        client: a ``distributed.Client`` (its workers must see the scene paths).
        scenes: scene paths (or GDAL names), one task each.
        model: the model as a path plus options; each worker loads it once.
        config: prediction options (default :class:`~detector.batch.BatchConfig()`); formats are not used here.
        split_pixels: a scene with more pixels than this is split into blocks of ``block_tiles`` tiles, one
            task per block, merged once at the end; ``None`` never splits.
        block_tiles: tiles per block of a split scene.
        progress: called as ``progress(index, done_tiles, total_tiles)`` in the calling thread, as tiles of
            scene ``index`` are done.

    Yields:
        Each scene once, in the order they complete. A failure is a one-line error naming the scene.

    Closing the generator early (or Ctrl-C) cancels the tasks still running.
    """
    import rasterio.env
    from distributed import KilledWorker, as_completed

    if block_tiles < 1:
        raise ValueError(f"block_tiles must be at least 1, got {block_tiles!r}")
    config = config or BatchConfig()
    gdal_env = dict(rasterio.env.getenv()) if rasterio.env.hasenv() else {}
    run = uuid.uuid4().hex[:8]
    topic = f"detector-tiles-{run}" if progress else None
    events: queue.SimpleQueue = queue.SimpleQueue()
    tiles: dict[int, dict[int, tuple[int, int]]] = {}  # scene -> block -> (done, total)
    totals: dict[int, int] = {}  # scene -> tile count of a split scene

    def report() -> None:
        while True:
            try:
                _, (index, block, done, total) = events.get_nowait()
            except queue.Empty:
                return
            tiles.setdefault(index, {})[block] = (done, total)
            if progress is not None:
                counts = tiles[index].values()
                progress(index, sum(d for d, _ in counts), totals.get(index) or sum(t for _, t in counts))

    # work waiting to be submitted: (kind, scene index, key, function, arguments)
    todo: collections.deque[tuple[str, int, str, Callable[..., _Outcome], tuple[Any, ...]]] = (
        collections.deque(
            (
                "scene",
                k,
                f"detector-scene-{run}-{k}",
                _scene_task,
                (s, k, config, model, split_pixels, topic, gdal_env),
            )
            for k, s in enumerate(scenes)
        )
    )
    what: dict[Any, tuple[str, int]] = {}  # key of a future in flight -> (kind, scene index)
    blocks: dict[int, list[Future]] = {}  # a split scene's block futures, until its merge is submitted
    expected: dict[int, int] = {}  # a split scene's number of blocks
    pending = as_completed(loop=client.loop)
    wake = threading.Event()

    def submit() -> None:
        room = _worker_slots(client) - pending.count()
        while todo and room > 0:
            kind, k, key, func, args = todo.popleft()
            future = client.submit(func, *args, key=key, pure=False)
            future.add_done_callback(lambda _: wake.set())
            what[future.key] = (kind, k)
            pending.add(future)
            room -= 1
            if kind == "block":
                blocks[k].append(future)
                if len(blocks[k]) == expected[k]:  # the merge waits on the workers for every block
                    merge = client.submit(
                        _merge_task, scenes[k], config, model, *blocks.pop(k), key=f"detector-merge-{run}-{k}"
                    )
                    merge.add_done_callback(lambda _: wake.set())
                    what[merge.key] = ("merge", k)
                    pending.add(merge)

    if topic is not None:
        client.subscribe_topic(topic, events.put)
    try:
        submit()
        while not pending.is_empty():
            wake.clear()
            ready = pending.next_batch(block=False)
            report()
            if not ready:
                wake.wait(POLL_SECONDS)  # set as soon as a task completes
                continue
            for future in ready:
                kind, k = what.pop(future.key)
                if kind == "block":
                    continue  # its merge reports the scene
                scene = scenes[k]
                try:
                    outcome: _Outcome = future.result()
                except KilledWorker:
                    yield k, f"{scene}: the worker running it died twice (out of memory?); scene skipped"
                    continue
                except Exception as e:  # noqa: BLE001 - anything the task could not catch itself
                    yield k, describe_error(e, scene)
                    continue
                if outcome.error is not None:
                    yield k, outcome.error
                elif outcome.split:
                    ranges = _blocks(outcome.split, block_tiles, (config.tile or TileConfig()).coarse)
                    totals[k], expected[k], blocks[k] = outcome.split, len(ranges), []
                    todo.extendleft(
                        reversed(
                            [
                                (
                                    "block",
                                    k,
                                    f"detector-block-{run}-{k}-{b}",
                                    _block_task,
                                    (scene, k, b, tiles_, coarse, config, model, topic, gdal_env),
                                )
                                for b, (tiles_, coarse) in enumerate(ranges)
                            ]
                        )
                    )
                    logger.info("%s: %d tiles, split into %d blocks", scene, outcome.split, len(ranges))
                elif outcome.dets is not None:
                    yield k, outcome.dets
            submit()
        report()
    finally:
        if topic is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
        leftover = [*pending.futures, *(f for fs in blocks.values() for f in fs)]
        if leftover:
            with contextlib.suppress(Exception):
                client.cancel(leftover)


def _blocks(count: int, block_tiles: int, coarse: bool) -> list[tuple[range, bool]]:
    """The blocks of a split scene of ``count`` tiles: ``(tile indexes, coarse pass)`` each.

    With the coarse pass (``tile.coarse``) a last block of no tiles runs it, since ``predict`` puts its
    detections after those of all the tiles.
    """
    ranges = [
        (range(start, min(start + block_tiles, count)), False) for start in range(0, count, block_tiles)
    ]
    if coarse:
        ranges.append((range(0), True))
    return ranges


def _worker_slots(client: Client) -> int:
    """Worker threads in the cluster now (at least 1: tasks then wait for a worker to come back)."""
    workers = client.scheduler_info(**_every_worker(client))["workers"]
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def model_meta(model: ModelSpec) -> ModelMeta:
    """The metadata of a model spec's file, read here (a missing or broken model fails before any task)."""
    from detector.model import default_weights, read_meta

    return read_meta(model.weights or default_weights())


def with_worker_threads(model: ModelSpec, client: Client) -> ModelSpec:
    """``model`` with ``threads`` set to :func:`worker_threads` when it leaves them open (``None``)."""
    return model if model.threads is not None else replace(model, threads=worker_threads(client))
