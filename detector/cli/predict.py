"""``detector predict``: scenes in, files out (a thin call into :func:`detector.batch.run`)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from detector.batch import QUICKLOOK_SUFFIX
from detector.cli.options import (
    bands_option,
    check_model_classes,
    check_overlap,
    gsd_option,
    model_options,
    parse_classes,
    parse_formats,
    quiet_enabled,
    tile_options,
    weights_option,
)
from detector.tiling import MAX_GROW
from detector.writers import COLLECTION_FORMATS

#: Exit status of a batch where a scene failed, and of an interrupted one.
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (created when missing): one file per scene and format, named after the scene; or one "
    f"file for the whole batch, with a 'scene' column ({' '.join(COLLECTION_FORMATS.values())}).",
)
@click.option(
    "-f",
    "--format",
    "formats",
    multiple=True,
    callback=parse_formats,
    help="geojson (default), gpkg, csv, coco; repeat the option or give a comma list.",
)
@weights_option()
@model_options
@tile_options
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Tiles per model call (default: the backend's own, 1 on the CPU, 8 on CUDA).",
)
@click.option(
    "--classes",
    callback=parse_classes,
    default=None,
    help="Keep only these classes (comma list of the model's class names, or transport-aircraft / "
    "small-aircraft, split from aircraft by size; `detector info` lists the model's names).",
)
@bands_option
@gsd_option
@click.option("--no-resample", is_flag=True, help="Do not resample scenes to the model's training GSD.")
@click.option(
    "--tile-grow",
    type=click.FloatRange(1.0, MAX_GROW),
    default=None,
    help="Balanced grid: tiles may grow up to this times the tile size when the scene then needs fewer model "
    "pixels (models that run any tile size; default 1.25; 1 keeps the plain grid).",
)
@click.option(
    "--force-resolution",
    is_flag=True,
    help="Run scenes whose GSD is far coarser than the model's training range (refused otherwise).",
)
@click.option(
    "--cross-class-iou",
    type=click.FloatRange(0, 1),
    default=0.8,
    show_default=True,
    help="One label per object: of detections of different classes overlapping at least this much (IoU), "
    "keep the best and record the runner-up's class and score; 0 keeps every label.",
)
@click.option(
    "--size-classes/--no-size-classes",
    default=True,
    show_default=True,
    help="Split aircraft into transport-aircraft and small-aircraft by measured size "
    "(configs/aircraft-sizes.yaml; needs the GSD: georeferencing or --gsd, else they stay aircraft).",
)
@click.option(
    "--quicklook/--no-quicklook",
    default=True,
    show_default=True,
    help=f"Also write <scene>{QUICKLOOK_SUFFIX} with the detections drawn (beside a one-file output: only "
    "when asked for).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing outputs, and remove stale outputs of an earlier run for these scenes (files named "
    "like ours). Without it an existing output stops the run before the first scene.",
)
@click.option(
    "--layer-per-crs", is_flag=True, help="With -o FILE.gpkg: one layer per CRS instead of one CRS."
)
@click.option(
    "--keep-crs",
    is_flag=True,
    help="GeoJSON in the scene CRS (with a 'crs' member) instead of RFC 7946 lon/lat.",
)
@click.option(
    "--coco-images",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="COCO dataset file: coco outputs take its image ids (by file name) and category ids, so they score.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Run the scenes on a local Dask cluster of N worker processes (the dask extra); "
    "model threads default to the CPUs shared among them.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run the scenes on an existing Dask cluster (e.g. tcp://host:8786); its workers must see the scenes.",
)
@click.pass_context
def predict(
    ctx: click.Context,
    sources: tuple[str, ...],
    out: Path,
    formats: list[str],
    weights: str | None,
    device: str,
    runtime: str,
    conf: float,
    threads: int | None,
    streams: int | None,
    tile: int | None,
    overlap: float | None,
    zoom: float | None,
    batch: int | None,
    classes: list[str] | None,
    bands: tuple[int, ...] | None,
    gsd: float | None,
    no_resample: bool,
    tile_grow: float | None,
    force_resolution: bool,
    cross_class_iou: float,
    size_classes: bool,
    quicklook: bool,
    overwrite: bool,
    layer_per_crs: bool,
    keep_crs: bool,
    coco_images: str | None,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Detect objects in SOURCES (files, folders, globs) and write the results to OUT.

    Each scene gets one file per format, named after the scene (e.g. OUT/scene.geojson), unless OUT is one
    file (e.g. OUT.gpkg): then every scene goes into it, with a 'scene' column, in one CRS. Existing outputs
    are never replaced without --overwrite. A scene that fails is reported and skipped; the others are still
    written. The exit status is 1 when any scene failed, 130 when interrupted.
    """
    from detector import batch as batch_mod
    from detector.cli.progress import BatchProgress, ClusterProgress
    from detector.distributed import connect
    from detector.tiling import TileConfig

    check_overlap(tile, overlap)
    single = batch_mod.collection_format(out)
    if layer_per_crs and single != "gpkg":
        problem = (
            "needs a .gpkg output file (-o FILE.gpkg)" if single is None else f"only for .gpkg, not {single}"
        )
        raise click.BadParameter(problem, param_hint="'--layer-per-crs'")
    if single is not None:
        given = {
            name: ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
            for name in ("formats", "quicklook")
        }
        if given["formats"] and formats != [single]:
            raise click.BadParameter(
                f"{out} is one {single} file for the batch; leave out -f or give -f {single}",
                param_hint="'-f'",
            )
        if not given["quicklook"]:
            quicklook = False  # a one-file output gets quicklooks beside it only when asked for

    config = batch_mod.BatchConfig(
        formats=tuple(formats),
        tile=TileConfig(
            tile=tile,
            overlap=0.2 if overlap is None else overlap,
            batch=batch,
            resample=not no_resample,
            grow=TileConfig.grow if tile_grow is None else tile_grow,
            zoom=1.0 if zoom is None else zoom,
        ),
        classes=None if classes is None else tuple(classes),
        bands=bands,
        gsd=gsd,
        keep_crs=keep_crs,
        quicklook=quicklook,
        overwrite=overwrite,
        layer_per_crs=layer_per_crs,
        force=force_resolution,
        coco_images=coco_images,
    )
    model = batch_mod.ModelSpec(
        weights=weights,
        device=device,
        conf=conf,
        threads=threads,
        streams=streams,
        runtime=runtime,
        cross_class_iou=cross_class_iou or None,
        sizes=size_classes,
    )
    if classes is not None:
        check_model_classes(classes, model)  # the model's own names, before any scene is read
    progress: BatchProgress | ClusterProgress = BatchProgress(quiet=quiet_enabled(ctx))
    not_run: list[str] | None = None
    try:
        with connect(workers, scheduler) as client:
            if client is not None:  # scenes run side by side: one bar over all of them
                progress = ClusterProgress(quiet=quiet_enabled(ctx))
            results = batch_mod.run(
                sources, out, config=config, model=model, progress=progress, client=client
            )
    except batch_mod.BatchInterrupted as e:
        results, not_run = e.results, [r.source for r in e.not_run]
    finally:
        progress.close()

    if len(results) > 1 or not results[0].error:  # a single failed scene: its error line says it all
        seen = list(dict.fromkeys(c for r in results for c in r.counts))  # the model's class names
        click.echo(batch_mod.summary_table(results, classes or seen))
        click.echo(f"outputs in {out}")
    if not_run is not None:
        nothing = f"; nothing written to {out}" if single else ""
        click.echo(
            f"error: interrupted{nothing}; {len(not_run)} of {len(results)} scenes never ran: {', '.join(not_run)}",
            err=True,
        )
        ctx.exit(EXIT_INTERRUPTED)
    if any(r.error for r in results):
        ctx.exit(EXIT_FAILED)
