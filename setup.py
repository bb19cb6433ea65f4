"""Packaging glue that pyproject.toml cannot express: the wheel carries the repository's ``configs/`` and the
shipped models in ``weights/`` as package data (``detector._configs``, ``detector._weights``), so that
``pip install .`` then ``detector predict scene.tif -o out`` works with no repository, no torch and no network.
Everything else about the package is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["detector", "detector.*", "training", "training.*"]),
        "detector._configs",
        "detector._configs.data",
        "detector._configs.train",
        "detector._weights",
    ],
    package_dir={"detector._configs": "configs", "detector._weights": "weights"},
    package_data={
        "detector": ["py.typed"],
        "detector._configs": ["*.yaml", "*.json"],
        "detector._configs.data": ["*.yaml"],
        "detector._configs.train": ["*.yaml"],
        "detector._weights": ["detector.onnx", "detector-int8.onnx", "MODEL_CARD.md"],
    },
)
