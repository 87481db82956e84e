"""One convolution as TensorFlow and as PyTorch call oneDNN: the same kernels, timed by oneDNN.

    python -m benchmarks.kernels [--shape 32,8,8,128] [--filters 128] [--kernel 3]
        [--dtype bfloat16] [--threads 1,2] [--rounds 3] [--calls 200]

On x86 both frameworks train convolutions with oneDNN's primitives (TensorFlow's
`_MklNative...` ops, PyTorch's mkldnn convolutions). oneDNN's verbose log (ONEDNN_VERBOSE=1)
names the implementation each call ran, its memory formats and its own time, so the two are
compared kernel against kernel, without either framework's dispatch. Each framework, thread
count and direction (forward, input gradient, filter gradient) runs in a process of its own,
because the log and the thread pools are set when the libraries load; rounds alternate.
The figures are medians of oneDNN's times per execution: the convolution itself, and the
reorders (weights into and out of oneDNN's blocked layouts) summed per call.

What it showed on a 2-core AMX Xeon (2026-12-06): at one thread, the same implementations
run equally fast under both; at two, oneDNN under TensorFlow's thread pool (Eigen's, into
which oneDNN is built) gains less than under PyTorch's OpenMP, most on short kernels.
"""

import argparse
import collections
import os
import subprocess
import sys

from benchmarks import common

# Each direction and oneDNN's name of its propagation kind.
PROPAGATION = {
    "forward": "forward_training",
    "input_gradient": "backward_data",
    "filter_gradient": "backward_weights",
}
DIRECTIONS = tuple(PROPAGATION)
FRAMEWORKS = ("tensorflow", "torch")
WARMUP_CALLS = 20


def parse_verbose(text, calls, propagation):
    """From oneDNN's verbose log: {"convolution": median ms per execution of the convolutions
    of this `propagation` kind, "implementation", "reorders": ms per call (all reorder
    executions' ms / calls)}. Only `exec` lines count; their last field is the milliseconds."""
    convolutions, reorder_ms, implementations = [], 0.0, collections.Counter()
    for line in text.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields[:5]:
            continue
        kind, implementation, kind_of_propagation = fields[fields.index("exec") + 2 :][:3]
        if kind == "convolution" and kind_of_propagation == propagation:
            convolutions.append(float(fields[-1]))
            implementations[implementation] += 1
        elif kind == "reorder":
            reorder_ms += float(fields[-1])
    if not convolutions:
        raise ValueError(
            f"no {propagation} convolution in oneDNN's log: is this framework built with oneDNN?"
        )
    return {
        "convolution": common.median(convolutions),
        "implementation": implementations.most_common(1)[0][0],
        "reorders": reorder_ms / (calls + WARMUP_CALLS),
    }


def tensorflow_call(direction, shape, filters, kernel, dtype):
    import tensorflow as tf

    batch, height, width, channels = shape
    images = tf.cast(tf.random.normal(shape), dtype)
    weights = tf.cast(tf.random.normal((kernel, kernel, channels, filters)), dtype)
    gradient = tf.cast(tf.random.normal((batch, height, width, filters)), dtype)
    common_args = {"strides": [1, 1, 1, 1], "padding": "SAME"}
    ops = {
        "forward": lambda: tf.raw_ops.Conv2D(input=images, filter=weights, **common_args),
        "input_gradient": lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=shape, filter=weights, out_backprop=gradient, **common_args
        ),
        "filter_gradient": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=images, filter_sizes=weights.shape, out_backprop=gradient, **common_args
        ),
    }
    # Inside tf.function, grappler rewrites these to oneDNN's _MklNative... kernels.
    run = tf.function(ops[direction])
    return lambda: run().numpy()


def torch_call(direction, shape, filters, kernel, dtype):
    import torch

    batch, height, width, channels = shape
    dtype = getattr(torch, dtype)
    layout = {"memory_format": torch.channels_last}
    images = torch.randn(batch, channels, height, width).to(dtype).to(**layout)
    weights = torch.randn(filters, channels, kernel, kernel).to(dtype).to(**layout)
    gradient = torch.randn(batch, filters, height, width).to(dtype).to(**layout)
    padding = kernel // 2
    if direction == "forward":
        return lambda: torch.nn.functional.conv2d(images, weights, padding=padding)
    mask = [direction == "input_gradient", direction == "filter_gradient", False]
    return lambda: torch.ops.aten.convolution_backward(
        gradient, images, weights, None, [1, 1], [padding] * 2, [1, 1], False, [0, 0], 1, mask
    )


def work(framework, direction, threads, shape, filters, kernel, dtype, calls):
    """The worker process: set the threads, then call the kernel WARMUP_CALLS + calls times
    (oneDNN, loaded with ONEDNN_VERBOSE=1, logs each execution)."""
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        call = tensorflow_call(direction, shape, filters, kernel, dtype)
    else:
        import torch

        torch.set_num_threads(threads)
        call = torch_call(direction, shape, filters, kernel, dtype)
    for _ in range(WARMUP_CALLS + calls):
        call()


def measure(framework, direction, threads, args):
    command = [
        sys.executable, "-m", "benchmarks.kernels", "--worker", framework,
        "--direction", direction, "--threads", str(threads), "--shape",
        ",".join(map(str, args.shape)), "--filters", str(args.filters), "--kernel",
        str(args.kernel), "--dtype", args.dtype, "--calls", str(args.calls),
    ]  # fmt: skip
    environment = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{framework} {direction} failed:\n{done.stderr[-2000:]}")
    return parse_verbose(done.stdout, args.calls, PROPAGATION[direction])


def table(results, threads):
    """Medians per direction and thread count; the ratio is the median of per-round ratios."""
    header = ["direction", "threads", "implementation", "TensorFlow ms", "PyTorch ms"]
    header += ["TensorFlow / PyTorch", "reorders ms/call (TF, PyTorch)"]
    rows = []
    for direction in DIRECTIONS:
        for count in threads:
            tf_rounds, torch_rounds = (results[f"{f} {direction} {count}"] for f in FRAMEWORKS)
            tf_ms, torch_ms = ([r["convolution"] for r in c] for c in (tf_rounds, torch_rounds))
            tf_reorders, torch_reorders = (
                common.median([r["reorders"] for r in c]) for c in (tf_rounds, torch_rounds)
            )
            implementations = {r["implementation"] for r in tf_rounds + torch_rounds}
            rows.append([
                direction, count, " / ".join(sorted(implementations)),
                f"{common.median(tf_ms):.3f}", f"{common.median(torch_ms):.3f}",
                f"{common.median_ratio(tf_ms, torch_ms):.2f}",
                f"{tf_reorders:.3f}, {torch_reorders:.3f}",
            ])  # fmt: skip
    return common.markdown_table(header, rows)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape", type=common.nhwc_shape, default="32,8,8,128", help="batch,height,width,channels"
    )
    parser.add_argument("--filters", type=int, default=128)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per process")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--direction", choices=DIRECTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    text = args.threads
    try:
        args.threads = [int(count) for count in text.split(",")]
    except ValueError:
        args.threads = [0]
    if min(args.threads) < 1:
        parser.error(f"--threads takes comma-separated whole numbers from 1, not {text!r}")
    if min(args.filters, args.rounds, args.calls) < 1:
        parser.error("--filters, --rounds and --calls take whole numbers from 1")
    # TensorFlow's SAME padding and PyTorch's kernel // 2 agree only for odd kernels.
    if args.kernel < 1 or args.kernel % 2 == 0:
        parser.error(f"--kernel takes an odd size (1, 3, 5, ...), not {args.kernel}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        work(
            args.worker, args.direction, args.threads[0], args.shape, args.filters, args.kernel,
            args.dtype, args.calls,
        )  # fmt: skip
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("benchmarks.kernels compares with PyTorch: pip install -e '.[bench]'")
    facts = common.machine_facts()
    print(common.facts_line(facts), flush=True)
    keys = [
        (framework, direction, count)
        for direction in DIRECTIONS
        for count in args.threads
        for framework in FRAMEWORKS
    ]
    figures = common.run_rounds(keys, args.rounds, lambda key: measure(*key, args))
    results = {" ".join(map(str, key)): rounds for key, rounds in figures.items()}
    settings = {k: getattr(args, k) for k in ("shape", "filters", "kernel", "dtype", "calls")}
    path = common.write_results("kernels", facts, {"settings": settings, **results})
    print(table(results, args.threads))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
