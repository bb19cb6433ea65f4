"""Where the package finds its own files: the config tables (``configs/``) and the shipped models (``weights/``).

A source checkout (or an editable install) reads them from the repository's ``configs/`` and ``weights/``
folders; an installed wheel carries the same files as package data (``detector/_configs``,
``detector/_weights``, mapped from those folders in ``pyproject.toml``). Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_ROOT = _PACKAGE.parent


def _first(candidates: list[Path]) -> Path:
    for p in candidates:
        if p.exists():
            return p
    return candidates[0]


def config_path(name: str) -> Path:
    """``configs/<name>`` of the checkout, else the copy inside the installed package (may not exist)."""
    return _first([_ROOT / "configs" / name, _PACKAGE / "_configs" / name])


def weights_path(name: str) -> Path:
    """``weights/<name>`` of the checkout, else the copy inside the installed package (may not exist)."""
    return _first([_ROOT / "weights" / name, _PACKAGE / "_weights" / name])


def repo_root() -> Path | None:
    """The source checkout holding the package, or ``None`` for an installed wheel."""
    return _ROOT if (_ROOT / "pyproject.toml").is_file() else None
