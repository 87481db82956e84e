"""Measurements, not tests: `python -m benchmarks.<name>` (see the README's Speed section)."""

import os

# The environment as launched, for the training.run processes the benchmarks start: each
# version of the trainer then sets its own defaults (an older commit ran without oneDNN on AVX2).
LAUNCH_ENVIRONMENT = dict(os.environ)

# What the trainer runs with: oneDNN on x86, set before TensorFlow loads (training.onednn).
import training  # noqa: E402, F401
