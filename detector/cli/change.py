"""``detector change``: object-level change between dates (a thin call into :mod:`detector.change`).

Each input is a scene (run through ``predict`` with the same options and a low confidence, ``--low``) or an
earlier output of ours (GeoPackage or GeoJSON). Consecutive dates are compared pairwise; with more than two
dates the counts per class per date also go to ``counts.csv`` and ``counts.png``.
"""

from __future__ import annotations

from pathlib import Path

import click

from detector.cli.options import (
    bands_option,
    comma_list,
    device_option,
    gsd_option,
    threads_option,
    tile_options,
    weights_option,
)


def _parse_shift(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        dx, dy = (float(v) for v in comma_list(value))
    except ValueError:
        raise click.BadParameter(
            f"expected DX,DY in metres (east, north), got {value!r}", ctx, param
        ) from None
    return dx, dy


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created when missing).",
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["gpkg", "geojson"]),
    default="gpkg",
    show_default=True,
    help="Change layer format (GeoPackage in the working CRS, GeoJSON in lon/lat).",
)
@weights_option("Model file for scene inputs (.onnx or .pt); default: the shipped model.")
@device_option
@threads_option
@tile_options
@click.option(
    "--high",
    type=click.FloatRange(0, 1),
    default=0.4,
    show_default=True,
    help="Score an object needs to count as departed, arrived or moved.",
)
@click.option(
    "--mid",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Score at which an unmatched object still counts as departed or arrived when the other date has "
    "nothing compatible at --low or more within --clear metres of it (--mid = --high: off).",
)
@click.option(
    "--clear",
    "clear_m",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="For --mid: metres around the object's footprint that must be clear on the other date (the "
    "residual misregistration; --max-shift when no shift is found).",
)
@click.option(
    "--low",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Score above which something counts as there (scenes are predicted with this confidence).",
)
@click.option(
    "--pixel-ratio",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="With the scenes at hand: an unmatched object scoring from --low up to --mid still counts as "
    "departed or arrived when the other date is clear there (as for --mid) and the pixels under it changed "
    "at least this much (the footprint's difference over its surroundings'); so does one held back only by "
    "weak detections (below --mid) of the other date.",
)
@click.option(
    "--pixel-same",
    type=click.FloatRange(min=0),
    default=1.5,
    show_default=True,
    help="With the scenes at hand: an unmatched object whose pixels changed less than this is no change at "
    "any score (the ground looks the same on both dates: the model missed it on one). 0: off.",
)
@click.option(
    "--pixel-check/--no-pixel-check",
    default=True,
    show_default=True,
    help="Look at the scenes' pixels under unmatched objects (--pixel-ratio, --pixel-same); earlier outputs "
    "take part when their scene is found.",
)
@click.option(
    "--max-shift",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Largest misregistration between dates searched for, in metres.",
)
@click.option(
    "--shift", callback=_parse_shift, default=None, help="A known shift DX,DY in metres: no estimate."
)
@click.option(
    "--move-radius",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="A confident object displaced by up to this many metres counts as moved (0: never moved).",
)
@click.option(
    "--groups",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML file of class groups that may match across dates (default: aircraft, helicopter, vehicles).",
)
@bands_option
@gsd_option
@click.option(
    "--same-grid",
    is_flag=True,
    help="Inputs without georeferencing share one pixel grid: compare in pixels (needs --gsd).",
)
@click.option(
    "--quicklook/--no-quicklook",
    default=True,
    show_default=True,
    help="Also write a side-by-side quicklook of each pair with the changes coloured.",
)
@click.pass_context
def change(
    ctx: click.Context,
    inputs: tuple[str, ...],
    out: Path,
    fmt: str,
    weights: str | None,
    device: str,
    threads: int | None,
    tile: int | None,
    overlap: float | None,
    zoom: float | None,
    high: float,
    mid: float,
    clear_m: float,
    low: float,
    pixel_ratio: float,
    pixel_same: float,
    pixel_check: bool,
    max_shift: float,
    shift: tuple[float, float] | None,
    move_radius: float,
    groups: str | None,
    bands: tuple[int, ...] | None,
    gsd: float | None,
    same_grid: bool,
    quicklook: bool,
) -> None:
    """Compare INPUTS (BEFORE AFTER [MORE...]: scenes or earlier .gpkg/.geojson outputs) date by date.

    Writes, per consecutive pair, OUT/<before>__<after>.changes.gpkg (status, class, both scores,
    displacement, length, heading), .summary.csv/.json and .quicklook.jpg; with more than two dates also
    OUT/counts.csv and OUT/counts.png. Prints the summary table of each pair.
    """
    from detector import change as ch
    from detector.errors import CommandError
    from detector.results import is_results_file
    from detector.tiling import TileConfig

    if len(inputs) < 2:
        raise click.UsageError("give at least two dates: BEFORE AFTER [MORE...]")
    if low > high:
        raise click.BadParameter(f"--low {low} is above --high {high}", ctx, param_hint="--low")
    if not low <= mid <= high:
        raise click.BadParameter(
            f"--mid {mid} must lie between --low {low} and --high {high}", ctx, param_hint="--mid"
        )
    config = ch.ChangeConfig(
        high=high,
        mid=mid,
        low=low,
        clear_m=clear_m,
        max_shift_m=max_shift,
        shift=shift,
        move_radius_m=move_radius,
        pixel_ratio=pixel_ratio if pixel_check else None,
        pixel_same=pixel_same if pixel_check and pixel_same > 0 else None,
        groups=ch.load_groups(groups) if groups else dict(ch.DEFAULT_GROUPS),
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(
            f"{out}: cannot create the output folder ({(e.strerror or str(e)).lower()})"
        ) from e

    detector = None
    if any(not is_results_file(p) for p in inputs):
        from detector.pipeline import Detector

        detector = Detector.load(weights, device=device, conf=low, threads=threads)
    tiling = TileConfig(tile=tile, overlap=0.2 if overlap is None else overlap)
    dates = [
        ch.load_date(p, detector, tile=tiling, bands=bands, gsd=gsd, zoom="auto" if zoom is None else zoom)
        for p in inputs
    ]
    ch.check_models(dates)
    for d in dates:
        recorded = d.dets.meta.get("conf")
        if recorded is not None and float(recorded) > low + 1e-9:
            click.echo(
                f"warning: {d.path} was predicted with conf {recorded}, above --low {low}: "
                f"flickering objects may show as changes",
                err=True,
            )

    for before, after in zip(dates, dates[1:], strict=False):
        changes = ch.compare(
            before.dets,
            after.dets,
            config=config,
            before_area=before.area,
            after_area=after.area,
            same_grid=same_grid,
            before_scene=before.scene,
            after_scene=after.scene,
        )
        stem = ch.pair_name(before.path, after.path)
        ch.write_pair(
            changes,
            out,
            stem,
            fmt=fmt,
            before_scene=before.scene,
            after_scene=after.scene,
            quicklook=quicklook,
            bands=bands,
        )
        dx, dy = changes.shift_m
        click.echo(
            f"{Path(before.path).name} -> {Path(after.path).name}: shift {dx:+.2f} m east, {dy:+.2f} m north "
            f"({changes.meta['shift_method']}, {changes.meta['shift_support']} objects agree)"
        )
        click.echo(ch.format_table(ch.summary(changes)))
        click.echo("")
    if len(dates) > 2:
        rows = ch.counts_per_date([d.dets for d in dates], [d.path for d in dates], high=high)
        ch.write_summary_csv(rows, out / "counts.csv")
        ch.write_counts_plot(rows, out / "counts.png")
        click.echo(ch.format_table([{**r, "date": Path(str(r["date"])).name} for r in rows]))
    click.echo(f"outputs in {out}")
