"""Where a training step's time goes: TensorFlow's profiler over steady training steps of one
model, built and compiled by the trainer's own functions, and its ops ranked by their time.

    python -m benchmarks.profile [--model resnet20] [--precision auto] [--batch 128]
        [--threads auto] [--sub-batches 2] [--input memory] [--seconds 5] [--top 15]

Prints a table of op types (TensorFlow's kernel names, oneDNN's `_Mkl...` among them): their
milliseconds per training step summed over the executor's threads, their share of that sum, and
how many run per step; the tf.data ops of the pipeline (`--input pipeline`) are listed apart.
TensorFlow's thread pools and the batch's sub-batches are the trainer's for that model and
batch (`--threads`, `--sub-batches`, as `training.run` takes them: on 2 cores, at `--batch 32`,
two halves, one thread per op).
The trace stays in benchmarks/results/profile-<model>/ for TensorBoard's profile plugin
(`pip install tensorboard-plugin-profile`, then `tensorboard --logdir` on that folder); the
table goes into benchmarks/results/<machine>-<date>-profile-<model>.json.

TensorBoard's plugin is what reads a trace, and it is not a dependency here: this reads the
XSpace protobuf TensorFlow writes (tensorflow.tsl's xplane_pb2) and sums the durations of the
events named `op_name:OpType`, which are the op kernels the executor ran.
"""

import argparse
import collections
import os
import pathlib
import re
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import common
from benchmarks.throughput import (
    MODELS,
    Case,
    add_threads_argument,
    apply_threads_for,
    sub_batches_for,
)
from training import hardware

# An op kernel's event: "scope/name:OpType" (names with "::" are the runtime's own TraceMe).
OP_EVENT = re.compile(r"^[^:\s]+:(?P<type>[A-Za-z0-9_]+)$")
# Ops that only contain other ops (the steps_per_execution loop, function calls): their time
# is their children's, counted already.
CONTAINERS = {"While", "StatelessWhile", "PartitionedCall", "StatefulPartitionedCall", "If"}


def op_times(xspace: xplane_pb2.XSpace) -> dict:
    """{(where, op type): [total milliseconds, count]} over the host plane: `where` is
    "model" for the executor's threads and "tf.data" for the input pipeline's."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    plane = next(plane for plane in xspace.planes if plane.name == "/host:CPU")
    for line in plane.lines:
        if line.name.startswith("tf_Compute"):
            where = "model"
        elif line.name.startswith("tf_data"):
            where = "tf.data"
        else:  # python's thread, Eigen's pool (its work is inside the kernels' events)
            continue
        for event in line.events:
            match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
            if match and match["type"] not in CONTAINERS:
                total = totals[(where, match["type"])]
                total[0] += event.duration_ps / 1e9
                total[1] += 1
    return dict(totals)


def read_trace(logdir) -> xplane_pb2.XSpace:
    (path,) = pathlib.Path(logdir).rglob("*.xplane.pb")
    xspace = xplane_pb2.XSpace()
    xspace.ParseFromString(path.read_bytes())
    return xspace


def profile(case: Case, measurement, logdir) -> int:
    """Trace one measurement of `case` (warmed up already) into `logdir`; the steps it ran."""
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(str(logdir))
    try:
        case.measure(measurement)
    finally:
        tf.profiler.experimental.stop()
    return case.steps(measurement)


COLUMNS = ("where", "op", "ms_per_step", "share", "per_step")


def table_rows(times, steps, top):
    """The `top` op types of the model and of tf.data by time, as rows of COLUMNS, and the
    model's op milliseconds per step."""
    model_total = sum(ms for (where, _), (ms, _) in times.items() if where == "model")
    rows = []
    for (where, op), (ms, count) in sorted(times.items(), key=lambda item: -item[1][0]):
        share = f"{100 * ms / model_total:.1f}%" if where == "model" else ""
        rows.append((where, op, f"{ms / steps:.2f}", share, f"{count / steps:g}"))
    model = [row for row in rows if row[0] == "model"][:top]
    pipeline = [row for row in rows if row[0] == "tf.data"][:top]
    return model + pipeline, model_total / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS))
    parser.add_argument("--precision", default="auto", help="auto, float32 or mixed_bfloat16")
    parser.add_argument(
        "--batch", type=common.positive_int, help="default: the model's in benchmarks.throughput"
    )
    add_threads_argument(parser)
    parser.add_argument("--input", default="memory", choices=("memory", "pipeline"))
    parser.add_argument("--seconds", type=float, default=5.0, help="of traced training")
    parser.add_argument("--top", type=int, default=15, help="op types shown per group")
    args = parser.parse_args(argv)

    shape, batch = MODELS[args.model]
    precision = hardware.resolve_precision(args.precision, args.model)
    batch = args.batch or batch
    parts = sub_batches_for(args.sub_batches, batch, args.threads)
    threads = apply_threads_for(args.threads, [(shape, batch, precision, parts)])
    measurement = f"train/{args.input}"
    # The default pipeline of the trainer: no augmentation.
    case = Case(
        args.model,
        precision,
        args.seconds,
        batch=batch,
        measurements=(measurement,),
        augmentation="none",
        sub_batches=parts,
    )
    logdir = common.RESULTS_DIR / f"profile-{args.model}"
    steps = profile(case, measurement, logdir)
    rows, step_ms = table_rows(op_times(read_trace(logdir)), steps, args.top)
    facts = {**common.machine_facts(), "threads": threads}
    print(
        f"{case.name}, batch {case.batch}, {args.input} input: {steps} traced steps, "
        f"{step_ms:.1f} ms of model ops per step (summed over threads)"
    )
    print(common.markdown_table(("where", "op", "ms/step", "share", "per step"), rows))
    print(common.facts_line(facts))
    path = common.write_results(
        f"profile-{args.model}",
        facts,
        {
            "model": args.model,
            "precision": precision,
            "batch": case.batch,
            "sub_batches": parts,
            "input": args.input,
            "steps": steps,
            "model_ms_per_step": step_ms,
            "ops": [dict(zip(COLUMNS, row)) for row in rows],
            "trace": str(logdir),
        },
    )
    print(f"results: {path}; trace: {logdir}")


if __name__ == "__main__":
    main()
