"""Make Keras' `model.fit` work under tf.distribute.MultiWorkerMirroredStrategy.

Keras 3's TensorFlow trainer fails there as shipped:
https://github.com/keras-team/keras/issues/20585
1. `TensorFlowTrainer._maybe_symbolic_build` reduces the first *data* batch across replicas
   (`strategy.reduce("MEAN", batch, axis=None)`) only to learn its shapes; across workers this
   passes a PerReplica value where a tensor is expected and `fit` stops before its first step.
   The fix builds from this worker's first local replica batch, which has the same shapes.
2. `reduce_per_replica` averages every step output across workers with
   `strategy.reduce("MEAN", v, axis=0)`; the outputs are scalar metrics, which have no axis 0.
   The fix averages scalars over replicas only (axis=None), as MirroredStrategy's path does.

Both are replaced from outside Keras, and only for the versions whose trainer source was checked
to have this code: 3.7.0 (the oldest checked) through 3.15.1 (the pinned one, where
tests/training/test_distributed.py shows each failure without its half of the fix).
`resolve_strategy` applies it for `multi_worker`; it is never applied at import time.
"""

import keras
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

BROKEN_VERSIONS = ((3, 7, 0), (3, 15, 1))  # first and last, inclusive


def _version_tuple(version):
    return tuple(int(part) for part in version.split(".")[:3])


def is_needed(version=None) -> bool:
    """Whether this Keras version (default: the installed one) has the #20585 failures."""
    first, last = BROKEN_VERSIONS
    return first <= _version_tuple(version or keras.version()) <= last


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = self.distribute_strategy
    if (
        iterator is not None
        and self._distribute_strategy is not None
        and tf_trainer._collective_all_reduce_multi_worker(strategy)
    ):
        for _, _, batches in iterator:
            distributed_batch = next(batches)
            break
        data_batch = tree.map_structure(
            lambda value: strategy.experimental_local_results(value)[0], distributed_batch
        )
        iterator = None
    return _ORIGINALS["_maybe_symbolic_build"](self, iterator=iterator, data_batch=data_batch)


def _reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):

        def mean(value):
            rank = strategy.experimental_local_results(value)[0].shape.rank
            return strategy.reduce("MEAN", value, axis=None if rank == 0 else 0)

        return tree.map_structure(mean, values)
    return _ORIGINALS["reduce_per_replica"](values, strategy, reduction)


_ORIGINALS = {}


def apply() -> bool:
    """Install the fix if this Keras needs it; returns whether it is in place. Idempotent."""
    if not is_needed():
        return False
    trainer_class = tf_trainer.TensorFlowTrainer
    # Keep Keras' own functions from the first call, so a second call never wraps the fix.
    _ORIGINALS.setdefault("_maybe_symbolic_build", trainer_class._maybe_symbolic_build)
    _ORIGINALS.setdefault("reduce_per_replica", tf_trainer.reduce_per_replica)
    trainer_class._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = _reduce_per_replica
    return True
