"""Open a scene and read it window by window: band choice, radiometry, nodata and ground sample distance.

A :class:`Scene` wraps one raster that GDAL can read (GeoTIFF, COG, JPEG, PNG, JPEG 2000, ...), an open
rasterio dataset, a PIL image or an in-memory numpy image (:func:`open_scene` takes any of them).
:meth:`Scene.read` returns one window as the model sees it:

* ``rgb``: ``uint8`` array ``(rows, cols, 3)``, RGB channel order, values 0-255, after the scene's
  :class:`Stretch` (8-bit data passes unchanged; 16-bit and float data go through one per-scene percentile
  stretch computed once when the scene is opened, never per tile and never by dividing by 255).
* ``valid``: ``bool`` array ``(rows, cols)``, False where the pixel is nodata, masked (alpha band, internal
  mask), not finite, or outside the scene (windows may pass the scene edge: the outside is padded with
  :data:`PAD_VALUE` gray, as Ultralytics letterboxes, so a partial tile looks like what the model trained on).

The whole scene is never read at full resolution: the stretch comes from the overviews or from a decimated
read of at most about one megapixel.

Files are read strictly: a file that does not decode to its end (truncated, corrupt) is a :class:`RasterError`
naming it when it is opened, never noise. GDAL's whole-image PNG fast path returns data for the missing rows
of a truncated PNG without an error, so :func:`open_scene` checks that the last row of blocks decodes (for
every format but PNG) and, for PNG, every chunk's checksum through the end marker (PIL's ``verify()``, which
reads the compressed bytes once without decoding them: a last-row read would decode the whole PNG).
"""

from __future__ import annotations

import logging
import math
import struct
import sys
import warnings
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReaderBase, MemoryFile
from rasterio.windows import Window

from detector.errors import RasterError  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

logger = logging.getLogger(__name__)

#: Percentiles of the per-band stretch for data that is not 8-bit.
STRETCH_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: Pixel budget of the decimated read that the stretch is computed from.
SAMPLE_PIXELS = 1_000_000
#: Rasters with more pixels than this, stored in strips, get a warning about slow windowed reads.
STRIPED_WARN_PIXELS = 8192 * 8192
#: RGB value of the padding outside the scene (partial tiles, small scenes): Ultralytics' letterbox gray.
PAD_VALUE = 114
#: an 8-bit RGB raster stored in strips (PNG, JPEG, a striped TIFF) of at most this many decoded bytes is decoded
#: once, whole, on its first read, and its windows are cut from memory: GDAL walks the strips again for every
#: window (a 2560 px PNG, 16 tiles of 736 px: 0.20 s of windowed reads against 0.065 s for the whole image)
WHOLE_READ_BYTES = 128 * 2**20

_ARRAY_NAME = "<array>"
_PIL_NAME = "<PIL image>"
#: An image array holds at most this many channels (RGB + alpha), on its first or its last axis.
MAX_ARRAY_CHANNELS = 4
#: An image array is more than this many pixels on each side (so that its channel axis is never in doubt).
MIN_ARRAY_SIDE = 4

#: What :func:`open_scene` (and :meth:`detector.pipeline.Detector.predict`) reads: a file name, an open rasterio
#: dataset, a PIL image or a numpy array.
SceneSource: TypeAlias = "str | Path | DatasetReaderBase | PILImage | np.ndarray"


@dataclass(frozen=True)
class Stretch:
    """Per-channel linear stretch ``low -> 0``, ``high -> 255`` (clipped), to ``uint8``.

    ``low``/``high`` are ``None`` for the identity (8-bit data, passed through unchanged).
    """

    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @property
    def is_identity(self) -> bool:
        return self.low is None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``(3, rows, cols)`` band data of any real dtype -> ``(rows, cols, 3)`` uint8 RGB."""
        if self.low is None or self.high is None:
            return np.ascontiguousarray(np.moveaxis(data, 0, -1)).astype(np.uint8, copy=False)
        low = self.low.astype(np.float32)[:, None, None]
        scale = (255.0 / np.maximum(self.high - self.low, 1e-12)).astype(np.float32)[:, None, None]
        out = (data.astype(np.float32) - low) * scale
        out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
        return np.moveaxis(np.clip(out + 0.5, 0, 255).astype(np.uint8), 0, -1).copy()

    @classmethod
    def from_sample(cls, sample: np.ndarray, valid: np.ndarray, dtype: str) -> Stretch:
        """The stretch for ``sample`` ``(C, rows, cols)`` with validity ``(rows, cols)`` of ``dtype``."""
        if np.dtype(dtype) == np.uint8:
            return cls()
        lows, highs = [], []
        for band in sample:
            values = band[valid & np.isfinite(band)]
            if values.size == 0:
                lows.append(0.0)
                highs.append(1.0)
                continue
            lo, hi = np.percentile(values.astype(np.float64), STRETCH_PERCENTILES)
            lows.append(float(lo))
            highs.append(float(hi) if hi > lo else float(lo) + 1.0)
        return cls(np.asarray(lows), np.asarray(highs))


class Scene:
    """One open raster, read window by window. Use :func:`open_scene` (or :meth:`from_array`,
    :meth:`from_pil`, :meth:`from_dataset`).

    Attributes:
        path: the file name (``"<array>"``, ``"<PIL image>"`` for in-memory images; the dataset's name for an
            open rasterio dataset), used in every error message.
        width, height: scene size in pixels (columns, rows).
        count: number of bands in the file.
        dtype: numpy dtype name of the bands that are read.
        bands: the 1-based band indexes read as ``(red, green, blue)``.
        crs: ``rasterio.crs.CRS`` or ``None``.
        transform: affine pixel -> CRS transform of the full-resolution scene, or ``None`` when the image
            carries no georeferencing (a geotransform without a CRS is kept, with a warning: outputs are
            then in pixels and the GSD is unknown unless given).
        gsd: ground sample distance in metres per pixel, or ``None`` when unknown.
        stretch: the per-scene :class:`Stretch` applied in :meth:`read`.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        path: str,
        bands: tuple[int, ...] | None = None,
        gsd: float | None = None,
        memfile: MemoryFile | None = None,
        owns_dataset: bool = True,
    ) -> None:
        self._ds = dataset
        self._memfile = memfile
        self._owns_dataset = owns_dataset
        self.path = path
        self.width: int = dataset.width
        self.height: int = dataset.height
        block_rows, block_cols = dataset.block_shapes[0]
        #: ``(rows, cols)`` of the file's blocks (a strip is one block of the full width)
        self.block_shape: tuple[int, int] = (int(block_rows), int(block_cols))
        self._striped = self.block_shape[1] >= self.width
        self.count: int = dataset.count
        if self.width <= 0 or self.height <= 0 or self.count <= 0:
            raise RasterError(f"{path}: empty scene ({self.width}x{self.height} px, {self.count} bands)")
        self.bands = _choose_bands(dataset, path, bands)
        self._unique = tuple(dict.fromkeys(self.bands))
        self._pick = [self._unique.index(b) for b in self.bands]
        dtypes = {dataset.dtypes[b - 1] for b in self._unique}
        for dt in dtypes:
            if np.dtype(dt).kind not in "uif":
                raise RasterError(f"{path}: unsupported data type {dt} (need integer or real-valued bands)")
        self.dtype: str = str(np.result_type(*dtypes))
        self._float = np.dtype(self.dtype).kind == "f"
        self._lut = _palette(dataset, path, self.bands)
        self._masked = any(dataset.mask_flag_enums[b - 1] != [MaskFlags.all_valid] for b in self._unique)
        self.crs = dataset.crs
        self.transform: Affine | None = _transform_of(dataset)
        georeferenced = self.transform is not None
        if not georeferenced and (dataset.gcps[0] or dataset.rpcs):
            logger.warning(
                "%s has GCPs/RPCs but no geotransform: outputs stay in pixel coordinates "
                "(orthorectify first, e.g. gdalwarp -rpc or -tps)",
                path,
            )
        elif georeferenced and dataset.crs is None:
            logger.warning(
                "%s has a geotransform but no CRS: outputs stay in image pixels%s "
                "(assign the CRS, e.g. gdal_edit -a_srs EPSG:32633 FILE)",
                path,
                ", the GSD is unknown unless given (--gsd)" if gsd is None else "",
            )
        if gsd is not None and (isinstance(gsd, bool) or not isinstance(gsd, Real) or not 0 < gsd < math.inf):
            raise ValueError(f"gsd must be a positive number of metres per pixel, got {gsd!r}")
        self.gsd: float | None = (
            float(gsd)
            if gsd is not None
            else _gsd_from_georeferencing(self.crs, self.transform, self.width, self.height)
        )
        self._warn_if_striped()
        if memfile is None:  # an array copied into memory by from_array decodes by construction
            self._check_decodes()
        self.stretch = self._compute_stretch()
        #: 8-bit RGB read as it is: GDAL writes it straight into the (rows, cols, 3) tile (no band-first copy,
        #: no transpose; half the read time of a 640 px tile)
        self._direct = (
            self._lut is None
            and self.stretch.is_identity
            and np.dtype(self.dtype) == np.uint8
            and self._pick == [0, 1, 2]
        )
        #: decode the whole image once (:data:`WHOLE_READ_BYTES`); ``_whole`` / ``_whole_valid`` hold it
        self._read_whole = self._direct and self._striped and self.width * self.height * 3 <= WHOLE_READ_BYTES
        self._whole: np.ndarray | None = None
        self._whole_valid: np.ndarray | None = None

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        gsd: float | None = None,
        bands: tuple[int, ...] | None = None,
        *,
        name: str = _ARRAY_NAME,
    ) -> Scene:
        """An in-memory image as a scene without georeferencing.

        The channel axis is found by one rule, so that an array is never read with its axes swapped:

        * ``(rows, cols)``: one gray band.
        * ``(rows, cols, channels)`` (band-last, what PIL and OpenCV give) with 1 to 4 channels.
        * ``(channels, rows, cols)`` (band-first, what ``rasterio``'s ``read()`` gives) with 1 to 4 channels:
          transposed to band-last.

        ``rows`` and ``cols`` must both exceed 4 pixels; any other shape, ``(3, 3, 3)`` or ``(3, 100, 3)``
        say, cannot be told apart and is a :class:`RasterError` (so is an array of more than 4 channels: pick
        the bands first, e.g. ``array[..., [3, 2, 1]]``). Channels are RGB (RGBA: the 4th channel is alpha);
        8-bit data passes unchanged, other integer and float data are stretched like a file. The array is
        copied into an in-memory GeoTIFF.

        Args:
            array: the image.
            gsd: ground sample distance in metres per pixel, if known.
            bands: 1-based channel indexes read as ``(red, green, blue)`` (see :func:`open_scene`).
            name: the name error messages give the image.

        Raises:
            RasterError: empty array, unsupported data type, or a shape outside the rule above.
        """
        arr = _band_last(np.asarray(array), name)
        rows, cols, channels = arr.shape
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        memfile = MemoryFile()
        profile = dict(driver="GTiff", width=cols, height=rows, count=channels, dtype=arr.dtype.name)
        if rows >= 512 and cols >= 512:
            profile.update(tiled=True, blockxsize=512, blockysize=512)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with memfile.open(**profile) as dst:
                dst.write(np.moveaxis(arr, -1, 0))
                if channels in (3, 4):
                    dst.colorinterp = [
                        ColorInterp.red,
                        ColorInterp.green,
                        ColorInterp.blue,
                        ColorInterp.alpha,
                    ][:channels]
            dataset = memfile.open()
        try:
            return cls(dataset, path=name, bands=bands, gsd=gsd, memfile=memfile)
        except Exception:
            dataset.close()
            memfile.close()
            raise

    @classmethod
    def from_pil(
        cls, image: PILImage, gsd: float | None = None, bands: tuple[int, ...] | None = None
    ) -> Scene:
        """A PIL image as a scene without georeferencing, through :meth:`from_array`.

        Gray (``L``), 16- and 32-bit gray (``I;16``, ``I``, ``F``), ``RGB`` and ``RGBA`` keep their values;
        every other mode is converted to ``RGB`` (``RGBA`` when it has transparency, which becomes the
        validity mask). The pixels are decoded here: a truncated or corrupt image is a :class:`RasterError`.
        """
        filename = getattr(image, "filename", "")  # set by Image.open
        name = f"<PIL image {filename}>" if filename else _PIL_NAME
        try:
            if image.mode in ("RGB", "RGBA", "L", "I;16", "I", "F"):
                array = np.asarray(image)
            elif image.mode in ("LA", "PA") or "transparency" in image.info:
                array = np.asarray(image.convert("RGBA"))
            else:
                array = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:
            raise RasterError(f"{name}: cannot decode the image, it may be truncated or corrupt ({e})") from e
        return cls.from_array(array, gsd=gsd, bands=bands, name=name)

    @classmethod
    def from_dataset(
        cls, dataset: DatasetReaderBase, gsd: float | None = None, bands: tuple[int, ...] | None = None
    ) -> Scene:
        """Wrap an open rasterio dataset; its CRS, transform, nodata and masks are kept as in a file.

        The dataset stays the caller's: :meth:`close` leaves it open. It must not be read from another
        thread while the scene is in use.

        Raises:
            RasterError: the dataset is closed or was opened for writing only, or as :func:`open_scene`.
        """
        name = str(getattr(dataset, "name", "") or "<dataset>")
        if dataset.closed:
            raise RasterError(f"{name}: the rasterio dataset is closed")
        if dataset.mode not in ("r", "r+"):
            raise RasterError(
                f"{name}: the rasterio dataset is open in mode {dataset.mode!r}, not for reading"
            )
        return cls(dataset, path=name, bands=bands, gsd=gsd, owns_dataset=False)

    # -- reading ------------------------------------------------------------------------------------

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read one window as ``(rgb uint8 (rows, cols, 3), valid bool (rows, cols))``.

        Args:
            window: the window in scene pixels; it may pass the scene edge (the outside is :data:`PAD_VALUE`
                gray and invalid).
            out_shape: ``(rows, cols)`` of the result; when it differs from the window size the window is
                resampled (average when shrinking, bilinear when enlarging).
        """
        win = Window(window.col_off, window.row_off, window.width, window.height)
        if out_shape is None:
            out_shape = (int(round(win.height)), int(round(win.width)))
        rows, cols = int(out_shape[0]), int(out_shape[1])
        rgb = np.full((rows, cols, 3), PAD_VALUE, np.uint8)
        valid = np.zeros((rows, cols), bool)
        if rows <= 0 or cols <= 0 or win.width <= 0 or win.height <= 0:
            return rgb, valid
        sx, sy = win.width / cols, win.height / rows
        x0, y0 = max(win.col_off, 0), max(win.row_off, 0)
        x1, y1 = min(win.col_off + win.width, self.width), min(win.row_off + win.height, self.height)
        if x1 <= x0 or y1 <= y0:
            return rgb, valid
        # where the part inside the scene lands in the output
        c0, c1 = round((x0 - win.col_off) / sx), round((x1 - win.col_off) / sx)
        r0, r1 = round((y0 - win.row_off) / sy), round((y1 - win.row_off) / sy)
        c0, c1, r0, r1 = max(c0, 0), min(c1, cols), max(r0, 0), min(r1, rows)
        if c1 <= c0 or r1 <= r0:
            return rgb, valid
        inner = Window(x0, y0, x1 - x0, y1 - y0)
        shape = (r1 - r0, c1 - c0)
        if shape != (round(inner.height), round(inner.width)):
            shrink = sx > 1 or sy > 1
            resampling = Resampling.average if shrink else Resampling.bilinear
            if (
                self._read_whole
                and shrink
                and _whole_pixels(inner.col_off, inner.row_off, inner.width, inner.height)
            ):
                return self._shrink_whole(inner, rgb, valid, (r0, r1, c0, c1))
        elif self._read_whole and _whole_pixels(inner.col_off, inner.row_off):
            return self._cut_whole(inner, rgb, valid, (r0, r1, c0, c1))
        else:
            resampling = Resampling.nearest  # the same size: a plain read
        try:
            if self._masked:
                masks = self._ds.read_masks(self._unique, window=inner, out_shape=(len(self._unique), *shape))
                ok = (masks > 0).any(axis=0)
                if not ok.any():
                    rgb[r0:r1, c0:c1] = 0  # nodata inside the scene stays black; only the outside is padding
                    return rgb, valid
            else:
                ok = np.ones(shape, bool)
            if self._direct:
                part = rgb[r0:r1, c0:c1]
                self._ds.read(self._unique, window=inner, out=part.transpose(2, 0, 1), resampling=resampling)
                if self._masked:
                    part[~ok] = 0
                valid[r0:r1, c0:c1] = ok
                return rgb, valid
            data = self._ds.read(
                self._unique, window=inner, out_shape=(len(self._unique), *shape), resampling=resampling
            )
        except RasterioError as e:
            raise RasterError(f"{self.path}: cannot read window {_fmt(win)} ({_gdal_message(e)})") from e
        if self._float:
            ok &= np.isfinite(data).all(axis=0)
        if self._lut is not None:
            part = self._lut[data[0].astype(np.intp)]
        else:
            part = self.stretch.apply(data[self._pick])
        part[~ok] = 0
        rgb[r0:r1, c0:c1] = part
        valid[r0:r1, c0:c1] = ok
        return rgb, valid

    def _cut_whole(
        self, inner: Window, rgb: np.ndarray, valid: np.ndarray, at: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read` of a window at whole pixels without resampling, cut from the image decoded once."""
        r0, r1, c0, c1 = at
        part, ok = self._whole_window(inner, r1 - r0, c1 - c0)
        return _paste(part, ok, rgb, valid, at)

    def _shrink_whole(
        self,
        inner: Window,
        rgb: np.ndarray,
        valid: np.ndarray,
        at: tuple[int, int, int, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read` of a window at whole pixels made smaller, from the image decoded once, averaged by PIL's
        box filter: GDAL's own averaged read of a PNG or JPEG is slower than decoding it whole and resizing (a
        2560 px PNG to 2048 px, the quicklook's read: 0.36 s against 0.22 s, medians of 4)."""
        from PIL import Image

        r0, r1, c0, c1 = at
        size = (c1 - c0, r1 - r0)
        whole, whole_ok = self._whole_window(inner, int(inner.height), int(inner.width))
        part = np.asarray(Image.fromarray(whole).resize(size, Image.Resampling.BOX))
        ok = None
        if whole_ok is not None:
            ok = np.asarray(Image.fromarray(whole_ok).resize(size, Image.Resampling.NEAREST))
        return _paste(part, ok, rgb, valid, at)

    def _whole_window(self, inner: Window, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``rows`` x ``cols`` pixels from ``inner``'s whole-pixel corner of the image decoded once (decoded on
        the first call), and their valid pixels (``None``: all valid)."""
        if self._whole is None:
            self._whole, self._whole_valid = self._decode_whole()
        y, x = int(inner.row_off), int(inner.col_off)
        part = self._whole[y : y + rows, x : x + cols]
        ok = None if self._whole_valid is None else self._whole_valid[y : y + rows, x : x + cols]
        return part, ok

    def _decode_whole(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole image as ``(rows, cols, 3)`` uint8 and its valid pixels (``None``: all valid)."""
        whole = np.empty((self.height, self.width, 3), np.uint8)
        try:
            self._ds.read(self._unique, out=whole.transpose(2, 0, 1))
            ok = (self._ds.read_masks(self._unique) > 0).any(axis=0) if self._masked else None
        except RasterioError as e:
            raise RasterError(f"{self.path}: cannot read the image ({_gdal_message(e)})") from e
        return whole, ok

    # -- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying dataset (not one passed to :meth:`from_dataset`) and the in-memory file of
        :meth:`from_array`."""
        self._whole = self._whole_valid = None
        if self._owns_dataset:
            self._ds.close()
        if self._memfile is not None:
            self._memfile.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        gsd = f"{self.gsd:.3g} m" if self.gsd else "unknown"
        return (
            f"Scene({self.path!r}, {self.width}x{self.height} px, bands {self.bands}, {self.dtype}, "
            f"crs {self.crs}, gsd {gsd})"
        )

    # -- helpers ------------------------------------------------------------------------------------

    def _compute_stretch(self) -> Stretch:
        """Sample the scene once (about a megapixel) for the stretch and the all-nodata check.

        From the overviews (or the whole image when it is small) with a decimated read; a large file without
        overviews is sampled with a grid of small full-resolution windows instead, because a decimated read
        would decompress every block of the file (many times over, for GDAL's nearest-neighbour path).
        """
        if self._lut is None and not self._masked and not self._float and np.dtype(self.dtype) == np.uint8:
            # 8-bit and no mask: the stretch is the identity and every pixel is valid, nothing to sample (a
            # decimated read of a PNG or JPEG would decode the whole file once more)
            return Stretch()
        has_overviews = bool(self._ds.overviews(self._unique[0]))
        small = self.width * self.height <= 4 * SAMPLE_PIXELS
        sample, valid = self._read_sample(decimated=has_overviews or small)
        if not valid.any() and not (has_overviews or small):
            sample, valid = self._read_sample(decimated=True)  # a small valid area the grid missed?
        if not valid.any():
            raise RasterError(
                f"{self.path}: every pixel is nodata or masked (in a sample of {valid.size} pixels)"
            )
        if self._lut is not None:
            return Stretch()
        stretch = Stretch.from_sample(sample[self._pick], valid, self.dtype)
        if not stretch.is_identity:
            logger.debug("%s: %s stretch low %s high %s", self.path, self.dtype, stretch.low, stretch.high)
        return stretch

    def _read_sample(self, decimated: bool) -> tuple[np.ndarray, np.ndarray]:
        """Sample values ``(C, n)`` of the read bands and their validity ``(n,)``."""
        if decimated:
            factor = max(1.0, math.sqrt(self.width * self.height / SAMPLE_PIXELS))
            shape = (max(1, int(self.height / factor)), max(1, int(self.width / factor)))
            reads = [(Window(0, 0, self.width, self.height), shape)]
        else:  # an 8 x 8 grid of 128 px windows, aligned to the blocks so each decodes few of them
            block_rows, block_cols = self.block_shape
            rows, cols = min(128, self.height), min(128, self.width)
            reads = []
            for i in range(8):
                for j in range(8):
                    col = int((j + 0.5) * self.width / 8)
                    row = int((i + 0.5) * self.height / 8)
                    col = min(col - col % block_cols if block_cols >= cols else col, self.width - cols)
                    row = min(row - row % block_rows if block_rows >= rows else row, self.height - rows)
                    reads.append((Window(col, row, cols, rows), (rows, cols)))
        values, valid = [], []
        try:
            for window, shape in reads:
                data = self._ds.read(self._unique, window=window, out_shape=(len(self._unique), *shape))
                ok = np.ones(shape, bool)
                if self._masked:
                    masks = self._ds.read_masks(
                        self._unique, window=window, out_shape=(len(self._unique), *shape)
                    )
                    ok = (masks > 0).any(axis=0)
                if self._float:
                    ok &= np.isfinite(data).all(axis=0)
                values.append(data.reshape(len(self._unique), -1))
                valid.append(ok.reshape(-1))
        except RasterioError as e:
            raise RasterError(
                f"{self.path}: cannot read the image data, the file may be truncated or corrupt "
                f"({_gdal_message(e)})"
            ) from e
        return np.concatenate(values, axis=1)[:, :, None], np.concatenate(valid)[:, None]

    def _check_decodes(self) -> None:
        """Fail now, naming the file, when it does not decode to its end (see the module docstring).

        One full-resolution row at the bottom of the scene makes GDAL decode the last row of blocks (and, for
        formats decoded from the start, JPEG, the whole file), without holding more than that row. A PNG file's
        chunk checksums through its end marker are checked instead (truncation and corrupt bytes both fail
        them), which costs no decoding: the last-row read would decode the whole image once more before the
        tiles decode it again (0.36 s of a 1.5 s prediction on a 2560 px PNG, scripts/bench.py).
        """
        if self._ds.driver == "PNG" and Path(self.path).is_file() and _verify_png(self.path):
            return
        try:
            self._ds.read(self._unique, window=Window(0, self.height - 1, self.width, 1))
        except RasterioError as e:
            raise RasterError(
                f"{self.path}: the image data does not decode to the end, the file is truncated or corrupt "
                f"({_gdal_message(e)})"
            ) from e

    def _warn_if_striped(self) -> None:
        block_rows, block_cols = self.block_shape
        if self.width * self.height > STRIPED_WARN_PIXELS and self._striped:
            logger.warning(
                "%s is a %dx%d raster stored in strips (blocks of %dx%d): windowed reads will be slow. "
                "Convert it once: gdal_translate -co TILED=YES -co COMPRESS=DEFLATE %s tiled.tif",
                self.path,
                self.width,
                self.height,
                block_cols,
                block_rows,
                self.path,
            )


def _whole_pixels(*values: float) -> bool:
    """True when every value (a window's offsets or sizes) is a whole number of pixels."""
    return all(float(v).is_integer() for v in values)


def _paste(
    part: np.ndarray, ok: np.ndarray | None, rgb: np.ndarray, valid: np.ndarray, at: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` / ``valid`` with ``part`` and its valid pixels ``ok`` (``None``: all valid) put at rows ``r0:r1``,
    columns ``c0:c1`` (``at``), as :meth:`Scene.read` does: nodata inside the scene is black, only the outside
    is padding."""
    r0, r1, c0, c1 = at
    if ok is None:
        rgb[r0:r1, c0:c1] = part
        valid[r0:r1, c0:c1] = True
    elif not ok.any():
        rgb[r0:r1, c0:c1] = 0
    else:
        rgb[r0:r1, c0:c1] = np.where(ok[..., None], part, 0)
        valid[r0:r1, c0:c1] = ok
    return rgb, valid


def open_scene(source: SceneSource, bands: tuple[int, ...] | None = None, gsd: float | None = None) -> Scene:
    """Open a raster for windowed reading (use it as a context manager).

    Args:
        source: a file name (any raster GDAL reads: GeoTIFF, COG, JPEG, PNG, JPEG 2000, VRT, ``/vsi...``
            paths), an open rasterio dataset (:meth:`Scene.from_dataset`: its CRS, transform and nodata are
            kept, and closing the scene leaves it open), a PIL image (:meth:`Scene.from_pil`) or a numpy
            array (:meth:`Scene.from_array`, which states the rule for band-first and band-last arrays).
        bands: 1-based band indexes to read as ``(red, green, blue)``, or one index for a gray image;
            default: the bands whose colour interpretation is red/green/blue, else the first three, a
            single band replicated to gray, gray + alpha as gray.
        gsd: ground sample distance in metres per pixel, overriding what the georeferencing says (useful
            for PNG/JPEG files without georeferencing).

    Raises:
        RasterError: missing file, not a raster GDAL can read, a file truncated or corrupt anywhere,
            unsupported data type, wrong band count, empty scene, every pixel nodata. The message names the
            file.
    """
    if isinstance(source, np.ndarray):
        return Scene.from_array(source, gsd=gsd, bands=bands)
    if isinstance(source, DatasetReaderBase):
        return Scene.from_dataset(source, gsd=gsd, bands=bands)
    if _is_pil_image(source):
        return Scene.from_pil(source, gsd=gsd, bands=bands)
    if not isinstance(source, (str, Path)):
        raise RasterError(
            f"cannot read a scene from a {type(source).__name__}: pass a file name, an open rasterio "
            f"dataset, a PIL image or a numpy array"
        )
    dataset = open_dataset(source)
    try:
        return Scene(dataset, path=str(source), bands=bands, gsd=gsd)
    except Exception:
        dataset.close()
        raise


def open_dataset(path: str | Path) -> DatasetReaderBase:
    """``rasterio.open(path)`` with the errors of :func:`open_scene`, and without rasterio's
    ``NotGeoreferencedWarning`` (a PNG or JPEG without georeferencing is normal input, not a problem).

    Raises:
        RasterError: missing file, a folder, or not a raster GDAL can read (the message names the file).
    """
    name = str(path)
    if not name.startswith("/vsi") and "://" not in name and not Path(name).exists():
        raise RasterError(f"{name}: file not found")
    if Path(name).is_dir():
        raise RasterError(f"{name}: is a directory, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(name)
    except RasterioError as e:
        raise RasterError(f"{name}: not a raster GDAL can read ({e})") from e


def _is_pil_image(obj: object) -> TypeGuard[PILImage]:
    """True for a PIL image, without importing PIL when it is not loaded (then ``obj`` cannot be one)."""
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def _band_last(arr: np.ndarray, name: str) -> np.ndarray:
    """The ``(rows, cols, channels)`` view of an image array, by the rule of :meth:`Scene.from_array`."""
    if arr.ndim not in (2, 3):
        raise RasterError(
            f"{name}: expected an image array (rows, cols), (rows, cols, channels) or (channels, rows, cols), "
            f"got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise RasterError(f"{name}: empty scene (shape {arr.shape})")
    if arr.dtype.kind not in "uif":
        raise RasterError(f"{name}: unsupported data type {arr.dtype} (need integer or real values)")
    if arr.ndim == 2:
        return arr[:, :, None]
    first, middle, last = arr.shape
    if last <= MAX_ARRAY_CHANNELS and min(first, middle) > MIN_ARRAY_SIDE:
        return arr
    if first <= MAX_ARRAY_CHANNELS and min(middle, last) > MIN_ARRAY_SIDE:
        return np.moveaxis(arr, 0, -1)
    raise RasterError(
        f"{name}: cannot tell the channel axis of an array of shape {arr.shape}: expected (rows, cols, "
        f"channels) or (channels, rows, cols) with 1 to {MAX_ARRAY_CHANNELS} channels and more than "
        f"{MIN_ARRAY_SIDE} rows and columns"
    )


def _verify_png(path: str) -> bool:
    """Check every chunk of a PNG file through its end marker (PIL's ``verify()``: checksums, no decoding).

    Returns False when the image is too large for PIL's guard to open (not checked), else True.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
    except Image.DecompressionBombError:
        return False  # larger than PIL's guard allows: the last-row check of the caller still runs
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, ImportError) as e:
        # ImportError: Ultralytics' patched Image.open, when PIL cannot identify the file, wants a HEIF plugin
        raise RasterError(f"{path}: the PNG file is truncated or corrupt ({e})") from e
    return True


def _gdal_message(error: Exception) -> str:
    """GDAL's own message behind a rasterio error ("Read failed. See previous exception" is its wrapper)."""
    cause = error.__cause__ or error.__context__
    return str(cause or error).strip() or type(error).__name__


def _choose_bands(dataset: Any, path: str, bands: tuple[int, ...] | None) -> tuple[int, int, int]:
    """The ``(red, green, blue)`` band indexes, from ``bands`` or from the colour interpretation."""
    count = dataset.count
    if bands is not None:
        try:
            chosen = tuple(int(b) for b in bands)
        except (TypeError, ValueError):
            raise RasterError(
                f"{path}: bands must be 1-based band numbers, e.g. (3, 2, 1), got {bands!r}"
            ) from None
        if len(chosen) not in (1, 3):
            raise RasterError(
                f"{path}: bands must name 1 (gray) or 3 (red, green, blue) bands, got {bands!r}"
            )
        bad = [b for b in chosen if not 1 <= b <= count]
        if bad:
            raise RasterError(
                f"{path}: band {bad[0]} does not exist (the file has {count} bands, numbered from 1)"
            )
        return (chosen[0],) * 3 if len(chosen) == 1 else chosen  # type: ignore[return-value]
    interp = list(dataset.colorinterp)
    where = {ci: i + 1 for i, ci in reversed(list(enumerate(interp)))}
    if all(ci in where for ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return where[ColorInterp.red], where[ColorInterp.green], where[ColorInterp.blue]
    image_bands = [i + 1 for i, ci in enumerate(interp) if ci != ColorInterp.alpha]
    if len(image_bands) == 1:
        return (image_bands[0],) * 3  # type: ignore[return-value]
    if len(image_bands) == 2:
        raise RasterError(
            f"{path}: has 2 image bands, which is neither gray nor RGB; choose them with bands=(r, g, b) "
            f"(or one band for gray)"
        )
    if len(image_bands) == 0:
        raise RasterError(f"{path}: has only alpha bands ({count} bands)")
    return image_bands[0], image_bands[1], image_bands[2]


def _palette(dataset: Any, path: str, bands: tuple[int, int, int]) -> np.ndarray | None:
    """A ``(65536, 3)`` lookup table when one paletted band is read, else ``None``."""
    if len(set(bands)) != 1 or dataset.colorinterp[bands[0] - 1] != ColorInterp.palette:
        return None
    try:
        cmap = dataset.colormap(bands[0])
    except ValueError:
        return None
    lut = np.zeros((65536, 3), np.uint8)
    for index, rgba in cmap.items():
        if 0 <= index < len(lut):
            lut[index] = rgba[:3]
    return lut


def _transform_of(dataset: DatasetReaderBase) -> Affine | None:
    """The dataset's geotransform, or ``None`` when it has none (no CRS and the identity transform)."""
    georeferenced = dataset.crs is not None or dataset.transform != Affine.identity()
    return dataset.transform if georeferenced else None


def gsd_of(path: str | Path) -> float | None:
    """The GSD (m/px) a raster's georeferencing gives, as :attr:`Scene.gsd` has it, without opening it as a
    :class:`Scene` (no decode checks, no stretch: a 2560 px PNG 0.14 s -> a few ms). ``None`` when unknown.

    Raises:
        RasterError: as :func:`open_dataset`.
    """
    with open_dataset(path) as ds:
        return _gsd_from_georeferencing(ds.crs, _transform_of(ds), ds.width, ds.height)


def _gsd_from_georeferencing(crs: Any, transform: Affine | None, width: int, height: int) -> float | None:
    """Metres per pixel: linear units -> metres for projected CRSs, a local approximation for geographic."""
    if crs is None or transform is None:
        return None
    a, b, _, d, e, _ = transform[:6]
    pixel_area = abs(a * e - b * d)  # in CRS units squared; the geometric mean handles non-square pixels
    if pixel_area == 0:
        return None
    if crs.is_projected:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # unknown units: GSD unknown, the user may pass it
            return None
        return math.sqrt(pixel_area) * factor
    if crs.is_geographic:
        _, lat = transform @ (width / 2, height / 2)
        phi = math.radians(max(-89.9, min(89.9, lat)))
        m_per_deg_lat = 111132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
        m_per_deg_lon = 111412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi)
        return math.sqrt(pixel_area * m_per_deg_lat * m_per_deg_lon)
    return None


def _fmt(win: Window) -> str:
    return f"(col {win.col_off:g}, row {win.row_off:g}, {win.width:g}x{win.height:g})"
