"""Many scenes in, files out: the batch behind ``detector predict``.

The flow of :func:`run`, top to bottom:

    sources (files, folders, globs)  -> expand_sources -> scene paths, as given (never our own outputs)
      -> output_stems                 -> one distinct output name per scene
      -> planned_outputs              -> nothing is overwritten without ``overwrite=True``
      -> predict_scene per scene      -> Detector.predict, then the scene's files   (a plain function)
      -> SceneResult per scene        -> counts, files written, or the error
      -> write_collection             -> only when ``out`` is one file for the whole batch

Output targets: ``out`` is a folder (one file per scene and format, named after the scene) unless it ends
in one of :data:`detector.writers.COLLECTION_FORMATS` (``.gpkg .geojson .fgb .parquet .csv .coco.json``)
and is not an existing folder: then the whole batch goes into that one file, with a ``scene`` column
(:func:`detector.writers.write_collection` chooses one CRS for all scenes). Existing targets are never
replaced unless ``BatchConfig.overwrite``; the check covers every target before the first scene runs.

:func:`predict_scene` takes only picklable arguments (a scene path, its output name, a
:class:`BatchConfig` and a :class:`ModelSpec` or a loaded detector) and never raises for a bad scene: a
failure comes back as ``SceneResult.error``, so one scene never stops the batch, and a worker process can
run the same function. A model given as a :class:`ModelSpec` is loaded once per process.

Nothing here prints: the CLI turns :class:`SceneResult` rows into a table (:func:`summary_table`) and
:class:`SceneProgress` events into progress bars.
"""

from __future__ import annotations

import errno
import functools
import glob
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.errors import CommandError, DetectorError, OutputExistsError, WriteError

if TYPE_CHECKING:
    from distributed import Client

    from detector.backends.base import ModelMeta
    from detector.detections import Detections
    from detector.pipeline import Detector
    from detector.raster import Scene
    from detector.tiling import TileConfig
    from detector.writers import Provenance, QuicklookView

logger = logging.getLogger(__name__)

#: File endings picked up when a source is a folder or a glob.
IMAGE_EXTENSIONS = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg", ".vrt")
#: File ending of the quicklook image written beside a scene's outputs.
QUICKLOOK_SUFFIX = ".quicklook.jpg"


# ----------------------------------------------------------------------------------------------------------
# what a batch is made of
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model as a path plus options (picklable): what :meth:`Detector.load` needs.

    Attributes:
        weights: ``.onnx`` or ``.pt`` file; ``None`` for the shipped default model.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        conf: score threshold.
        threads: CPU threads for the model (``None``: all).
        streams: tiles run at once on the CPU, sharing ``threads`` (``None``: the backend's default; see
            :class:`~detector.backends.base.Streams`).
        runtime: what runs ONNX files, one of :data:`detector.model.RUNTIMES` (``"onnxruntime"``, ``"openvino"``).
        cross_class_iou: one label per object above this IoU (``None`` or 0: off); see
            :class:`~detector.pipeline.Detector`.
        sizes: add ``length_m`` / ``span_m`` and split aircraft into ``transport-aircraft`` /
            ``small-aircraft`` by size (:mod:`detector.sizes`).
    """

    weights: str | None = None
    device: str = "cpu"
    conf: float = 0.25
    threads: int | None = None
    streams: int | None = None
    runtime: str = "onnxruntime"
    cross_class_iou: float | None = 0.8
    sizes: bool = True

    def load(self, *, cache: bool = True) -> Detector:
        """The :class:`~detector.pipeline.Detector` for this spec (with ``cache``: loaded once per process)."""
        return _load_cached(self) if cache else _load(self)


@functools.lru_cache(maxsize=2)
def _load_cached(spec: ModelSpec) -> Detector:
    return _load(spec)


def _load(spec: ModelSpec) -> Detector:
    from detector.pipeline import Detector

    return Detector.load(
        spec.weights,
        device=spec.device,
        conf=spec.conf,
        threads=spec.threads,
        streams=spec.streams,
        runtime=spec.runtime,
        cross_class_iou=spec.cross_class_iou,
        sizes=spec.sizes,
    )


@dataclass(frozen=True)
class BatchConfig:
    """How every scene of a batch is predicted and written (picklable).

    Attributes:
        formats: output formats, keys of :data:`detector.writers.FORMATS`, one file per scene each.
        tile: tiling (size, overlap, batch, resampling); ``None`` for :class:`~detector.tiling.TileConfig()`.
        classes: keep only these class names (``None``: all).
        bands: 1-based bands read as red, green, blue (or one band for gray).
        gsd: ground sample distance in m/px, overriding the georeferencing.
        keep_crs: GeoJSON in the scene CRS instead of RFC 7946 lon/lat.
        quicklook: also write ``<name>.quicklook.jpg`` with the detections drawn.
        overwrite: replace existing outputs (and remove stale outputs of an earlier run for these scenes);
            without it an existing target stops the batch before the first scene runs.
        layer_per_crs: for a single ``.gpkg`` output, one layer per CRS instead of one CRS for all.
        collect: keep each scene's detections in its result and write only its quicklook (set by :func:`run`
            when the whole batch goes into one file).
        provenance: what every output records about the run (:class:`detector.writers.Provenance`: model
            name and file hash, conf, tile, overlap); :func:`run` fills it when left ``None``.
        force: run scenes far coarser than the model's GSD range anyway (``Detector.predict(force=True)``).
        coco_images: a COCO dataset file whose image ids (matched by file name) and category ids the COCO
            outputs take; ``None``: ids of our own (images numbered in batch order).
    """

    formats: tuple[str, ...] = ("geojson",)
    tile: TileConfig | None = None
    classes: tuple[str, ...] | None = None
    bands: tuple[int, ...] | None = None
    gsd: float | None = None
    keep_crs: bool = False
    quicklook: bool = True
    overwrite: bool = False
    layer_per_crs: bool = False
    collect: bool = False
    provenance: Provenance | None = None
    force: bool = False
    coco_images: str | None = None


@dataclass
class SceneResult:
    """What happened to one scene of a batch.

    Attributes:
        source: the scene as given (path or argument).
        name: its output name (file stem of its outputs).
        counts: detections per class name.
        outputs: files written for it.
        error: one line saying why it failed (``None`` when it succeeded).
        ran: False for a scene that never ran (an argument that named nothing, or a batch interrupted before
            the scene).
        detections: the scene's detections, kept only when the batch writes one file for all scenes.
    """

    source: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    ran: bool = True
    detections: Detections | None = None


@dataclass(frozen=True)
class SceneProgress:
    """A progress event: ``done`` of ``total`` tiles of scene ``index`` (0-based) of ``count``."""

    scene: str
    name: str
    index: int
    count: int
    done: int
    total: int


# ----------------------------------------------------------------------------------------------------------
# sources and output names
# ----------------------------------------------------------------------------------------------------------


def is_remote(name: str) -> bool:
    """True for GDAL virtual file systems and URLs (``/vsis3/...``, ``https://...``)."""
    return name.startswith("/vsi") or "://" in name


def is_our_output(path: str | Path) -> bool:
    """True for files named like our own side outputs (``*.quicklook.*``), which are never scenes."""
    return ".quicklook." in Path(path).name.lower()


def _link_problem(arg: str) -> str | None:
    """``"symbolic link loop"`` / ``"broken symbolic link ..."`` for a path that names a bad link, else None."""
    try:
        os.stat(arg)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if os.path.islink(arg):
            return f"broken symbolic link (to {os.readlink(arg)})"
    return None


class _Exclude:
    """Paths that folder and glob expansion skip: our quicklooks, and anything inside the output folder."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = _resolve(out_dir) if out_dir is not None else None

    def __call__(self, path: Path) -> bool:
        if is_our_output(path):
            return True
        if self.out_dir is None:
            return False
        resolved = _resolve(path)
        return resolved is not None and (resolved == self.out_dir or self.out_dir in resolved.parents)


def _resolve(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop
        return None


def _images_in(folder: Path, skip: Callable[[Path], bool]) -> list[Path]:
    found = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith(".") or skip(p):
            continue
        if p.is_file():
            found.append(p)
        elif problem := _link_problem(str(p)):
            logger.warning("%s: skipped, %s", p, problem)
    return found


def expand_sources(
    sources: Sequence[str], *, exclude: str | Path | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursed for :data:`IMAGE_EXTENSIONS`) and globs -> ``(scenes, missing)``.

    Explicit files are taken whatever their extension; folders and globs contribute image files only, and
    never our own outputs: ``*.quicklook.*`` files, and anything inside the folder ``exclude`` (the output
    folder). Scenes are named as given (a folder's files as ``folder/relative/path``). Duplicates are
    dropped, the order of the arguments is kept (sorted within a folder or glob). ``missing`` holds
    ``(argument, problem)`` for arguments that name nothing (``"file not found"``, ``"symbolic link loop"``,
    ...).
    """
    scenes: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()
    skip = _Exclude(Path(exclude) if exclude is not None else None)
    hint = f" (outputs in {exclude} are never read as scenes)" if exclude is not None else ""

    def add(p: str) -> None:
        resolved = None if is_remote(p) else _resolve(Path(p))
        key = p if resolved is None else str(resolved)
        if key not in seen:
            seen.add(key)
            scenes.append(p)

    for arg in sources:
        path = Path(arg)
        if is_remote(arg) or path.is_file():
            add(arg)
        elif path.is_dir():
            found = _images_in(path, skip)
            if not found:
                missing.append((arg, f"no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder{hint}"))
            for f in found:
                add(str(f))
        elif glob.has_magic(arg):
            found_files: list[str] = []
            for m in sorted(glob.glob(arg, recursive=True)):
                mp = Path(m)
                if skip(mp):
                    continue
                if mp.is_dir():
                    found_files += [str(p) for p in _images_in(mp, skip)]
                elif mp.is_file() and mp.suffix.lower() in IMAGE_EXTENSIONS:
                    found_files.append(m)
            if not found_files:
                missing.append((arg, f"no images match this pattern{hint}"))
            for name in found_files:
                add(name)
        else:
            missing.append((arg, _link_problem(arg) or "file not found"))
    return scenes, missing


def output_stems(scenes: Sequence[str]) -> list[str]:
    """A distinct output name per scene: the file stem, prefixed with parent folders where stems collide."""

    def stem(name: str, depth: int) -> str:
        p = Path(name.rstrip("/"))
        parts = [p.stem, *[q.name for q in list(p.parents)[:depth] if q.name]]
        return "_".join(reversed(parts))

    depth = [0] * len(scenes)
    names = [stem(s, 0) for s in scenes]
    for _ in range(8):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        clash = [i for i, n in enumerate(names) if counts[n] > 1]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
            names[i] = stem(scenes[i], depth[i])
    final: list[str] = []
    used: set[str] = set()
    for n in names:  # last resort for identical paths below 8 folders: a counter
        candidate, k = n, 2
        while candidate.lower() in used:
            candidate, k = f"{n}_{k}", k + 1
        used.add(candidate.lower())
        final.append(candidate)
    return final


# ----------------------------------------------------------------------------------------------------------
# errors as one line
# ----------------------------------------------------------------------------------------------------------


_ELSEWHERE = r"see (the )?(previous|above|below) (exception|error|message)s?|see above"
#: Phrases that point at a message the user never sees: ``(See previous exception)``, ``. See above.``
_POINTS_ELSEWHERE = re.compile(rf"\s*\(\s*({_ELSEWHERE})\W*\)|[\s.;:,]*\b({_ELSEWHERE})\b\.?", re.IGNORECASE)


def describe_error(error: BaseException, name: str | None = None) -> str:
    """One line for an error: ``"<name>: <message>"`` unless the message already names ``name``.

    Errors of this package, ``OSError`` and ``ValueError`` speak for themselves; anything else (a bug, most
    likely) is prefixed with its type. Phrases that point at nothing the user sees (GDAL's "See previous
    exception") are dropped; a message left empty by that is taken from the error's cause.
    """
    msg = _POINTS_ELSEWHERE.sub("", " ".join(str(error).split())).lstrip(" :;,").rstrip(" .:;,")  # keep "../"
    if not msg:
        cause = error.__cause__ or error.__context__
        if cause is not None and cause is not error:
            return describe_error(cause, name)
        msg = type(error).__name__
    if not isinstance(error, (DetectorError, OSError, ValueError)):
        msg = f"{type(error).__name__}: {msg}"
    if name and name not in msg:
        msg = f"{name}: {msg}"
    return msg


# ----------------------------------------------------------------------------------------------------------
# one scene
# ----------------------------------------------------------------------------------------------------------


def check_output_dir(out: Path) -> None:
    """Create the output folder when missing; raise :class:`WriteError` when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{out}: cannot create the output folder ({(e.strerror or str(e)).lower()})") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise WriteError(f"{out}: output folder is not writable")


def collection_format(out: str | Path) -> str | None:
    """The format of ``out`` as one file for a whole batch (:data:`detector.writers.COLLECTION_FORMATS`);
    ``None`` when ``out`` is a folder (an existing one, or a name without one of those endings)."""
    from detector import writers

    path = Path(out)
    if path.is_dir():
        return None
    try:
        return writers.collection_format(path)
    except ValueError:
        return None


def _suffixes(fmt: str) -> tuple[str, ...]:
    """Every ending a per-scene output of format ``fmt`` can have (GeoJSON of pixel coordinates differs)."""
    from detector.writers import output_suffixes

    return output_suffixes(fmt)


def _our_suffixes() -> tuple[str, ...]:
    """Every ending of a per-scene output of ours, longest first."""
    from detector.writers import FORMATS

    endings = {s for fmt in FORMATS for s in _suffixes(fmt)}
    return tuple(sorted({*endings, QUICKLOOK_SUFFIX}, key=len, reverse=True))


def scene_outputs(name: str, out: Path, config: BatchConfig) -> list[Path]:
    """The files :func:`write_scene` may write for a scene named ``name`` (every ending of each format, then
    the quicklook): the targets checked before a batch starts."""
    paths = [] if config.collect else [out / f"{name}{s}" for fmt in config.formats for s in _suffixes(fmt)]
    if config.quicklook:
        paths.append(out / f"{name}{QUICKLOOK_SUFFIX}")
    return paths


def planned_outputs(names: Sequence[str], out: Path, config: BatchConfig) -> list[Path]:
    """Every file a batch may write: ``out`` itself when it is one file, then the scenes' files."""
    fmt = collection_format(out)
    folder = out.parent if fmt else out
    scenes = [p for name in names for p in scene_outputs(name, folder, config)]
    return [out, *scenes] if fmt else scenes


def check_targets(targets: Sequence[Path], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` naming the first target that exists, unless ``overwrite``."""
    if overwrite:
        return
    for path in targets:
        if path.exists() or path.is_symlink():
            raise OutputExistsError(f"{path}: already exists; use --overwrite to replace it")


def remove_stale(names: Sequence[str], out: Path, config: BatchConfig) -> list[Path]:
    """Remove files in ``out`` named like our outputs for these scenes that this batch will not write.

    Only ``<name><ending>`` files for the endings of our formats and quicklooks are touched (e.g. the CSV of
    an earlier run with other formats). Returns the removed paths.
    """
    keep = {p for name in names for p in scene_outputs(name, out, config)}
    removed = []
    for name in names:
        for suffix in _our_suffixes():
            path = out / f"{name}{suffix}"
            if path not in keep and path.is_file():
                path.unlink()
                removed.append(path)
                logger.info("%s: removed (stale output of an earlier run)", path)
    return removed


def write_scene(
    dets: Detections,
    scene: str,
    name: str,
    out: Path,
    config: BatchConfig,
    view: QuicklookView | None = None,
) -> list[Path]:
    """Write one scene's detections in every format of ``config`` (and its quicklook, drawn on ``view`` when
    :func:`detect` read it) into ``out``.

    With ``config.collect`` only the quicklook is written (the detections go into one file for the batch).
    """
    from detector import writers

    written = []
    for fmt in () if config.collect else config.formats:
        path = out / f"{name}{writers.output_name(dets, fmt)}"
        written.append(
            writers.write(
                dets,
                path,
                fmt,
                keep_crs=config.keep_crs,
                provenance=config.provenance,
                coco_images=config.coco_images if fmt == "coco" else None,
            )
        )
        for other in _suffixes(fmt):  # e.g. the pixel GeoJSON of an earlier run, now georeferenced
            sibling = out / f"{name}{other}"
            if sibling != path and config.overwrite and sibling.is_file():
                sibling.unlink()
    if config.quicklook:
        written.append(
            writers.write_quicklook(
                dets, out / f"{name}{QUICKLOOK_SUFFIX}", source=scene, bands=config.bands, view=view
            )
        )
    return written


def predict_scene(
    scene: str,
    name: str,
    out: Path,
    config: BatchConfig,
    model: Detector | ModelSpec,
    progress: Callable[[int, int], None] | None = None,
) -> SceneResult:
    """Predict one scene and write its outputs; a failure is returned as ``SceneResult.error``, not raised.

    Args:
        scene: the scene path (or GDAL name) as given.
        name: its output name (file stem).
        out: the output folder (exists).
        config: formats and prediction options.
        model: a loaded detector, or a :class:`ModelSpec` loaded here (once per process).
        progress: called as ``progress(done_tiles, total_tiles)``.

    Raises:
        KeyboardInterrupt: passed through, so a batch can stop.
    """
    views: list[QuicklookView] = []
    try:
        dets = detect(scene, config, model, progress, views)
    except Exception as e:  # one scene's failure never stops the batch
        return failed_scene(scene, name, describe_error(e, scene))
    return save_scene(dets, scene, name, out, config, views[0] if views else None)


def detect(
    scene: str,
    config: BatchConfig,
    model: Detector | ModelSpec,
    progress: Callable[[int, int], None] | None = None,
    views: list[QuicklookView] | None = None,
) -> Detections:
    """``Detector.predict`` on one scene with the options of ``config`` (the same call on a Dask worker).

    With ``views`` (a list) and ``config.quicklook``, the scene's quicklook view is read while the scene is
    still open and appended to it: a PNG or JPEG is then decoded once for the tiles and the quicklook, not
    twice (2560 px PNG: 0.12 s). A failed view read leaves the list empty: the quicklook writer reads the scene
    itself later and reports the problem there, after the other outputs are written.
    """
    detector = model.load() if isinstance(model, ModelSpec) else model
    keep = functools.partial(_keep_view, views, scene) if views is not None and config.quicklook else None
    return detector.predict(
        scene,
        tile=config.tile,
        classes=None if config.classes is None else list(config.classes),
        bands=config.bands,
        gsd=config.gsd,
        progress=progress,
        force=config.force,
        with_scene=keep,
    )


def _keep_view(views: list[QuicklookView], source: str, opened: Scene) -> None:
    """Append the open scene's quicklook view to ``views``; a failed read is left to the quicklook writer."""
    from detector.writers import quicklook_view

    try:
        views.append(quicklook_view(opened))
    except Exception as e:
        logger.debug("%s: quicklook view not read with the tiles: %s", source, e)


def save_scene(
    dets: Detections,
    scene: str,
    name: str,
    out: Path,
    config: BatchConfig,
    view: QuicklookView | None = None,
) -> SceneResult:
    """Write a scene's detections (:func:`write_scene`) and count them; a write failure becomes ``error``."""
    result = SceneResult(source=scene, name=name, detections=dets if config.collect else None)
    try:
        result.counts = {c: int((dets.class_ids == i).sum()) for i, c in enumerate(dets.class_names)}
        result.outputs = write_scene(dets, scene, name, out, config, view)
        logger.info("%s: %d detections -> %s", scene, len(dets), ", ".join(p.name for p in result.outputs))
    except Exception as e:  # one scene's failure never stops the batch
        return failed_scene(scene, name, describe_error(e, scene))
    return result


def failed_scene(scene: str, name: str, error: str) -> SceneResult:
    """The result of a scene that failed with the one-line ``error`` (logged here)."""
    handling = sys.exc_info()[0] is not None  # called in an except block: the traceback is at hand
    logger.error("%s", error, exc_info=handling and logger.isEnabledFor(logging.DEBUG))
    return SceneResult(source=scene, name=name, error=error)


# ----------------------------------------------------------------------------------------------------------
# the batch
# ----------------------------------------------------------------------------------------------------------


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: ``results`` holds every scene, those that never ran with ``error`` set."""

    def __init__(self, results: list[SceneResult], not_run: list[SceneResult]) -> None:
        super().__init__("interrupted")
        self.results = results
        self.not_run = not_run


def run(
    sources: Sequence[str],
    out: str | Path,
    *,
    config: BatchConfig | None = None,
    detector: Detector | None = None,
    model: ModelSpec | None = None,
    progress: Callable[[SceneProgress], None] | None = None,
    client: Client | None = None,
) -> list[SceneResult]:
    """Predict every scene of ``sources`` and write its outputs into ``out``.

    Nothing is written over an existing file unless ``config.overwrite``: every target is checked before the
    first scene runs. With it, stale outputs of an earlier run for these scenes are removed too.

    Args:
        sources: files, folders (searched for :data:`IMAGE_EXTENSIONS`) and globs; files inside the output
            folder and our ``*.quicklook.*`` files are never read as scenes.
        out: the output folder (created when missing), one file per scene and format; or one file for the
            whole batch when it ends in one of :data:`detector.writers.COLLECTION_FORMATS` (quicklooks, when
            asked for, go beside it).
        config: formats and prediction options (default :class:`BatchConfig()`).
        detector: a loaded detector; else ``model`` is loaded (default: the shipped model).
        model: the model as a path plus options, used when ``detector`` is ``None``.
        progress: called with a :class:`SceneProgress` after every batch of tiles.
        client: a ``distributed.Client``: run the scenes on its Dask workers, one task per scene (huge
            scenes split into blocks of tiles), and write each scene here as it completes
            (:mod:`detector.distributed`). Needs ``model`` (a loaded ``detector`` does not travel); model
            threads default to the worker's share of its host's CPUs. Same detections as without it.

    Returns:
        One :class:`SceneResult` per argument that named nothing, then one per scene in order.

    Raises:
        CommandError: no source names a scene.
        OutputExistsError: a target exists and ``config.overwrite`` is off (nothing has run).
        WriteError: the output folder cannot be created or written.
        ModelError: the model cannot be loaded.
        BatchInterrupted: Ctrl-C; carries the results so far and the scenes that never ran.
    """
    from detector.tiling import TileConfig

    config = config or BatchConfig()
    target = Path(out)
    fmt = collection_format(target)
    if config.layer_per_crs and fmt != "gpkg":
        raise ValueError(f"{target}: one layer per CRS needs a .gpkg output file")
    out = target.parent if fmt else target
    config = replace(config, collect=fmt is not None)
    scenes, missing = expand_sources(sources, exclude=None if fmt else out)
    if not scenes:
        arg, problem = missing[0]
        raise CommandError(f"{arg}: {problem}")
    names = output_stems(scenes)
    check_targets(planned_outputs(names, target, config), config.overwrite)
    check_output_dir(out)
    if config.overwrite and not fmt:  # beside a one-file output, per-scene files are not this run's kind
        remove_stale(names, out, config)
    if client is not None and detector is not None:
        raise ValueError("batch.run with a client takes model=ModelSpec(...), not a loaded detector")
    worker: Detector | ModelSpec = detector if detector is not None else (model or ModelSpec())
    if client is not None:
        from detector import distributed

        worker = distributed.with_worker_threads(model or ModelSpec(), client)
        meta = distributed.model_meta(worker)  # a bad model fails here, not once per scene on the workers
    else:
        if isinstance(worker, ModelSpec):
            worker = worker.load(cache=False)  # this process runs one batch: nothing to share
        meta = worker.meta
    logger.info("model %s (%s, %d px tiles)", meta.name or "default", meta.task, meta.imgsz)
    tiling = config.tile or TileConfig()
    tiling.overlap_px(tiling.tile or meta.imgsz)  # an overlap too large for the model's tile fails once, here
    if config.provenance is None:
        config = replace(config, provenance=run_provenance(meta, model if detector is None else None, config))

    results = [
        SceneResult(source=arg, name=arg, error=f"{arg}: {problem}", ran=False) for arg, problem in missing
    ]
    for arg, problem in missing:
        logger.error("%s: %s", arg, problem)
    if client is not None and isinstance(worker, ModelSpec):  # with a client, always a spec
        results = _run_on_cluster(client, scenes, names, out, config, worker, progress, results)
    else:
        for k, (scene, name) in enumerate(zip(scenes, names, strict=True)):
            tick = _scene_progress(progress, scene, name, k, len(scenes))
            try:
                results.append(predict_scene(scene, name, out, config, worker, tick))
            except KeyboardInterrupt:
                not_run = [
                    SceneResult(
                        source=s, name=n, error=f"{s}: {'interrupted' if i == k else 'not run'}", ran=False
                    )
                    for i, (s, n) in enumerate(zip(scenes, names, strict=True))
                    if i >= k
                ]
                results += not_run
                raise BatchInterrupted(results, not_run) from None
    if fmt:
        write_collection(results, target, fmt, config)
    return results


def run_provenance(meta: ModelMeta, model: ModelSpec | None, config: BatchConfig) -> Provenance:
    """What the outputs of a run record: the model (name; with a :class:`ModelSpec`, its file's sha256 and the
    score threshold and runtime), tile size and overlap, and the classes kept."""
    from detector.model import default_weights
    from detector.tiling import TileConfig
    from detector.writers import Provenance

    tile = config.tile or TileConfig()
    name = meta.name or None
    extra: dict[str, Any] = {"classes": list(config.classes) if config.classes else None}
    if model is None:  # a detector loaded by the caller: its file is unknown here
        return Provenance(model=name, tile=tile.tile, overlap=tile.overlap, extra=extra)
    extra["runtime"] = model.runtime
    weights: str | Path | None = model.weights
    try:
        weights = weights or default_weights()
        if not is_remote(str(weights)):
            return Provenance.from_model_file(
                weights, model=name, conf=model.conf, tile=tile.tile, overlap=tile.overlap, **extra
            )
    except DetectorError as e:  # the model was loaded, so this is rare: record the run without the hash
        logger.warning("%s; the outputs record no model hash", describe_error(e))
    return Provenance(
        model=name,
        model_file=None if weights is None else str(weights),
        conf=model.conf,
        tile=tile.tile,
        overlap=tile.overlap,
        extra=extra,
    )


def write_collection(
    results: Sequence[SceneResult], target: Path, fmt: str, config: BatchConfig
) -> Path | None:
    """Write the detections of every scene that succeeded into the one file ``target``; ``None`` if none did.

    Each scene's result lists the file among its outputs (before its quicklook).
    """
    done = [r for r in results if r.error is None and r.detections is not None]
    if not done:
        logger.warning("%s: not written, no scene succeeded", target)
        return None
    from detector import writers

    path = writers.write_collection(
        [r.detections for r in done if r.detections is not None],
        target,
        fmt,
        keep_crs=config.keep_crs,
        layer_per_crs=config.layer_per_crs,
        provenance=config.provenance,
        coco_images=config.coco_images if fmt == "coco" else None,
    )
    for r in done:
        r.outputs.insert(0, path)
    logger.info("%s: %d scenes, %d detections", path, len(done), sum(sum(r.counts.values()) for r in done))
    return Path(path)


def _run_on_cluster(
    client: Client,
    scenes: list[str],
    names: list[str],
    out: Path,
    config: BatchConfig,
    model: ModelSpec,
    progress: Callable[[SceneProgress], None] | None,
    results: list[SceneResult],
) -> list[SceneResult]:
    """:func:`run` on Dask workers: each scene is written as it completes; ``results`` + scenes in input order."""
    from detector import distributed

    def tick(index: int, done: int, total: int) -> None:
        if progress is not None:
            progress(SceneProgress(scenes[index], names[index], index, len(scenes), done, total))

    done: dict[int, SceneResult] = {}
    stream = distributed.predict_scenes(client, scenes, model, config, progress=tick)
    try:
        for k, outcome in stream:
            if isinstance(outcome, str):
                done[k] = failed_scene(scenes[k], names[k], outcome)
            else:
                done[k] = save_scene(outcome, scenes[k], names[k], out, config)
    except KeyboardInterrupt:
        stream.close()  # cancels the scenes still running
        not_run = [
            SceneResult(source=s, name=n, error=f"{s}: interrupted", ran=False)
            for k, (s, n) in enumerate(zip(scenes, names, strict=True))
            if k not in done
        ]
        results += [done[k] for k in sorted(done)] + not_run
        raise BatchInterrupted(results, not_run) from None
    return results + [done[k] for k in range(len(scenes))]


def _scene_progress(
    progress: Callable[[SceneProgress], None] | None, scene: str, name: str, index: int, count: int
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def tick(done: int, total: int) -> None:
        progress(SceneProgress(scene, name, index, count, done, total))

    return tick


def summary_table(results: Sequence[SceneResult], classes: Sequence[str]) -> str:
    """Counts per class per scene and in total, then the failures (plain text, aligned)."""
    header = ["scene", *classes, "total"]
    rows = []
    totals = dict.fromkeys(classes, 0)
    done = [r for r in results if r.error is None]
    for r in done:
        counts = [r.counts.get(c, 0) for c in classes]
        for c, n in zip(classes, counts, strict=True):
            totals[c] += n
        rows.append([r.name, *map(str, counts), str(sum(counts))])
    rows.append(
        [f"total ({len(done)} scenes)", *(str(totals[c]) for c in classes), str(sum(totals.values()))]
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [fmt(header), *(fmt(r) for r in rows[:-1]), "-" * len(fmt(header)), fmt(rows[-1])]
    failed = [r for r in results if r.error is not None]
    if failed:
        lines.append(f"failed: {len(failed)} of {len(results)} scenes")
        lines += [f"  {r.error}" for r in failed]
    return "\n".join(lines)
