"""The ops between the convolutions (BatchNorm, its gradient, ReLU, its gradient, the residual
addition; lenet5's scaling and tanh and its gradient) as TensorFlow and as PyTorch run them:
milliseconds per op, side by side.

    python -m benchmarks.ops [--shape 128,32,32,16] [--dtypes bfloat16,float32] [--threads 2]
        [--rounds 3] [--chain 20] [--repeats 7]

With AMX the convolutions are fast enough that these memory-bound ops are half of resnet20's
training step (benchmarks.profile); this times each on its own, at resnet20's first-stage shape
by default, channels-last on both sides. TensorFlow runs a chain of `--chain` ops in one
tf.function (its kernels as the trainer's graphs run them: oneDNN's for BatchNorm, Eigen's for
the element-wise ops), with grappler's arithmetic optimizer and constant folding off so that the
chain is not folded into fewer ops; PyTorch runs the same chain eagerly under
no_grad (its ATen kernels, which are what its eager training calls). Each framework runs in a
process of its own per round, rounds alternating; the figures are medians over the repeats of
a chain, then over rounds, and the ratio is the median of per-round ratios.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import common

OPS = (
    "batchnorm", "batchnorm_gradient", "relu", "relu_gradient", "add",
    "scale", "tanh", "tanh_gradient",
)  # fmt: skip
# lenet5's scaled tanh, A tanh(S x) (LeCun et al. 1998): a multiplication on each side of the tanh.
SCALE = 1.7159
FRAMEWORKS = ("tensorflow", "torch")
DTYPES = ("bfloat16", "float32")
EPSILON = 1e-3  # Keras' BatchNormalization default, which the zoo keeps


def operand(shape):
    """The ops' second operand (the added tensor, BatchNorm's saved input, ReLU's output): the
    same float32 NHWC values for both frameworks."""
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def tensorflow_ops(other, dtype):
    """{op: a function from a tensor of other's NHWC shape to one of the same shape}."""
    import tensorflow as tf

    dtype = tf.as_dtype(dtype)
    channels = other.shape[-1]
    other = tf.cast(tf.constant(other), dtype)
    scale, offset = tf.ones([channels]), tf.zeros([channels])
    statistics = {"mean": tf.zeros([channels]), "variance": tf.ones([channels])}
    settings = {"epsilon": EPSILON, "data_format": "NHWC", "is_training": True}

    def batchnorm(x):
        parameters = {"scale": scale, "offset": offset, **statistics, **settings}
        return tf.raw_ops.FusedBatchNormV3(x=x, **parameters)

    # The forward once, outside the timed chain, in a graph as training runs it: the gradient
    # then gets the reserve space of the same (oneDNN's) kernel.
    forward = tf.function(batchnorm)(other)

    def batchnorm_gradient(gradient):
        return tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=gradient, x=other, scale=scale, reserve_space_1=forward.reserve_space_1,
            reserve_space_2=forward.reserve_space_2, reserve_space_3=forward.reserve_space_3,
            **settings,
        ).x_backprop  # fmt: skip

    relu_output, tanh_output = tf.nn.relu(other), tf.tanh(other)
    return {
        "batchnorm": lambda x: batchnorm(x).y,
        "batchnorm_gradient": batchnorm_gradient,
        "relu": tf.nn.relu,
        "relu_gradient": lambda g: tf.raw_ops.ReluGrad(gradients=g, features=relu_output),
        "add": lambda x: tf.raw_ops.AddV2(x=x, y=other),
        "scale": lambda x: x * tf.constant(SCALE, dtype),
        "tanh": tf.tanh,
        "tanh_gradient": lambda g: tf.raw_ops.TanhGrad(y=tanh_output, dy=g),
    }


def to_torch(images, dtype):
    """An NHWC array as PyTorch's NCHW tensor of `dtype` (a name), stored channels-last."""
    import torch

    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).to(getattr(torch, dtype))
    return tensor.contiguous(memory_format=torch.channels_last)


def torch_ops(other, dtype):
    """The same ops in PyTorch, channels-last; BatchNorm's parameters in float32 as Keras keeps
    them under mixed precision (PyTorch's CPU BatchNorm takes bfloat16 input with them)."""
    import torch

    channels = other.shape[-1]
    other = to_torch(other, dtype)
    weight, bias = torch.ones(channels), torch.zeros(channels)
    mean, variance = torch.zeros(channels), torch.ones(channels)

    def batchnorm(x):
        return torch.ops.aten.native_batch_norm(x, weight, bias, mean, variance, True, 0.1, EPSILON)

    _, saved_mean, saved_inverse_std = batchnorm(other)
    relu_output, tanh_output = torch.relu(other), torch.tanh(other)
    return {
        "batchnorm": lambda x: batchnorm(x)[0],
        "batchnorm_gradient": lambda g: torch.ops.aten.native_batch_norm_backward(
            g,
            other,
            weight,
            mean,
            variance,
            saved_mean,
            saved_inverse_std,
            True,
            EPSILON,
            [True, True, True],
        )[0],  # fmt: skip
        "relu": torch.relu,
        "relu_gradient": lambda g: torch.ops.aten.threshold_backward(g, relu_output, 0),
        "add": lambda x: torch.add(x, other),
        "scale": lambda x: torch.mul(x, SCALE),
        "tanh": torch.tanh,
        "tanh_gradient": lambda g: torch.ops.aten.tanh_backward(g, tanh_output),
    }


def time_tensorflow(shape, dtype, chain, repeats):
    import tensorflow as tf

    # Unfolded: the arithmetic optimizer turns chained additions into one AddN, and constant
    # folding chained multiplications by a constant into one.
    tf.config.optimizer.set_experimental_options(
        {"arithmetic_optimization": False, "constant_folding": False}
    )
    start = tf.cast(tf.random.normal(shape), dtype)
    figures = {}
    for name, op in tensorflow_ops(operand(shape), dtype).items():
        # The op's operands are captured eager tensors, inputs of the graph: not constants
        # that grappler could fold.
        @tf.function
        def run(x, op=op):
            for _ in range(chain):
                x = op(x)
            return x[0, 0, 0, :1]  # fetch one value, not the whole tensor

        run(start).numpy()
        figures[name] = median_ms(lambda: run(start).numpy(), chain, repeats)
    return figures


def time_torch(shape, dtype, chain, repeats):
    import torch

    start = to_torch(np.random.default_rng(1).standard_normal(shape).astype(np.float32), dtype)
    figures = {}
    with torch.no_grad():
        for name, op in torch_ops(operand(shape), dtype).items():

            def run(x=start, op=op):
                for _ in range(chain):
                    x = op(x)
                return x[0, :1, 0, 0].tolist()  # fetch one value, as TensorFlow's side does

            run()
            figures[name] = median_ms(run, chain, repeats)
    return figures


def median_ms(run, chain, repeats):
    """Median milliseconds per op over `repeats` calls of `run`, each a chain of `chain` ops."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return common.median(seconds) / chain * 1e3


def work(framework, threads, shape, dtype, chain, repeats):
    """The worker process: its framework on `threads` threads, every op timed, printed as JSON."""
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        figures = time_tensorflow(shape, dtype, chain, repeats)
    else:
        import torch

        torch.set_num_threads(threads)
        figures = time_torch(shape, dtype, chain, repeats)
    print(json.dumps(figures))


def measure(framework, dtype, args):
    command = [
        sys.executable, "-m", "benchmarks.ops", "--worker", framework, "--dtypes", dtype,
        "--threads", str(args.threads), "--shape", ",".join(map(str, args.shape)),
        "--chain", str(args.chain), "--repeats", str(args.repeats),
    ]  # fmt: skip
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{framework} {dtype} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(figures, dtypes):
    """One row per op and dtype: medians over rounds and the median per-round ratio."""
    header = ["op", "dtype", "TensorFlow ms", "PyTorch ms", "TensorFlow / PyTorch"]
    rows = []
    for op in OPS:
        for dtype in dtypes:
            tf_ms, torch_ms = ([r[op] for r in figures[(f, dtype)]] for f in FRAMEWORKS)
            rows.append([
                op, dtype, f"{common.median(tf_ms):.3f}", f"{common.median(torch_ms):.3f}",
                f"{common.median_ratio(tf_ms, torch_ms):.2f}",
            ])  # fmt: skip
    return common.markdown_table(header, rows)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape",
        type=common.nhwc_shape,
        default="128,32,32,16",
        help="batch,height,width,channels",
    )
    parser.add_argument("--dtypes", default=",".join(DTYPES), help=f"from {', '.join(DTYPES)}")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", type=int, default=20, help="ops per timed call")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per op and process")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dtypes = [dtype.strip() for dtype in args.dtypes.split(",") if dtype.strip()]
    unknown = [dtype for dtype in args.dtypes if dtype not in DTYPES]
    if unknown or not args.dtypes:
        given = ", ".join(unknown) or "none"
        parser.error(f"--dtypes takes one or more of {', '.join(DTYPES)} (given: {given})")
    if min(args.threads, args.rounds, args.chain, args.repeats) < 1:
        parser.error("--threads, --rounds, --chain and --repeats take whole numbers from 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return work(args.worker, args.threads, args.shape, args.dtypes[0], args.chain, args.repeats)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("benchmarks.ops compares with PyTorch: pip install -e '.[bench]'")
    facts = common.machine_facts()
    print(common.facts_line(facts), flush=True)
    cases = [(framework, dtype) for dtype in args.dtypes for framework in FRAMEWORKS]
    figures = common.run_rounds(cases, args.rounds, lambda case: measure(*case, args))
    settings = {k: getattr(args, k) for k in ("shape", "threads", "chain", "repeats")}
    results = {" ".join(case): rounds for case, rounds in figures.items()}
    path = common.write_results("ops", facts, {"settings": settings, **results})
    print(table(figures, args.dtypes))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
