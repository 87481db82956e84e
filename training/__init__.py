"""The trainer: `train(TrainConfig(...))`, or `python -m training.run` on the command line."""

from training.config import TrainConfig


def train(config, **kwargs):
    """Run one training job (see training.trainer.train); imported lazily to keep the CLI fast."""
    from training.trainer import train as run_training

    return run_training(config, **kwargs)


__all__ = ["TrainConfig", "train"]
