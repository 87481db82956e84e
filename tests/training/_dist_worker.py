"""Trains one small fixed model on fixed data under a tf.distribute strategy; for the tests.

    python tests/training/_dist_worker.py --strategy mirrored --logical-cpus 2 --run-dir R --out O
    TF_CONFIG=... python tests/training/_dist_worker.py --strategy multi_worker --run-dir R --out O

Writes O/<precision>.npz (final weights) and O/<precision>.json (loss history, replicas,
whether this process is the chief, its worker dir); backups and checkpoints go under R. The
tests compare the weights with a one-device `train()` on the same global batches. `--fix none`
(or `build_only`, its first half) builds the multi-worker strategy without
training.multi_worker_fix, to show that each half of the fix is needed.
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGE_SHAPE = (12, 12, 3)
NUM_CLASSES = 4
NUM_EXAMPLES = 64
GLOBAL_BATCH = 16
EPOCHS = 2


def make_data():
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(NUM_EXAMPLES, *IMAGE_SHAPE)).astype("float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[np.arange(NUM_EXAMPLES) % NUM_CLASSES]
    return images, labels


def make_dataset():
    import tensorflow as tf

    options = tf.data.Options()
    # The data is in memory, not in files: shard it by element, without trying files first.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices(make_data()).batch(GLOBAL_BATCH).with_options(options)


def build_model():
    """A small conv net without batch norm (whose statistics are per replica) or dropout, its
    weights set from a fixed generator so every strategy starts from the same point."""
    import keras
    import numpy as np

    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(NUM_CLASSES, name="predictions_dense")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="tiny_convnet")
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def train(strategy, work_dir):
    """Fit for EPOCHS epochs with a backup and a checkpoint in `work_dir`; returns the model
    and its history."""
    import keras

    with strategy.scope():
        model = build_model()
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup"), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(work_dir / "last.weights.h5"), save_weights_only=True),
    ]
    history = model.fit(
        make_dataset(),
        validation_data=make_dataset(),
        epochs=EPOCHS,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )
    return model, history.history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--strategy", required=True, choices=("one_device", "mirrored", "multi_worker")
    )
    parser.add_argument("--precision", action="append", help="repeat to train once per policy")
    parser.add_argument("--logical-cpus", type=int, default=0)
    parser.add_argument("--run-dir", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--fix", choices=("full", "none", "build_only"), default="full")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import numpy as np
    import tensorflow as tf

    from training import hardware

    if args.logical_cpus:
        # Must happen before TensorFlow initializes its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus
        )
    if args.fix != "full":
        from keras.src.backend.tensorflow import trainer as tf_trainer

        from training import multi_worker_fix

        hardware.read_tf_config()
        if args.fix == "build_only":
            keras_reduce = tf_trainer.reduce_per_replica
            multi_worker_fix.apply()
            tf_trainer.reduce_per_replica = keras_reduce
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = hardware.resolve_strategy(args.strategy)

    args.out.mkdir(parents=True, exist_ok=True)
    for precision in args.precision or ["float32"]:
        policy = hardware.apply_precision(precision)
        work_dir = hardware.worker_dir(args.run_dir / policy, strategy)
        model, history = train(strategy, work_dir)
        sample = model.predict(make_data()[0][:4], verbose=0)
        np.savez(args.out / f"{policy}.npz", *model.get_weights())
        (args.out / f"{policy}.json").write_text(
            json.dumps(
                {
                    "loss": history["loss"],
                    "val_loss": history["val_loss"],
                    "accuracy": history["accuracy"],
                    "replicas": strategy.num_replicas_in_sync,
                    "is_chief": hardware.is_chief(strategy),
                    "worker_dir": str(work_dir),
                    "output_dtype": str(sample.dtype),
                }
            )
        )


if __name__ == "__main__":
    main()
