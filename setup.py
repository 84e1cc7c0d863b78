"""Packaging for keras-resnet.

The ONNX runtime is an extra, not a hard requirement: ``onnxruntime`` (``[cpu]``) and
``onnxruntime-gpu`` (``[gpu]``) install the same Python module and must never be installed
together, so a user picks exactly one of the two extras.
"""
from setuptools import find_packages, setup

CORE = [
    "tensorflow>=2.16,<2.22",
    "keras>=3.8",
    "numpy",
    "click>=8.1",
    "pyyaml>=6",
    "pillow>=10",
    "matplotlib>=3.7",
    "scikit-learn>=1.3",
    "keras-tuner>=1.4",
    "tensorboard>=2.16",
    "tf2onnx>=1.16",
    "onnx>=1.15",
    "ai-edge-litert>=1.0",
]

setup(
    name="keras-resnet",
    version="0.1.0",
    description="ResNet model zoo, training, fine-tuning and export for Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_resnet", "keras_resnet.*"]),
    package_data={"keras_resnet.models": ["card.json"]},
    install_requires=CORE,
    extras_require={
        "cpu": ["onnxruntime>=1.18"],
        "gpu": ["tensorflow[and-cuda]>=2.16,<2.22", "onnxruntime-gpu>=1.18"],
        # TFDS (tfds:NAME, cifar10, cifar100); its download path imports importlib_resources.
        "tfds": ["tensorflow-datasets>=4.9", "importlib_resources"],
        # pytest-xdist: the suite runs in two processes (pytest.ini).
        "test": ["pytest>=7", "pytest-xdist>=3", "tensorflow-datasets>=4.9",
                 "importlib_resources"],
    },
    entry_points={"console_scripts": ["keras-resnet=keras_resnet.cli.main:main"]},
)
