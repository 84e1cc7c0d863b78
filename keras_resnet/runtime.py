"""Settings for TensorFlow's runtime that must be made before TensorFlow is imported.

TensorFlow's x86 builds carry oneDNN kernels but turn them on by default only on CPUs with
AVX-512 VNNI, AVX512-BF16 or AMX. Elsewhere (an AVX2-only CPU, for one) convolutions run on
Eigen's kernels. On a 2-core AVX2 CPU those needed about twice oneDNN's CPU time per training
image for ResNet-20 and four times it for ResNet-50 (BENCHMARKS.md), so the package asks for
oneDNN on every x86 CPU. A user's own ``TF_ENABLE_ONEDNN_OPTS`` (``0`` to keep Eigen) always
wins. TensorFlow reads the variable once, at import, so it takes effect only when
``keras_resnet`` is imported before TensorFlow (the command line always is).
"""
from __future__ import annotations

import os
import platform

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "x86-64", "i686", "i386")


def prefer_onednn(environ=None, machine: str | None = None) -> bool:
    """Ask TensorFlow for its oneDNN kernels on x86, unless the user set the variable.

    Returns whether the variable now asks for oneDNN.
    """
    environ = os.environ if environ is None else environ
    machine = (platform.machine() if machine is None else machine).lower()
    if machine in X86_MACHINES:
        environ.setdefault(ONEDNN_VARIABLE, "1")
    return environ.get(ONEDNN_VARIABLE, "").strip().lower() in ("1", "true")


def onednn_enabled() -> bool | None:
    """Whether the loaded TensorFlow runs its oneDNN kernels (None if it cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without this private module
        return None
    return bool(_pywrap_util_port.IsMklEnabled())
