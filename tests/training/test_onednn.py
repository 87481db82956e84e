"""oneDNN's kernels on every x86 CPU: TF_ENABLE_ONEDNN_OPTS is 1 before TensorFlow loads."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

from training import onednn

REPO = pathlib.Path(__file__).resolve().parents[2]
IS_ONEDNN_ON = (
    "import training; from tensorflow.python.util import _pywrap_util_port as port; "
    "print(port.IsMklEnabled())"
)


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_x86_defaults_to_onednn(machine):
    environ = {}
    assert onednn.enable_on_x86(environ, machine) is True
    assert environ == {onednn.VARIABLE: "1"}


def test_the_users_choice_wins():
    environ = {onednn.VARIABLE: "0"}
    assert onednn.enable_on_x86(environ, "x86_64") is False
    assert environ == {onednn.VARIABLE: "0"}


def test_other_machines_keep_tensorflows_default():
    environ = {}
    assert onednn.enable_on_x86(environ, "aarch64") is False
    assert environ == {}


def tensorflow_uses_onednn(environ):
    output = subprocess.run(
        [sys.executable, "-c", IS_ONEDNN_ON],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return output.strip().splitlines()[-1] == "True"


@pytest.mark.skipif(platform.machine().lower() not in onednn.X86_MACHINES, reason="not x86")
def test_importing_training_first_turns_onednn_on_in_tensorflow():
    environ = {k: v for k, v in os.environ.items() if k != onednn.VARIABLE}
    assert tensorflow_uses_onednn(environ)
    assert not tensorflow_uses_onednn({**environ, onednn.VARIABLE: "0"})
