"""Fine-tune a DOTA-trained YOLO checkpoint into our detector, with Ultralytics underneath.

The class list is the dataset's (``names`` of its data YAML, which ``detector data build`` writes from the
taxonomy file of the build, our 4 classes by default). The flow, top to bottom:

1. :func:`load_config`: YAML defaults -> ``key=value`` overrides -> a validated :class:`TrainConfig`.
2. :func:`build_model`: a detect (or OBB) model built from the checkpoint's own architecture with one output
   per class and every tensor copied from the checkpoint whose name and shape match. The OBB angle branch
   ``cv4`` is dropped for a detect model. The last conv of each class branch (``cv3``) gets the checkpoint's
   rows ``class_index``: by default (``"auto"``, :func:`auto_class_index`) the DOTA channel that the
   ``dota_v1`` table of the taxonomy maps to each class (DOTA plane, helicopter, small vehicle, large vehicle
   -> our 4 classes), so the pretrained class knowledge survives, helicopters included
   (:func:`remap_state_dict` is the pure part of this).
3. :func:`train`: an Ultralytics trainer with that model injected (nothing is rebuilt or downloaded), the
   overhead-imagery augmentations of :mod:`training.augment`, and the merged config dumped to
   ``<project>/<name>/config.yaml``. A run whose ``weights/last.pt`` exists is resumed.

Run ``python -m training.train configs/train/cpu.yaml [key=value ...]``; nested keys use dots
(``augment.rot90=0.5``), and any further Ultralytics train argument goes through ``ultralytics.<arg>=...``.
Set ``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` in the environment before starting (Ultralytics reads them at
import).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import yaml

from detector.taxonomy import Taxonomy, load_taxonomy, normalize_class
from training.augment import AugmentConfig, overhead_augmentations

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

#: ``class_index`` value that derives the head remap from the checkpoint's and the dataset's class names.
AUTO = "auto"

# The final 1x1 conv of a class branch: "model.22.cv3.0.2.weight" (v8) or "....one2one_cv3.1.2.bias" (YOLO26).
# Hidden layers of the branch end in ".conv.weight" / ".bn.*" and never match.
_CLASS_HEAD_KEY = re.compile(r"(^|\.)(one2one_)?cv3\.\d+\.\d+\.(weight|bias)$")


@dataclass
class TrainConfig:
    """One training run. Mirrored by the YAML files in ``configs/train/``; relative paths are from the CWD.

    Attributes:
        name: run name; the run lives in ``<project>/<name>``.
        data: Ultralytics dataset YAML (detect layout; its ``names`` are the model's classes, in id order, and
            must be classes of its ``taxonomy`` file, default the shipped ``configs/taxonomy.yaml``).
        weights: starting checkpoint (``.pt``) to remap, or a model YAML (e.g. ``yolov8n.yaml``) to train
            from scratch.
        task: ``"detect"`` (axis-aligned boxes) or ``"obb"`` (rotated boxes).
        class_index: the checkpoint's class channel for each class of the dataset (``names`` order; an entry
            ``null`` keeps that class freshly initialised); ``"auto"`` derives it (:func:`auto_class_index`);
            ``None`` copies the class head only where its shape already matches.
        project: folder holding the runs.
        imgsz: square training image size (a multiple of 32).
        batch: images per batch.
        epochs: epochs; with ``time`` set, only the schedule of the first epoch uses it.
        time: training budget in hours; overrides ``epochs`` (Ultralytics re-plans epochs and LR to fit).
        device: ``"cpu"``, ``"0"``, ``"0,1"``...
        workers: dataloader workers (Ultralytics uses 0 on the CPU regardless).
        cache: ``False``, ``"ram"`` or ``"disk"``.
        threads: torch CPU threads.
        seed: random seed.
        deterministic: use deterministic algorithms.
        optimizer: ``"SGD"``, ``"AdamW"``, ... (never ``"auto"``, which ignores ``lr0``).
        lr0: initial learning rate.
        lrf: final learning rate as a fraction of ``lr0``.
        momentum: SGD momentum / Adam beta1.
        weight_decay: weight decay.
        warmup_epochs: warm-up length in epochs (fractions allowed).
        cos_lr: cosine instead of linear LR decay.
        mosaic: mosaic probability.
        close_mosaic: turn mosaic off for the last N epochs.
        mixup: mixup probability.
        scale: random scale gain (+/-) of the affine.
        translate: random translation (fraction) of the affine.
        degrees: random rotation (+/- degrees) of the affine; 0 keeps axis-aligned boxes tight.
        fliplr: horizontal flip probability.
        flipud: vertical flip probability.
        hsv_h: Ultralytics' own hue gain (colour is mostly done in ``augment``).
        hsv_s: Ultralytics' own saturation gain.
        hsv_v: Ultralytics' own value gain.
        val: validate after every epoch; ``False`` validates only at the end.
        patience: early-stopping patience in epochs.
        save_period: also keep ``epochN.pt`` every N epochs (``last.pt`` is written every epoch anyway).
        resume: ``None`` resumes when ``weights/last.pt`` of the run exists, ``True`` requires it, ``False``
            refuses to overwrite an existing run.
        amp: mixed precision on CUDA: ``True`` (fp16; Ultralytics' numerics check is skipped, as it downloads a
            model: set ``False`` on GPUs with broken fp16 such as the GTX 16xx), ``"bf16"`` or ``False``.
        plots: write plots (needs a font that Ultralytics downloads when missing).
        augment: the overhead-imagery albumentations (see :class:`~training.augment.AugmentConfig`).
        ultralytics: any further Ultralytics train arguments, passed through as they are.
    """

    name: str = "run"
    data: str = "datasets/cpu/data.yaml"
    weights: str = "weights/pretrained/yolov8n-obb.pt"
    task: str = "detect"
    class_index: list[int | None] | str | None = AUTO
    project: str = "runs"
    imgsz: int = 640
    batch: int = 16
    epochs: int = 100
    time: float | None = None
    device: str = "cpu"
    workers: int = 2
    cache: bool | str = False
    threads: int = 2
    seed: int = 0
    deterministic: bool = True
    optimizer: str = "SGD"
    lr0: float = 0.005
    lrf: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    warmup_epochs: float = 1.0
    cos_lr: bool = False
    mosaic: float = 1.0
    close_mosaic: int = 2
    mixup: float = 0.0
    scale: float = 0.5
    translate: float = 0.1
    degrees: float = 0.0
    fliplr: float = 0.5
    flipud: float = 0.5
    hsv_h: float = 0.0
    hsv_s: float = 0.0
    hsv_v: float = 0.0
    val: bool = True
    patience: int = 100
    save_period: int = -1
    resume: bool | None = None
    amp: bool | str = False
    plots: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ultralytics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("detect", "obb"):
            raise ValueError(f"task must be 'detect' or 'obb', got {self.task!r}")
        if self.imgsz <= 0 or self.imgsz % 32:
            raise ValueError(f"imgsz must be a positive multiple of 32, got {self.imgsz!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch!r}")
        if self.time is not None and self.time <= 0:
            raise ValueError(f"time must be a positive number of hours or null, got {self.time!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if str(self.optimizer).lower() == "auto":
            raise ValueError("optimizer 'auto' ignores lr0 and momentum; name one (e.g. 'SGD' or 'AdamW')")
        if self.cache not in (False, True, "ram", "disk"):
            raise ValueError(f"cache must be false, 'ram' or 'disk', got {self.cache!r}")
        if isinstance(self.class_index, str):
            if self.class_index != AUTO:
                raise ValueError(
                    f"class_index must be {AUTO!r}, null or a list of source channels, got {self.class_index!r}"
                )
        elif self.class_index is not None:
            if not isinstance(self.class_index, (list, tuple)) or not all(
                i is None or (isinstance(i, int) and not isinstance(i, bool) and i >= 0)
                for i in self.class_index
            ):
                raise ValueError(
                    f"class_index must be {AUTO!r}, null or a list of source channels (>= 0 or null), "
                    f"got {self.class_index!r}"
                )
            self.class_index = list(self.class_index)
        if isinstance(self.augment, Mapping):
            self.augment = _build(AugmentConfig, dict(self.augment), "augment")
        if not isinstance(self.ultralytics, dict):
            raise ValueError(
                f"ultralytics must be a mapping of Ultralytics train arguments, got {self.ultralytics!r}"
            )
        clash = set(self.ultralytics) & {f.name for f in dataclasses.fields(self)}
        if clash:
            raise ValueError(f"set {sorted(clash)} as top-level keys, not under 'ultralytics'")

    @property
    def run_dir(self) -> Path:
        """``<project>/<name>``, absolute."""
        return (Path(self.project) / self.name).resolve()

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# --------------------------------------------------------------------------------------------------- config
def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn a YAML scalar into the annotated type where that is lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None or hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(value) in args:
            return value
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: cannot read {value!r} as {hint}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
    kwargs = {}
    for k, v in values.items():
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, Mapping):
            v = _build(hints[k], dict(v), f"{where}.{k}")
        elif k != "ultralytics":
            v = _coerce(v, hints[k], f"{where}: {k}")
        kwargs[k] = v
    return cls(**kwargs)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training config: YAML defaults, then ``key=value`` overrides.

    Args:
        path: YAML file with :class:`TrainConfig` keys (nested ``augment:`` and ``ultralytics:`` mappings
            allowed), or ``None`` for the dataclass defaults.
        overrides: ``key=value`` strings; values are parsed as YAML (``time=0.5``, ``cache=false``,
            ``class_index=[0,11,10,9]``); nested keys use dots (``augment.rot90=0.5``).

    Returns:
        The validated config.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ValueError: a malformed override, an unknown key or a bad value (the message names the file).
    """
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of TrainConfig keys, got {type(loaded).__name__}")
        values = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a mapping in {where}")
        node[leaf] = value
    try:
        return _build(TrainConfig, values, where)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


# ---------------------------------------------------------------------------------------------- head remap
@dataclass
class RemapReport:
    """What :func:`remap_state_dict` did, by destination (or, for ``dropped``, source) tensor name.

    Attributes:
        transferred: copied unchanged (same name and shape).
        remapped: class-branch output convs filled from the selected source rows.
        skipped: destination tensors left at their initial values (no source tensor of that name and shape).
        dropped: source tensors with no destination (e.g. the OBB angle branch ``cv4`` for a detect model).
    """

    transferred: list[str] = field(default_factory=list)
    remapped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One log line."""
        total = len(self.transferred) + len(self.remapped) + len(self.skipped)
        return (
            f"transferred {len(self.transferred) + len(self.remapped)}/{total} tensors "
            f"({len(self.remapped)} class rows remapped), {len(self.skipped)} left at init, "
            f"{len(self.dropped)} source tensors dropped"
        )


def remap_state_dict(
    src: Mapping[str, torch.Tensor],
    dst: Mapping[str, torch.Tensor],
    class_index: Sequence[int | None] | None,
) -> tuple[dict[str, torch.Tensor], RemapReport]:
    """Fill a new model's state dict from a pretrained one, choosing class rows of the class head.

    Pure: neither input is modified.

    Args:
        src: the pretrained state dict (e.g. the 15-class DOTA OBB model).
        dst: the freshly built model's state dict; it gives the names and shapes to fill.
        class_index: source output channel for each destination class. Applied to the last conv of every
            class branch (``cv3.<scale>.<last>`` and ``one2one_cv3``): ``dst[k] = src[k][class_index]``; a
            ``None`` entry keeps that destination row at its initial value. ``None`` treats those tensors
            like all others (copied only when the shapes match).

    Returns:
        The new state dict (every key of ``dst``) and a :class:`RemapReport`.

    Raises:
        ValueError: ``class_index`` names a channel outside the source class head, or its length differs
            from the destination's class count.
    """
    out: dict[str, torch.Tensor] = {}
    report = RemapReport()
    used: set[str] = set()
    for k, d in dst.items():
        s = src.get(k)
        if class_index is not None and _CLASS_HEAD_KEY.search(k) and s is not None:
            n_src, n_dst = s.shape[0], d.shape[0]
            if len(class_index) != n_dst:
                raise ValueError(f"{k}: class_index has {len(class_index)} entries for {n_dst} classes")
            bad = [i for i in class_index if i is not None and not 0 <= i < n_src]
            if bad:
                raise ValueError(f"{k}: class_index {bad} outside the {n_src} source classes")
            pick = [j for j, i in enumerate(class_index) if i is not None]
            if pick and s.shape[1:] == d.shape[1:]:
                rows = d.detach().clone()  # rows without a source channel keep their initial values
                rows[pick] = s[[class_index[j] for j in pick]].detach().to(d.dtype)
                out[k] = rows
                report.remapped.append(k)
                used.add(k)
                continue
        if s is not None and s.shape == d.shape:
            out[k] = s.detach().clone().to(d.dtype)
            report.transferred.append(k)
            used.add(k)
        else:
            out[k] = d.detach().clone()
            report.skipped.append(k)
    report.dropped = [k for k in src if k not in used]
    return out, report


def _target_cfg(src_yaml: dict[str, Any], task: str, nc: int) -> dict[str, Any]:
    """The source architecture with ``nc`` classes and, for ``task='detect'``, a plain Detect head."""
    import copy

    cfg = copy.deepcopy(src_yaml)
    cfg["nc"] = nc
    head = cfg["head"][-1]  # [from, repeats, module, args]
    module = str(head[2]).split(".")[-1]
    if task == "detect" and module != "Detect":
        if module not in ("OBB", "OBB26"):
            raise ValueError(f"cannot turn a {module!r} head into a detect head")
        cfg["head"][-1] = [head[0], head[1], "Detect", ["nc"]]
        if "yaml_file" in cfg:
            cfg["yaml_file"] = str(cfg["yaml_file"]).replace("-obb", "")
    elif task == "obb" and module not in ("OBB", "OBB26"):
        raise ValueError(f"task 'obb' needs an OBB checkpoint, this one has a {module!r} head")
    return cfg


def auto_class_index(
    source_names: Sequence[str], names: Sequence[str], taxonomy: Taxonomy | None = None
) -> list[int | None] | None:
    """The source channel that starts each class of ``names`` when fine-tuning a checkpoint.

    A DOTA v1.0 checkpoint: the ``dota_v1`` table of ``taxonomy`` (default: the shipped one), see
    :meth:`~detector.taxonomy.Taxonomy.source_channels`. Any other checkpoint: the channel of the same class
    name. ``None`` entries (no source class) start fresh; ``None`` when no class has a source channel.
    """
    tax = taxonomy if taxonomy is not None else load_taxonomy()
    if tax.is_dota_v1(source_names):
        index = tax.source_channels(names)
    else:
        src = [normalize_class(n) for n in source_names]
        index = [src.index(normalize_class(n)) if normalize_class(n) in src else None for n in names]
    return index if any(i is not None for i in index) else None


def build_model(
    weights: str | Path,
    *,
    task: str = "detect",
    class_index: Sequence[int | None] | str | None = AUTO,
    names: Sequence[str] | None = None,
    taxonomy: Taxonomy | None = None,
    verbose: bool = False,
) -> tuple[nn.Module, RemapReport]:
    """Build a ``len(names)``-class model from a pretrained checkpoint (or a model YAML, from scratch).

    Args:
        weights: a ``.pt`` checkpoint (its architecture is kept; an OBB head becomes a Detect head when
            ``task='detect'``), or a model YAML such as ``yolov8n.yaml`` for random initialisation.
        task: ``"detect"`` or ``"obb"``.
        class_index: source class channel per output class (see :func:`remap_state_dict`), or ``"auto"``
            (:func:`auto_class_index` from the checkpoint's class names).
        names: output class names (default: the classes of ``taxonomy``).
        taxonomy: the class table whose ``dota_v1`` table the automatic remap uses (default: the shipped one).
        verbose: let Ultralytics print the model summary.

    Returns:
        The model (train mode, float32, CPU) and the :class:`RemapReport` (empty for a YAML).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the checkpoint cannot serve ``task``, or ``class_index`` does not fit it.
    """
    from ultralytics.nn.tasks import DetectionModel, OBBModel, load_checkpoint

    from detector.backends.torch import check_checkpoint

    model_cls = DetectionModel if task == "detect" else OBBModel
    tax = taxonomy if taxonomy is not None else load_taxonomy()
    names = tuple(names) if names is not None else tax.classes
    nc = len(names)
    path = Path(weights)
    if path.suffix in (".yaml", ".yml"):
        model = model_cls(str(weights), nc=nc, verbose=verbose)
        report = RemapReport(skipped=list(model.state_dict()))
    else:
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights {path} do not exist (run `make setup`)")
        check_checkpoint(path)  # untrusted file: refuse arbitrary code before Ultralytics unpickles it
        src, _ = load_checkpoint(path)
        try:
            cfg = _target_cfg(src.yaml, task, nc)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        model = model_cls(cfg, nc=nc, verbose=verbose)
        if isinstance(class_index, str):  # AUTO (TrainConfig checks the value)
            src_names = src.names.values() if isinstance(src.names, dict) else src.names
            class_index = auto_class_index([str(n) for n in src_names], names, tax)
            logger.info("%s: class head rows %s for %s", path.name, class_index, list(names))
        try:
            state, report = remap_state_dict(src.state_dict(), model.state_dict(), class_index)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        model.load_state_dict(state)
        model.pt_path = str(path)
        logger.info("%s -> %d-class %s model: %s", path.name, nc, task, report.summary())
    model.names = dict(enumerate(names))
    model.nc = nc
    return model.float().train(), report


# --------------------------------------------------------------------------------------------------- train
def _ultralytics_args(cfg: TrainConfig, resume_from: Path | None) -> dict[str, Any]:
    own = (
        "imgsz batch epochs time device workers cache seed deterministic optimizer lr0 lrf momentum "
        "weight_decay warmup_epochs cos_lr mosaic close_mosaic mixup scale translate degrees fliplr flipud "
        "hsv_h hsv_s hsv_v val patience save_period amp plots"
    ).split()
    args: dict[str, Any] = {k: getattr(cfg, k) for k in own}
    args.update(
        model=str(Path(cfg.weights).resolve()) if Path(cfg.weights).suffix == ".pt" else cfg.weights,
        data=str(Path(cfg.data).resolve()),
        task=cfg.task,
        mode="train",
        name=cfg.name,
        save_dir=str(cfg.run_dir),
        exist_ok=True,
        resume=str(resume_from) if resume_from else False,
        augmentations=overhead_augmentations(cfg.augment),
        verbose=True,
    )
    args.update(cfg.ultralytics)
    return args


def _amp_without_download(model: nn.Module, *args: Any, **kwargs: Any) -> bool:
    """Stand-in for Ultralytics' ``check_amp``: AMP on CUDA only, without its download-and-compare test."""
    return next(model.parameters()).device.type == "cuda"


def _finished(last: Path) -> bool:
    """Ultralytics marks a completed run by stripping ``last.pt`` (``epoch == -1``)."""
    import torch

    from detector.backends.torch import check_checkpoint

    check_checkpoint(last)  # refuse arbitrary code before the full unpickle Ultralytics' resume needs
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return ckpt.get("epoch", -1) == -1


def dataset_classes(data: str | Path) -> tuple[tuple[str, ...], Taxonomy]:
    """The class names of a dataset YAML (in id order) and the taxonomy they come from.

    The taxonomy is the file named by the YAML's ``taxonomy`` key (``detector data build`` writes it), else the
    shipped ``configs/taxonomy.yaml``; every name must be one of its classes.

    Raises:
        ValueError: the YAML has no ``names``, or a name is not a class of the taxonomy (the message names both
            files).
        TaxonomyError: the taxonomy file is missing or malformed.
    """
    d = yaml.safe_load(Path(data).read_text()) or {}
    raw = d.get("names") if isinstance(d, dict) else None
    if isinstance(raw, dict):
        names = tuple(str(raw[k]) for k in sorted(raw))
    elif isinstance(raw, list):
        names = tuple(str(n) for n in raw)
    else:
        raise ValueError(f"{data}: expected `names` (class id -> name), got {raw!r}")
    tax = load_taxonomy(d.get("taxonomy"))
    bad = [n for n in names if n not in tax.classes]
    if bad:
        raise ValueError(
            f"{data}: names must be classes of {tax.path} ({list(tax.classes)}), got {list(bad)}; name the "
            "class table of another class list under `taxonomy:` in the dataset YAML"
        )
    return names, tax


def train(cfg: TrainConfig, callbacks: Mapping[str, Sequence[Callable[[Any], None]]] | None = None) -> Path:
    """Train (or resume) the run described by ``cfg``.

    Args:
        cfg: the run.
        callbacks: extra Ultralytics callbacks, event name -> functions taking the trainer.

    Returns:
        Path to the best weights, ``<project>/<name>/weights/best.pt`` (``last.pt`` when no best exists).

    Raises:
        FileNotFoundError: the dataset YAML or the weights are missing, or ``resume=True`` without a
            ``last.pt``.
        FileExistsError: ``resume=False`` and the run already has checkpoints.
    """
    import torch

    data = Path(cfg.data)
    if not data.is_file():
        raise FileNotFoundError(f"dataset YAML {data} does not exist (build it with `detector data build`)")
    run_dir = cfg.run_dir
    last, best = run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"
    if cfg.resume is True and not last.is_file():
        raise FileNotFoundError(f"resume=true but {last} does not exist")
    if cfg.resume is False and last.is_file():
        raise FileExistsError(f"{run_dir} already holds a run; pick another name or set resume=true")
    resume_from = last if last.is_file() and cfg.resume is not False else None
    if resume_from is not None and _finished(resume_from):
        logger.info("%s is already complete; nothing to resume", run_dir)
        return best if best.is_file() else last

    torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    logger.info("run %s (%s); config dumped to %s", cfg.name, "resuming" if resume_from else "new", run_dir)

    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.models.yolo.obb import OBBTrainer

    trainer_cls = DetectionTrainer if cfg.task == "detect" else OBBTrainer
    with ExitStack() as stack:
        # check_det_dataset() fetches Arial.ttf for plots even when YOLO_OFFLINE is set; we never plot.
        stack.enter_context(mock.patch("ultralytics.data.utils.check_font", lambda *a, **k: None))
        # check_amp() downloads yolo26n.pt to compare fp16 with fp32 outputs; with amp on we trust the config.
        stack.enter_context(mock.patch("ultralytics.engine.trainer.check_amp", _amp_without_download))
        trainer = trainer_cls(overrides=_ultralytics_args(cfg, resume_from))

        def set_threads(_: Any) -> None:  # select_device() resets torch threads to cpu_count - 1
            torch.set_num_threads(cfg.threads)

        set_threads(None)
        trainer.add_callback("on_val_start", set_threads)
        for event, funcs in (callbacks or {}).items():
            for f in funcs:
                trainer.add_callback(event, f)
        if resume_from is None:
            names, tax = dataset_classes(data)
            model, _ = build_model(
                cfg.weights, task=cfg.task, class_index=cfg.class_index, names=names, taxonomy=tax
            )
            trainer.model = model  # setup_model() keeps an injected module: no rebuild, no download
        trainer.train()
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    logger.info("final metrics (%s): %s", best.name, metrics)
    return best if best.is_file() else last


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.train CONFIG.yaml [key=value ...]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m training.train CONFIG.yaml [key=value ...]  (see training/train.py)")
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(argv[0], argv[1:])
    best = train(cfg)
    print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
