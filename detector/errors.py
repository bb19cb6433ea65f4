"""One exception hierarchy for the package, in the style of ``rasterio.errors``.

Everything the package raises on purpose derives from :class:`DetectorError`, so a caller (and the CLI)
catches one root. Errors about files that cannot be read or written are also :class:`OSError`, as
rasterio's ``RasterioIOError`` is; errors about bad values are also :class:`ValueError`. Messages name the
file (and line, for label files) and the problem in one line.
"""

from __future__ import annotations


class DetectorError(Exception):
    """The root of every error this package raises on purpose."""


class DetectorIOError(DetectorError, OSError):
    """A file cannot be read or written (also an ``OSError``)."""


class RasterError(DetectorIOError):
    """A scene cannot be opened or read: the message names the file and the problem."""


class WriteError(DetectorIOError):
    """An output file cannot be written: the message names the path and the reason."""


class OutputExistsError(WriteError, FileExistsError):
    """An output file exists and overwriting was not asked for (``--overwrite``): the message names it."""


class ModelError(DetectorError):
    """A model file cannot be used: missing, corrupt, unsafe, or its metadata does not match its outputs."""


class LabelError(DetectorError, ValueError):
    """A label file cannot be read: the message names the file (and line) and the problem."""


class TaxonomyError(DetectorError, ValueError):
    """A class name has no mapping in the taxonomy, or the taxonomy file itself is malformed."""


class BuildError(DetectorError, ValueError):
    """A training dataset cannot be built from its config."""


class ConfigError(DetectorError, ValueError):
    """A YAML config (data, train, eval, rules) is malformed: the message names the file and the key."""


class ChangeError(DetectorError):
    """Two dates cannot be compared (no overlap, CRSs that do not transform, no georeferencing, ...)."""


class CommandError(DetectorError):
    """A failure of a command that is not a usage error (printed as one ``error:`` line, exit status 1)."""


class ResolutionError(DetectorError):
    """A scene's ground sample distance is far outside the range the model was trained for (refused unless
    forced): the message names the scene, its GSD and the model's range."""


__all__ = [
    "BuildError",
    "ChangeError",
    "CommandError",
    "ConfigError",
    "DetectorError",
    "DetectorIOError",
    "LabelError",
    "ModelError",
    "OutputExistsError",
    "RasterError",
    "ResolutionError",
    "TaxonomyError",
    "WriteError",
]
