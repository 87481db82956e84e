"""How much of the machine's arithmetic the models use: model FLOPs per second divided by the
matmul peak measured in the same run, so the figure travels between machines.

    python -m benchmarks.efficiency [--models lenet5,resnet20] [--rounds 3] [--seconds 3]

The peak is the best rate of a large square matmul (float32, and bfloat16 where the CPU has
it), the most efficient op a CPU runs. A model's FLOPs per image come from zoo.describe (the
papers' count: convolutions and dense layers, a multiply-add as 2); a training step costs about
3x the forward pass (the forward, and gradients for inputs and for weights). Models run as in
benchmarks.throughput (the trainer's build and compile, tensors in memory) at each precision,
against the peak of the same precision. Writes benchmarks/results/<machine>-<date>-efficiency.json.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from benchmarks import common, throughput
from zoo.describe import describe

MATMUL_SIZE = 2048
TRAIN_FLOPS_PER_FORWARD = 3
PEAK_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16}


def matmul_peak(precision, seconds):
    """Best GFLOP/s of MATMUL_SIZE^2 matmuls over `seconds`, in the precision's compute dtype."""
    dtype = PEAK_DTYPES[precision]
    a = tf.random.uniform((MATMUL_SIZE, MATMUL_SIZE), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()  # tracing, oneDNN's primitive creation
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        matmul(a).numpy()
        best = max(best, 2 * MATMUL_SIZE**3 / (time.perf_counter() - tick) / 1e9)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,stagewise_cnn,resnet20,mobilenet_v2")
    parser.add_argument("--precisions", default=None, help="default: all this machine has")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    models = throughput.parse_list(args.models, throughput.MODELS, "model")
    available = [p for p in throughput.precisions_available() if p in PEAK_DTYPES]
    precisions = (
        throughput.parse_list(args.precisions, available, "precision")
        if args.precisions
        else available
    )

    facts = common.machine_facts()
    print(common.facts_line(facts), flush=True)
    flops = {
        name: describe(name, input_shape=throughput.MODELS[name][0])["flops"] for name in models
    }
    cases = {}
    for name in models:
        for precision in precisions:
            print(f"building and warming up {name} {precision}", flush=True)
            cases[(name, precision)] = throughput.Case(
                name, precision, args.seconds, measurements=("train/memory", "infer/memory")
            )
    keys = [("peak", p, None) for p in precisions]
    keys += [(*case, m) for case in cases for m in ("train/memory", "infer/memory")]

    def measure(key):
        if key[0] == "peak":
            return matmul_peak(key[1], args.seconds)
        return cases[key[:2]].measure(key[2])

    figures = common.run_rounds(keys, args.rounds, measure)
    peaks = {p: common.median(figures[("peak", p, None)]) for p in precisions}
    rows, results = [], []
    for name, precision in cases:
        result = {"model": name, "precision": precision, "gflops_per_image": flops[name] / 1e9}
        row = [name, precision, f"{flops[name] / 1e6:,.1f}"]
        for kind, factor in (("train", TRAIN_FLOPS_PER_FORWARD), ("infer", 1)):
            rates = figures[(name, precision, f"{kind}/memory")]
            gflops = common.median(rates) * flops[name] * factor / 1e9
            fraction = gflops / peaks[precision]
            result[kind] = {"images_per_second": rates, "gflops": gflops, "of_peak": fraction}
            row += [f"{common.median(rates):,.0f}", f"{gflops:,.1f}", f"{fraction:.1%}"]
        rows.append(row)
        results.append(result)
    header = [
        "model",
        "precision",
        "MFLOPs/image",
        "train images/s",
        "train GFLOP/s",
        "of peak",
        "infer images/s",
        "infer GFLOP/s",
        "of peak",
    ]
    path = common.write_results(
        "efficiency",
        facts,
        {
            "matmul_size": MATMUL_SIZE,
            "peak_gflops": {p: figures[("peak", p, None)] for p in precisions},
            "cases": results,
        },
    )
    print(f"\n{common.facts_line(facts)}\n")
    peak_text = ", ".join(f"{p} {g:,.0f} GFLOP/s" for p, g in peaks.items())
    print(
        f"matmul {MATMUL_SIZE}x{MATMUL_SIZE} peak (median of {args.rounds} rounds): {peak_text}\n"
    )
    print(common.markdown_table(header, rows))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
