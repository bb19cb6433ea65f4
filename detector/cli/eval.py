"""``detector eval``: average precision per class and size on the eval sets, through the tiled path."""

from __future__ import annotations

from typing import Any

import click

from detector.cli.options import (
    RUNTIMES,
    check_overlap,
    data_root_option,
    device_option,
    quiet_enabled,
    tile_options,
)


@click.command(name="eval")
@click.option(
    "-w",
    "--weights",
    "weights",
    multiple=True,
    help="Model file(s); the first is the baseline (default: the shipped model).",
)
@click.option("-s", "--set", "sets", multiple=True, help="Eval set name(s) from the config (default: all).")
@data_root_option()
@click.option(
    "-o",
    "--out",
    "out",
    default="out/eval",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Report folder.",
)
@click.option(
    "--config", type=click.Path(dir_okay=False), default=None, help="Eval config (default configs/eval.yaml)."
)
@click.option(
    "--conf",
    type=click.FloatRange(0, 1),
    default=None,
    help="Operating threshold for P/R (default: the config's).",
)
@tile_options
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="At most this many images per set (quick runs)."
)
@click.option(
    "--iou-type",
    type=click.Choice(["aabb", "rotated"]),
    default=None,
    help="Box comparison (default: per set).",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=RUNTIMES[0],
    show_default=True,
    help="Runtime for ONNX models (every model of the run).",
)
@device_option
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    weights: tuple[str, ...],
    sets: tuple[str, ...],
    data_root: str | None,
    out: str,
    config: str | None,
    conf: float | None,
    tile: int | None,
    overlap: float | None,
    zoom: float | None,
    limit: int | None,
    iou_type: str | None,
    runtime: str,
    device: str,
) -> None:
    """Average precision per class and size on the eval sets (reports: eval.md, eval.json, PR curves)."""
    from detector import evaluate

    check_overlap(tile, overlap)

    bars: dict[str, Any] = {}
    quiet = quiet_enabled(ctx)

    def progress(label: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(total=total, desc=label, unit="img", leave=False, disable=quiet or None)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    models: list[str | None] = list(weights) or [None]  # None: the default model
    report = evaluate.run(
        models,  # type: ignore[arg-type]  # run() documents None entries as the default model
        sets=list(sets) or None,
        data_root=data_root,
        out_dir=out,
        conf=conf,
        tile=tile,
        overlap=overlap,
        zoom=1.0 if zoom is None else zoom,
        limit=limit,
        iou_type=iou_type,
        device=device,
        runtime=runtime,
        config=config,
        progress=progress,
    )
    for label, results in report["results"].items():
        click.echo(f"## {label}\n{evaluate.markdown_table(results)}\n")
    click.echo(
        f"reports: {report['markdown']}, {report['json']}" + "".join(f", {p}" for p in report["plots"])
    )
