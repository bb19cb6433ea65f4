"""``detector export``: an Ultralytics ``.pt`` checkpoint -> a verified, self-describing ``.onnx`` model."""

from __future__ import annotations

from pathlib import Path

import click

from detector.cli.options import check_finite, parse_class_map, parse_classes
from detector.cli.train import import_training
from detector.errors import CommandError


@click.command()
@click.argument("pt", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write."
)
@click.option(
    "--imgsz",
    type=click.IntRange(min=32),
    default=None,
    help="Input size, a multiple of 32 (default: training size).",
)
@click.option("--name", default="", help="Model name stored in the metadata (default: the file stem).")
@click.option(
    "--gsd",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    callback=check_finite,
    help="Training GSD in m/px.",
)
@click.option(
    "--class-map",
    "class_map",
    default=None,
    callback=parse_class_map,
    help="Raw class (index or name) -> output class, e.g. 0=aircraft,11=helicopter (default: the taxonomy's "
    "dota_v1 table for DOTA models, else the model's own classes).",
)
@click.option(
    "--names",
    default=None,
    callback=parse_classes,
    help="The model's output class names in id order, e.g. aircraft,boat (default: the taxonomy's classes "
    "when the class map stays within them).",
)
@click.option("--end-to-end", is_flag=True, help="Export the NMS-free head (YOLO26 and similar).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch check (not recommended).")
def export(
    pt: str,
    out: str,
    imgsz: int | None,
    name: str,
    gsd: float | None,
    class_map: dict[int | str, str] | None,
    names: list[str] | None,
    end_to_end: bool,
    no_verify: bool,
) -> None:
    """Export an Ultralytics checkpoint PT to a self-describing, verified ONNX model."""
    if not out.lower().endswith(".onnx"):
        raise click.BadParameter(f"the output must end in .onnx, got {out!r}", param_hint="'-o' / '--out'")
    if not Path(pt).is_file():  # before torch is imported, which takes seconds
        raise CommandError(f"{pt}: file not found")
    exporter = import_training("training.export")
    path = exporter.export_onnx(
        pt,
        out,
        imgsz=imgsz,
        name=name,
        gsd=gsd,
        class_map=class_map,
        names=None if names is None else tuple(names),
        end_to_end=end_to_end,
        verify=not no_verify,
    )
    click.echo(f"wrote {path}")
