"""Backends behind one :class:`~detector.backends.base.Predictor` protocol (onnxruntime, PyTorch)."""

from detector.backends.base import META_KEY, ModelMeta, Predictor

__all__ = ["META_KEY", "ModelMeta", "Predictor"]
