"""Aircraft, helicopter and vehicle detection in overhead imagery.

``from detector import Detector``; ``Detector.load().predict("scene.tif")`` returns
:class:`~detector.detections.Detections`. Importing this package never imports torch.
"""

from detector.detections import Detections

__version__ = "0.1.0"

__all__ = ["Detections", "Detector", "__version__"]


def __getattr__(name: str):  # lazy, so `import detector` stays light
    if name == "Detector":
        from detector.pipeline import Detector

        return Detector
    raise AttributeError(name)
