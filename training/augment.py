"""Augmentation for overhead imagery, as an albumentations list that Ultralytics applies after mosaic.

Overhead imagery has no "up": any 90-degree rotation and any flip of a scene is another valid scene, so the
pipeline adds :class:`albumentations.RandomRotate90` (Ultralytics itself only flips). The rest imitates how
satellite and aerial images differ from one another: a coarser ground sample distance (downscale), sensor and
atmosphere colour (hue/saturation, brightness/contrast, gamma), haze, defocus/motion blur and JPEG artefacts.

Ultralytics 8.4 takes such a list through its ``augmentations`` train argument and runs it inside its own
``Albumentations`` transform, with ``bbox_params`` in YOLO format whenever a transform is spatial, so boxes follow
the rotation. Every transform here keeps the image size (the batch is stacked afterwards); scale jitter is left to
Ultralytics' own ``scale`` affine. Only built-in transforms are used, so the list survives ``A.to_dict`` into the
checkpoint and a resumed run rebuilds the same pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class AugmentConfig:
    """Probabilities (0-1) and strengths of the overhead-imagery transforms.

    Attributes:
        rot90: probability of a random multiple of 90 degrees (0, 90, 180 or 270, uniformly).
        downscale: probability of a down-then-up resampling that imitates a coarser GSD.
        downscale_range: ``(min, max)`` linear scale of that resampling (0.5 = half the resolution).
        color: probability of a hue/saturation/value shift and, independently, of brightness/contrast.
        gamma: probability of a gamma change.
        haze: probability of light fog.
        blur: probability of a Gaussian or motion blur.
        jpeg: probability of JPEG re-compression.
        jpeg_quality: ``(min, max)`` JPEG quality.
    """

    rot90: float = 0.75
    downscale: float = 0.2
    downscale_range: tuple[float, float] = (0.5, 0.9)
    color: float = 0.5
    gamma: float = 0.2
    haze: float = 0.05
    blur: float = 0.1
    jpeg: float = 0.2
    jpeg_quality: tuple[int, int] = (40, 95)

    def __post_init__(self) -> None:
        for name in ("rot90", "downscale", "color", "gamma", "haze", "blur", "jpeg"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"augment.{name} must be a probability in [0, 1], got {p!r}")
        lo, hi = (float(x) for x in self.downscale_range)
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(
                f"augment.downscale_range must satisfy 0 < min <= max < 1, got {self.downscale_range!r}"
            )
        self.downscale_range = (lo, hi)
        qlo, qhi = (int(x) for x in self.jpeg_quality)
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError(
                f"augment.jpeg_quality must satisfy 1 <= min <= max <= 100, got {self.jpeg_quality!r}"
            )
        self.jpeg_quality = (qlo, qhi)


def overhead_augmentations(cfg: AugmentConfig | None = None) -> list[Any]:
    """Build the albumentations transforms for overhead imagery.

    Args:
        cfg: probabilities and strengths; defaults to :class:`AugmentConfig()`.

    Returns:
        A list of albumentations transforms for Ultralytics' ``augmentations`` train argument. Transforms with
        probability 0 are left out.
    """
    import albumentations as A
    import cv2

    cfg = cfg or AugmentConfig()
    area_linear = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}
    candidates = [
        # RandomRotate90 draws k in {0,1,2,3}; at p=1 that includes the identity a quarter of the time.
        A.RandomRotate90(p=cfg.rot90),
        A.Downscale(scale_range=cfg.downscale_range, interpolation_pair=area_linear, p=cfg.downscale),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=25, val_shift_limit=15, p=cfg.color),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=cfg.color),
        A.RandomGamma(gamma_limit=(80, 120), p=cfg.gamma),
        A.RandomFog(alpha_coef=0.08, fog_coef_range=(0.1, 0.3), p=cfg.haze),
        A.OneOf(
            [A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2)), A.MotionBlur(blur_limit=(3, 5))],
            p=cfg.blur,
        ),
        A.ImageCompression(quality_range=cfg.jpeg_quality, p=cfg.jpeg),
    ]
    return [t for t in candidates if t.p > 0]
