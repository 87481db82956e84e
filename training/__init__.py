"""The trainer: `train(TrainConfig(...))`, or `python -m training.run` on the command line."""

from training import onednn

onednn.enable_on_x86()  # before any module of the package imports TensorFlow

from training.config import TrainConfig  # noqa: E402


def train(config, **kwargs):
    """Run one training job (see training.trainer.train); imported lazily to keep the CLI fast."""
    from training.trainer import train as run_training

    return run_training(config, **kwargs)


__all__ = ["TrainConfig", "train"]
