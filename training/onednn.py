"""TensorFlow's oneDNN kernels on every x86 CPU, not only the newest: set before TensorFlow loads.

TensorFlow's x86 Linux packages run oneDNN's kernels by default only on CPUs with AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX (TensorFlow RFC 400); on an AVX2-only CPU they fall back to Eigen's
kernels, whose convolution gradients cost resnet20's training step 2.9x the op time of oneDNN's
(benchmarks.profile on a 2-core AVX2 EPYC, 2026-12-03: 1,940 against 662 ms per step of
128 images, summed over threads). TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads,
so the `training` package sets it on import, before any of its modules imports TensorFlow. A
value the user set wins (TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off); after TensorFlow has loaded,
this changes nothing.
"""

import os
import platform

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# Where oneDNN's kernels were measured faster; on ARM TensorFlow picks its own default.
X86_MACHINES = frozenset({"x86_64", "amd64"})


def enable_on_x86(environ=os.environ, machine=None) -> bool:
    """Default TF_ENABLE_ONEDNN_OPTS to 1 on x86 CPUs; whether oneDNN is now asked for."""
    machine = (machine or platform.machine()).lower()
    if machine in X86_MACHINES:
        environ.setdefault(VARIABLE, "1")
    return environ.get(VARIABLE) == "1"
