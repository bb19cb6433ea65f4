"""``detector quantize``: an fp32 ``.onnx`` model -> an INT8 ``.onnx`` calibrated on real training tiles."""

from __future__ import annotations

import click

from detector.cli.options import data_root_option
from detector.cli.train import import_training


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--calib",
    "calib",
    default=None,
    type=click.Path(dir_okay=False),
    help="Calibration config: sources, tile counts, method (default: configs/quantize.yaml).",
)
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="The INT8 .onnx file to write."
)
@click.option(
    "--method",
    type=click.Choice(["nncf", "onnxruntime"]),
    default=None,
    help="Quantiser (default: the config's): nncf.quantize or onnxruntime's quantize_static.",
)
@data_root_option("Data root of the calibration sources (default: $DETECTOR_SHARED_DATA or the config's).")
def quantize(model: str, calib: str | None, out: str, method: str | None, data_root: str | None) -> None:
    """Quantise MODEL (an .onnx made by `detector export`) to INT8, calibrated on training tiles."""
    if not out.lower().endswith(".onnx"):
        raise click.BadParameter(f"the output must end in .onnx, got {out!r}", param_hint="'-o' / '--out'")
    from detector.resources import config_path

    q = import_training("training.quantize")
    config = q.load_quantize_config(calib or config_path("quantize.yaml"), data_root)
    path = q.quantize_onnx(model, out, config, method=method)
    rec = q.quantization_record(path)
    cal = rec["calibration"]
    click.echo(
        f"wrote {path} (INT8, {rec['method']}, {cal['tiles']} calibration tiles from "
        f"{len(cal['sources'])} sources, from {rec['source_model']['file']} "
        f"sha256 {rec['source_model']['sha256'][:12]})"
    )
