"""KerasTuner sweeps over the trainer's settings: `python -m tuning.run`."""

import training  # noqa: F401  (turns on oneDNN on x86 before TensorFlow loads: training.onednn)
