"""The package asks TensorFlow for its oneDNN kernels on x86 CPUs, unless the user said no."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from keras_resnet.runtime import ONEDNN_VARIABLE, X86_MACHINES, prefer_onednn


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_x86_gets_onednn(machine):
    environ = {}
    assert prefer_onednn(environ, machine) is True
    assert environ == {ONEDNN_VARIABLE: "1"}


def test_the_users_choice_wins():
    environ = {ONEDNN_VARIABLE: "0"}
    assert prefer_onednn(environ, "x86_64") is False
    assert environ == {ONEDNN_VARIABLE: "0"}


def test_other_machines_keep_tensorflows_default():
    environ = {}
    assert prefer_onednn(environ, "aarch64") is False
    assert environ == {}


def _onednn_in_fresh_process(extra_env: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    env.update(extra_env, TF_CPP_MIN_LOG_LEVEL="3")
    code = ("import keras_resnet, tensorflow\n"
            "from keras_resnet.runtime import onednn_enabled\n"
            "print(onednn_enabled())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.machine().lower() not in X86_MACHINES,
                    reason="oneDNN is asked for on x86 only")
def test_tensorflow_runs_onednn_after_importing_the_package():
    assert _onednn_in_fresh_process({}) == "True"
    assert _onednn_in_fresh_process({ONEDNN_VARIABLE: "0"}) == "False"
