"""Where does resnet20's training time go, and which setting speeds it up? Each lever is an
A/B against the trainer's defaults, in alternating rounds, as median images/s and the median
per-round ratio lever / default.

    python -m benchmarks.levers [--model resnet20] [--rounds 3] [--seconds 3]
        [--process-levers] [--levers float32,batch 256,...]

The default here is the trainer's model and compile step with TensorFlow's thread pools and the
whole batch, the baseline the levers were first measured against (`training.run` itself now
splits batches on 2 cores, one thread per op: the lever `sub-batches 2`).
In-process levers (one process, models built side by side): precision, XLA (jit_compile),
steps_per_execution, batch size. With --process-levers, also the settings TensorFlow applies to
the whole process (oneDNN on or off, its thread pool using the calling thread, thread pools,
precision onednn_bfloat16's graph rewrite and oneDNN's bfloat16 arithmetic in a float32 model,
both on CPUs with bfloat16 only; XLA's clustering of point-wise ops): each round starts one
process per setting, in turn. --levers measures only the named ones (and the default):
jit_compile alone can take minutes a round on a CPU where XLA's convolutions are slow.
Writes benchmarks/results/<machine>-<date>-levers.json.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common

# name: (Case keyword arguments); precision None is the trainer's `auto`.
IN_PROCESS = {
    "default": {},
    "float32": {"precision": "float32"},
    "jit_compile": {"compile_options": {"jit_compile": True}},
    "steps_per_execution=1": {"compile_options": {"steps_per_execution": 1}},
    "batch 256": {"batch": 256},
    "batch 32": {"batch": 32},
}
# name: the environment, tf.config.threading's (intra, inter), precision.
PER_PROCESS = {
    "default": {},
    "TF_ENABLE_ONEDNN_OPTS=0": {"environment": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    # oneDNN's parallel loops also run on their calling thread (Intel's tuning scripts set it).
    "TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=1": {
        "environment": {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "1"}
    },
    "threads intra=2 inter=1": {"threads": (2, 1)},
    "threads intra=1 inter=1": {"threads": (1, 1)},
    # Each op on one thread, two at once: the backward's independent input and filter gradients
    # run side by side instead of each waking the pool for its parallel loop.
    "threads intra=1 inter=2": {"threads": (1, 2)},
    # ... with each batch in two halves: two chains of ops for the two threads (sub-batches).
    "sub-batches 2": {"threads": (1, 2), "sub_batches": 2},
    # One core for the step's ops, the rest free for tf.data's threads (0: TensorFlow's default).
    "threads intra=1": {"threads": (1, 0)},
    # Per process: grappler's rewrite applies to every graph the process optimizes.
    "precision onednn_bfloat16": {"precision": "onednn_bfloat16", "needs_bfloat16": True},
    # XLA's auto-clustering limited to point-wise ops (any cluster size): XLA fuses the ReLUs,
    # their gradients and the additions between the convolutions, which stay oneDNN's.
    "xla pointwise": {
        "environment": {
            "TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit "
            "--tf_xla_ops_to_cluster=PW --tf_xla_min_cluster_size=1"
        }
    },
    # A float32 model whose convolutions and matmuls oneDNN computes in bfloat16 (AMX, AVX512-BF16):
    # the element-wise ops between them stay in float32, which Eigen runs several times faster.
    "fpmath bf16": {
        "precision": "float32",
        "environment": {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
        "needs_bfloat16": True,
    },
}
MEASUREMENTS = ("train/memory", "train/pipeline")


def build_case(model, seconds, precision=None, **kwargs):
    from benchmarks import throughput
    from training import hardware

    precision = precision or hardware.resolve_precision("auto", model)
    return throughput.Case(model, precision, seconds, measurements=MEASUREMENTS, **kwargs)


def in_process(model, rounds, seconds, levers):
    cases = {}
    for name, kwargs in levers.items():
        print(f"building and warming up {name}", flush=True)
        cases[name] = build_case(model, seconds, **kwargs)
    keys = [(name, m) for name in cases for m in MEASUREMENTS]
    return common.run_rounds(keys, rounds, lambda key: cases[key[0]].measure(key[1]))


def single(model, seconds, lever):
    """In a process of its own: one per-process lever, measured once, printed as JSON."""
    setting = PER_PROCESS[lever]  # the environment was set by per_process
    import tensorflow as tf

    if "threads" in setting:
        tf.config.threading.set_intra_op_parallelism_threads(setting["threads"][0])
        tf.config.threading.set_inter_op_parallelism_threads(setting["threads"][1])
    parts = setting.get("sub_batches", 1)
    case = build_case(model, seconds, precision=setting.get("precision"), sub_batches=parts)
    print(json.dumps({m: case.measure(m) for m in MEASUREMENTS}))


def process_levers(levers):
    """`levers` without those for bfloat16 CPUs on another (onednn_bfloat16 is refused there)."""
    from training import hardware

    bfloat16 = hardware.onednn_bfloat16_available()
    return {
        name: setting
        for name, setting in levers.items()
        if bfloat16 or not setting.get("needs_bfloat16")
    }


def selected(levers, names):
    """The default and the levers named in `names` (all of them when None), in their order."""
    if names is None:
        return dict(levers)
    return {name: s for name, s in levers.items() if name == "default" or name in names}


def parse_levers(text):
    """--levers' comma-separated names, each one of IN_PROCESS's or PER_PROCESS's."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {*IN_PROCESS, *PER_PROCESS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown lever(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    return set(names)


def per_process(model, rounds, seconds, levers):
    figures = {(name, m): [] for name in levers for m in MEASUREMENTS}
    for index in range(rounds):
        for name, setting in levers.items():
            command = [sys.executable, "-m", "benchmarks.levers", "--model", model]
            command += ["--seconds", str(seconds), "--single", name]
            output = subprocess.run(
                command,
                env={**os.environ, **setting.get("environment", {})},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            measured = json.loads(output.strip().splitlines()[-1])
            for m in MEASUREMENTS:
                figures[(name, m)].append(measured[m])
        print(f"process round {index + 1}/{rounds} done", flush=True)
    return figures


def table(figures, names):
    rows, results = [], []
    for name in names:
        row = [name]
        result = {"lever": name}
        for m in MEASUREMENTS:
            values, base = figures[(name, m)], figures[("default", m)]
            ratio = common.median_ratio(values, base)
            row += [f"{common.median(values):,.0f}", f"{ratio:.2f}"]
            result[m] = {"images_per_second": values, "ratio_to_default": ratio}
        rows.append(row)
        results.append(result)
    header = ["lever", "train, memory", "/ default", "train, pipeline", "/ default"]
    return results, common.markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--process-levers", action="store_true")
    parser.add_argument("--levers", type=parse_levers, help="comma-separated lever names")
    parser.add_argument("--single", choices=PER_PROCESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from benchmarks import throughput  # TensorFlow loads here, after the arguments are checked

    if args.model not in throughput.MODELS:
        parser.error(f"--model: {args.model!r} is not one of {', '.join(throughput.MODELS)}")
    if args.single:
        return single(args.model, args.seconds, args.single)

    facts = common.machine_facts()
    print(common.facts_line(facts), flush=True)
    results = {"model": args.model, "rounds": args.rounds, "seconds": args.seconds}
    levers = selected(IN_PROCESS, args.levers)
    figures = in_process(args.model, args.rounds, args.seconds, levers)
    results["in_process"], text = table(figures, levers)
    tables = [f"{args.model}, in one process (images/s, medians of {args.rounds} rounds)\n\n{text}"]
    if args.process_levers:
        levers = process_levers(selected(PER_PROCESS, args.levers))
        figures = per_process(args.model, args.rounds, args.seconds, levers)
        results["per_process"], text = table(figures, levers)
        tables.append(f"{args.model}, one process per setting and round\n\n{text}")
    path = common.write_results("levers", facts, results)
    print(f"\n{common.facts_line(facts)}\n")
    print("\n\n".join(tables))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
