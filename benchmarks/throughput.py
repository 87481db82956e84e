"""Images per second of the trainer's own models, per model and precision: a training step and
inference, fed from tensors in memory and through the trainer's tf.data pipeline (the
`standard` augmentation for training), and the exported SavedModel's `serving_default` (what
TF Serving runs) on uint8 images. The gap between memory and pipeline is the pipeline's cost.

    python -m benchmarks.throughput [--models lenet5,resnet20] [--precisions float32]
        [--batch 32] [--threads auto] [--sub-batches 2] [--rounds 3] [--seconds 3]

Models are built and compiled by the trainer's own functions (training.trainer.build_model,
compile_model), so the figures follow its defaults, its thread pools and sub-batches included
(`--threads` and `--sub-batches`, as `training.run` takes them; on 2 cores `auto` splits
batches of 32 and more in two, one thread per op).
Rounds alternate over every case; the table shows medians and the median per-round ratio
pipeline / in memory. Writes benchmarks/results/<machine>-<date>-throughput.json.
"""

import argparse
import contextlib
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from benchmarks import common
from training import augment, data, export, hardware, trainer
from training.config import TrainConfig

# name: (input shape, batch): the models' usual inputs; resnet50 at 224x224 with a small batch.
MODELS = {
    "lenet5": ((32, 32, 1), 128),
    "stagewise_cnn": ((32, 32, 3), 128),
    "resnet20": ((32, 32, 3), 128),
    "mobilenet_v2": ((96, 96, 3), 32),
    "resnet50": ((224, 224, 3), 16),
}
NUM_CLASSES = 10
# The model fed by fit and predict, from memory and through the pipeline; then served.
FED = ("train/memory", "train/pipeline", "infer/memory", "infer/pipeline")
SERVED = "infer/saved_model"
MEASUREMENTS = (*FED, SERVED)
# Batches left out at the start of each measurement: iterator start-up, prefetch filling.
SKIP = 2


class BatchClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = common.StepTimes()

    def on_train_batch_end(self, batch, logs=None):
        self.times.mark()

    def on_predict_batch_end(self, batch, logs=None):
        self.times.mark()


def precisions_available():
    """float32 always; mixed_bfloat16 on a CPU with native bfloat16; mixed_float16 needs a GPU."""
    names = ["float32"]
    if hardware.cpu_supports_bf16() or hardware.gpu_compute_capabilities():
        names.append("mixed_bfloat16")
    if hardware.gpu_compute_capabilities():
        names.append("mixed_float16")
    return names


@contextlib.contextmanager
def compile_options_added(options):
    """Adds `options` to every keras.Model.compile call inside: the trainer's compile step
    with one setting changed, for A/B measurements of that setting."""
    original = keras.Model.compile

    def compile_with_options(model, *args, **kwargs):
        return original(model, *args, **{**kwargs, **options})

    keras.Model.compile = compile_with_options
    try:
        yield
    finally:
        keras.Model.compile = original


class Case:
    """One model under one precision, with its in-memory and pipeline inputs, warmed up.

    `batch` overrides the model's batch in MODELS; `compile_options` (jit_compile,
    steps_per_execution) reach the trainer's model.compile call (benchmarks.levers);
    `augmentation` is the preset the training pipeline applies; `sub_batches` the parts each
    training batch is split into (training.sub_batches; resolved, as sub_batches_for answers).
    """

    def __init__(
        self,
        model_name,
        precision,
        seconds,
        *,
        batch=None,
        compile_options=None,
        measurements=MEASUREMENTS,
        augmentation="standard",
        sub_batches=1,
    ):
        self.name = f"{model_name} {precision}"
        self.model_name, self.precision, self.sub_batches = model_name, precision, sub_batches
        self.input_shape, self.batch = MODELS[model_name]
        self.batch = batch or self.batch
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (8 * self.batch, *self.input_shape), dtype=np.uint8)
        labels = rng.integers(0, NUM_CLASSES, len(images))
        mean = images.reshape(-1, self.input_shape[-1]).mean(axis=0)
        std = images.reshape(-1, self.input_shape[-1]).std(axis=0)
        examples = data.stored(tf.data.Dataset.from_tensor_slices((images, labels)))
        augmentation = augment.build_augmentation(
            augmentation,
            image_shape=self.input_shape,
            num_classes=NUM_CLASSES,
            flip_safe=True,
            mean=mean,
        )
        self.inputs = {}
        for training in (True, False):
            pipeline = data.make_pipeline(
                examples,
                batch_size=self.batch,
                num_classes=NUM_CLASSES,
                training=training,
                augment=augmentation if training else None,
                # As the trainer's training pipeline (its test pipeline keeps nothing).
                keep=training and data.can_keep(len(images), self.input_shape),
            )
            kind = "train" if training else "infer"
            batch = next(iter(pipeline))
            self.inputs[f"{kind}/pipeline"] = pipeline.repeat()
            memory = batch if training else batch[0]
            self.inputs[f"{kind}/memory"] = tf.data.Dataset.from_tensors(memory).repeat()

        hardware.apply_precision(precision)
        config = TrainConfig().replace(
            {"model": {"name": model_name}, "data": {"batch_size": self.batch}}
        )
        # fit and predict call back once per execution of steps_per_execution steps.
        self.steps_per_mark = (compile_options or {}).get(
            "steps_per_execution", config.hardware.steps_per_execution
        )
        self.model = trainer.build_model(config, self.input_shape, NUM_CLASSES, mean, std)
        with compile_options_added(compile_options or {}):
            trainer.compile_model(
                self.model,
                config,
                steps_per_epoch=8,
                replicas=1,
                num_classes=NUM_CLASSES,
                steps_per_execution=config.hardware.steps_per_execution,
                sub_batches=sub_batches,
            )
        if SERVED in measurements:
            self.raw_images = images[: self.batch]
            self.serve = self.exported_signature()
        # Only the Keras policy goes back: grappler's rewrite (onednn_bfloat16) must stay on
        # until fit and predict have run their functions, which measure() sees to.
        keras.config.set_dtype_policy("float32")
        # Warm-up (tracing), then as many marks as fill `seconds`.
        self.marks = {}
        for measurement in measurements:
            self.marks[measurement] = SKIP + 4
            rate = self.measure(measurement)
            per_mark = self.images_per_mark(measurement)
            self.marks[measurement] = SKIP + max(4, int(seconds * rate / per_mark))

    def exported_signature(self):
        """The model exported as the trainer exports it, loaded back: its serving_default."""
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "saved_model")
            class_names = [str(i) for i in range(NUM_CLASSES)]
            export.export_saved_model(self.model, path, class_names=class_names, fit="resize")
            # Loading reads the variables into memory: the directory may go.
            return tf.saved_model.load(path).signatures["serving_default"]

    def images_per_mark(self, measurement):
        """fit and predict call back once per execution of steps_per_execution steps; the
        SavedModel is timed per call."""
        return self.batch * (1 if measurement == SERVED else self.steps_per_mark)

    def steps(self, measurement):
        """The batches one measure(measurement) runs."""
        return self.marks[measurement] * self.images_per_mark(measurement) // self.batch

    def measure(self, measurement):
        hardware.set_graph_rewrite(self.precision)
        if measurement == SERVED:
            clock = common.StepTimes()
            for _ in range(self.marks[measurement]):
                # .numpy() waits for the result, as a server must before it answers.
                self.serve(image=self.raw_images)["class_id"].numpy()
                clock.mark()
            return clock.images_per_second(self.batch, SKIP)
        clock = BatchClock()
        steps = self.steps(measurement)
        dataset = self.inputs[measurement]
        if measurement.startswith("train"):
            history = self.model.fit(
                dataset,
                steps_per_epoch=steps,
                epochs=1,
                callbacks=[clock],
                shuffle=False,  # as the trainer: a dataset is not shuffled by fit
                verbose=0,
            )
            if not np.isfinite(history.history["loss"][-1]):
                raise RuntimeError(f"{self.name} diverged while being measured")
        else:
            self.model.predict(dataset, steps=steps, callbacks=[clock], verbose=0)
        return clock.times.images_per_second(self.images_per_mark(measurement), SKIP)


def summarize(cases, figures):
    rows, results = [], []
    for case in cases:
        f = {m: figures[(case.name, m)] for m in MEASUREMENTS}
        medians = {m: common.median(f[m]) for m in MEASUREMENTS}
        train_ratio = common.median_ratio(f["train/pipeline"], f["train/memory"])
        infer_ratio = common.median_ratio(f["infer/pipeline"], f["infer/memory"])
        served_ratio = common.median_ratio(f[SERVED], f["infer/memory"])
        results.append(
            {
                "model": case.model_name,
                "precision": case.precision,
                "input_shape": list(case.input_shape),
                "batch": case.batch,
                "sub_batches": case.sub_batches,
                "images_per_second": f,
                "median": medians,
                "train_pipeline_over_memory": train_ratio,
                "infer_pipeline_over_memory": infer_ratio,
                "saved_model_over_memory": served_ratio,
            }
        )
        rows.append(
            [
                case.model_name,
                "x".join(map(str, case.input_shape)),
                case.batch,
                case.sub_batches,
                case.precision,
                f"{medians['train/memory']:,.0f}",
                f"{medians['train/pipeline']:,.0f}",
                f"{train_ratio:.2f}",
                f"{medians['infer/memory']:,.0f}",
                f"{medians['infer/pipeline']:,.0f}",
                f"{infer_ratio:.2f}",
                f"{medians[SERVED]:,.0f}",
                f"{served_ratio:.2f}",
            ]
        )
    header = [
        "model",
        "input",
        "batch",
        "sub-batches",
        "precision",
        "train, memory",
        "train, pipeline",
        "pipeline / memory",
        "infer, memory",
        "infer, pipeline",
        "pipeline / memory",
        "served, SavedModel",
        "SavedModel / memory",
    ]
    return results, common.markdown_table(header, rows)


def sub_batches_for(requested, batch, threads, *, cores=None):
    """The parts a case's training batch is split into, as the trainer resolves `requested`
    (None: auto) with `--threads threads` (training.hardware.resolve_sub_batches)."""
    if requested is not None and requested > batch:
        raise SystemExit(
            f"--sub-batches {requested} is more than the batch, {batch}: each part needs an example"
        )
    return hardware.resolve_sub_batches(requested, batch, threads, cores=cores)


def threads_for(mode, inputs, *, cores=None):
    """The thread mode (training.hardware.THREADS) for cases of `inputs`, (input shape, batch,
    precision, sub-batches) tuples, as the trainer resolves `mode` for each. TensorFlow has one
    set of pools per process, so `auto` must resolve alike for every case; where it does not,
    this stops and says so."""
    resolved = {
        (shape[0], batch, precision, parts): hardware.resolve_threads(
            mode, shape[0], batch, precision, parts, cores=cores
        )
        for shape, batch, precision, parts in inputs
    }
    if len(set(resolved.values())) > 1:
        sizes = ", ".join(
            f"{side}x{side} batch {batch} {precision} in {parts}: {threads}"
            for (side, batch, precision, parts), threads in resolved.items()
        )
        raise SystemExit(
            f"--threads {mode} resolves differently for these cases ({sizes}), and a process "
            f"has one set of thread pools: pass --threads one of "
            f"{', '.join(t for t in hardware.THREADS if t != mode)}, or measure them apart"
        )
    return next(iter(resolved.values()), "tensorflow")


def apply_threads_for(mode, inputs) -> str:
    """Size TensorFlow's pools for the cases of `inputs` (threads_for) and return the mode in
    effect; call it before TensorFlow's first op, which fixes them."""
    return hardware.apply_threads(threads_for(mode, inputs))


def add_threads_argument(parser):
    """--threads and --sub-batches, as training.run takes them."""
    parser.add_argument(
        "--threads",
        choices=hardware.THREADS,
        default="auto",
        help="TensorFlow's thread pools, as training.run's --threads (default: auto)",
    )
    parser.add_argument(
        "--sub-batches",
        type=common.positive_int,
        default=None,
        help="parts of each training batch, as training.run's --sub-batches (default: auto)",
    )


def parse_list(text, allowed, what):
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in allowed:
            raise SystemExit(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--precisions", default=None, help="default: all this machine has")
    parser.add_argument(
        "--batch", type=common.positive_int, default=None, help="every model's (default: MODELS')"
    )
    add_threads_argument(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    available = precisions_available()
    models = parse_list(args.models, MODELS, "model")
    precisions = parse_list(args.precisions or ",".join(available), available, "precision")
    batches = {name: args.batch or MODELS[name][1] for name in models}
    parts = {
        name: sub_batches_for(args.sub_batches, batches[name], args.threads) for name in models
    }
    inputs = [
        (MODELS[name][0], batches[name], precision, parts[name])
        for name in models
        for precision in precisions
    ]
    threads = apply_threads_for(args.threads, inputs)
    if not hardware.gpu_compute_capabilities():
        print("No GPU: mixed_float16 and the SavedModel on a GPU are skipped.")

    facts = {**common.machine_facts(), "threads": threads}
    print(common.facts_line(facts), flush=True)
    cases = []
    for model_name in models:
        for precision in precisions:
            print(f"building and warming up {model_name} {precision}", flush=True)
            cases.append(
                Case(
                    model_name,
                    precision,
                    args.seconds,
                    batch=args.batch,
                    sub_batches=parts[model_name],
                )
            )
    keys = [(case.name, m) for case in cases for m in MEASUREMENTS]
    by_name = {case.name: case for case in cases}
    figures = common.run_rounds(keys, args.rounds, lambda key: by_name[key[0]].measure(key[1]))
    results, table = summarize(cases, figures)
    path = common.write_results(
        "throughput", facts, {"rounds": args.rounds, "seconds": args.seconds, "cases": results}
    )
    print(f"\nimages/s, medians of {args.rounds} rounds ({common.facts_line(facts)})\n")
    print(table)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
