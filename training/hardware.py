"""Where and in what precision training runs: dtype policies, tf.distribute strategies, workers.

    precision = resolve_precision("auto")     # the fastest safe precision here, not applied yet
    parts = resolve_sub_batches(None, 32)     # training batches of 32 split in parts (2 cores: 2)
    apply_threads("auto", 32, 32, precision, parts)  # CPU threads for 32x32 images: first
    policy = apply_precision(precision)       # sets the global Keras dtype policy, returns its name
    strategy = resolve_strategy("auto")       # build and compile the model under strategy.scope()
    batch = global_batch_size(64, strategy)   # per-replica batch times the replicas

Call them before any model is built: Keras reads the dtype policy when a layer is created, and
TensorFlow fixes its thread pools, and MultiWorkerMirroredStrategy must exist, before its first op.
"""

import json
import logging
import os
import pathlib

import keras
import tensorflow as tf

from training import checks

log = logging.getLogger("training")

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16", "onednn_bfloat16")
THREADS = ("auto", "tensorflow", "one_per_op")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
LR_SCALING_RULES = (None, "linear")

# Volta (7.0) and newer have tensor cores, where float16 matrix products are several times faster.
TENSOR_CORE_COMPUTE_CAPABILITY = (7, 0)
# Zoo models built on depthwise convolutions, which oneDNN runs slower in bfloat16 than in
# float32 on CPU: `auto` keeps them float32 (mobilenet_v2 at 96x96 trained at 96 images/s in
# mixed_bfloat16, 137 in float32; benchmarks.efficiency and .throughput, 2026-12-03).
CPU_BFLOAT16_SLOWER = frozenset({"mobilenet", "mobilenet_v2"})
# CPU flags (as Linux names them in /proc/cpuinfo) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Precision onednn_bfloat16: the model stays float32 and TensorFlow's grappler rewrites every
# graph it optimizes so that oneDNN runs the ops on its bfloat16 list (convolutions, matmuls,
# their gradients, ...) in bfloat16, with the casts placed per graph rather than per layer as
# Keras' mixed_bfloat16 policy places them.
GRAPPLER_BFLOAT16 = "auto_mixed_precision_onednn_bfloat16"


def gpu_compute_capabilities() -> list:
    """The (major, minor) CUDA compute capability of each visible GPU; empty without GPUs."""
    return [
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def cpu_flags(cpuinfo="/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags as Linux's /proc/cpuinfo names them; empty elsewhere."""
    try:
        text = pathlib.Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return frozenset(flags)


def cpu_supports_bf16(cpuinfo="/proc/cpuinfo") -> bool:
    """Whether the CPU does bfloat16 arithmetic natively (AVX512-BF16 or AMX-BF16); False
    where /proc/cpuinfo cannot say, which keeps float32."""
    return bool(cpu_flags(cpuinfo) & BF16_CPU_FLAGS)


def resolve_precision(mode="auto", model_name=None) -> str:
    """The dtype policy name for `mode`; `auto` picks the fastest safe one for this machine
    and, on a CPU, for the model `model_name` (a zoo name) when given.

    auto: mixed_float16 when every GPU has tensor cores, float32 on older GPUs, mixed_bfloat16
    on a CPU with native bfloat16 (measured: 1.4-1.6x the images/s of float32 for resnet20 and
    stagewise_cnn, benchmarks.efficiency) except for CPU_BFLOAT16_SLOWER models, float32
    otherwise.
    """
    checks.one_of("precision", mode, PRECISIONS)
    if mode == "onednn_bfloat16":
        check_onednn_bfloat16()
    if mode != "auto":
        return mode
    capabilities = gpu_compute_capabilities()
    if capabilities:
        if min(capabilities) >= TENSOR_CORE_COMPUTE_CAPABILITY:
            return "mixed_float16"
        return "float32"
    if not cpu_supports_bf16() or model_name in CPU_BFLOAT16_SLOWER:
        return "float32"
    return "mixed_bfloat16"


# Threads: `tensorflow` keeps TensorFlow's pools (each op's parallel loops on every core, as
# many ops at once as cores); `one_per_op` runs each op on one thread, as many ops at once as
# cores. A training step is mostly one chain of ops, so one thread per op pays off where the
# step is split into as many independent chains as cores (sub-batches, below). Training
# images/s from memory on a 2-core AVX512-BF16 EPYC, one process per setting, alternating
# (docs/speed.md, 2026-12-07): two halves against one thread per op on the whole batch, batch
# 32, mixed_bfloat16 (benchmarks.throughput's cases): resnet20 1.24-1.41x, lenet5 1.18-1.52x,
# stagewise_cnn 1.18-1.24x; against TensorFlow's pools on the whole batch, where auto had kept
# them: float32 at batch 32 resnet20 1.28x, stagewise_cnn 1.14x, lenet5 1.43x, mobilenet_v2 at
# 96x96 1.13-1.18x; mixed_bfloat16 at batch 128 resnet20 1.14x, at 64x64 1.07-1.19x. Unsplit,
# one thread per op gains only for small bfloat16 steps (inputs of at most 32x32 in batches of
# at most 32 on CPUs with native bfloat16: lenet5 and resnet20 1.1-1.3x on the AMX Xeon and that
# EPYC; float32 0.8-1.1x, bigger steps 0.85-0.9x), which auto keeps for batches too small to
# split. Both rules are for CPUs of at most 2 cores, where they were measured.
ONE_PER_OP_MAX_CORES = 2
ONE_PER_OP_MAX_BATCH = 32
ONE_PER_OP_MAX_SIDE = 32
# The precisions (resolved, as resolve_precision returns them) whose convolutions run in bfloat16.
BFLOAT16_PRECISIONS = frozenset({"mixed_bfloat16", "onednn_bfloat16"})
# Auto splits a batch only where each part keeps this many examples: BatchNormalization's
# statistics over fewer get noisy (training.sub_batches).
MIN_SUB_BATCH = 16


def cpu_cores() -> int:
    """The cores this process may run on (TensorFlow sizes its pools by the same count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_sub_batches(sub_batches=None, batch_size=None, threads="auto", *, cores=None) -> int:
    """How many parts each training batch of `batch_size` per replica is split into
    (training.sub_batches): `sub_batches` when set; None (auto) one per core on a CPU of 2 to
    ONE_PER_OP_MAX_CORES cores without GPUs, where each part keeps MIN_SUB_BATCH examples and
    `threads` is not `tensorflow` (the chains need one thread per op), else 1."""
    if sub_batches is not None:
        return sub_batches
    if batch_size is None or threads == "tensorflow" or gpu_compute_capabilities():
        return 1
    cores = cpu_cores() if cores is None else cores
    if not 2 <= cores <= ONE_PER_OP_MAX_CORES or batch_size < cores * MIN_SUB_BATCH:
        return 1
    return cores


def resolve_threads(
    mode="auto", image_size=None, batch_size=None, precision=None, sub_batches=1, *, cores=None
) -> str:
    """The thread mode for `mode` (THREADS): `auto` resolves to one_per_op on a CPU of at most
    ONE_PER_OP_MAX_CORES cores where the step is split (`sub_batches` > 1, as
    resolve_sub_batches answers), or, unsplit, for square inputs of `image_size` pixels a side
    in batches of `batch_size` per replica trained in bfloat16 (`precision` as resolve_precision
    answers) on a CPU with native bfloat16 (above); to tensorflow elsewhere, GPUs included
    (their host threads feed the device)."""
    checks.one_of("threads", mode, THREADS)
    if mode != "auto":
        return mode
    if image_size is None or batch_size is None or gpu_compute_capabilities():
        return "tensorflow"
    cores = cpu_cores() if cores is None else cores
    if cores > ONE_PER_OP_MAX_CORES:
        return "tensorflow"
    small_steps = image_size <= ONE_PER_OP_MAX_SIDE and batch_size <= ONE_PER_OP_MAX_BATCH
    bfloat16_convolutions = precision in BFLOAT16_PRECISIONS and cpu_supports_bf16()
    measured_faster = sub_batches > 1 or (small_steps and bfloat16_convolutions)
    return "one_per_op" if measured_faster else "tensorflow"


def apply_threads(
    mode="auto", image_size=None, batch_size=None, precision=None, sub_batches=1
) -> str:
    """Size TensorFlow's thread pools for `mode` (resolve_threads) and return threads_in_effect().

    `tensorflow` leaves the pools as they are (TensorFlow's, or what the caller set). TensorFlow
    fixes its pools when it runs its first op: where it already has, one_per_op cannot apply,
    and the pools stay, with a warning."""
    if resolve_threads(mode, image_size, batch_size, precision, sub_batches) == "one_per_op":
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(cpu_cores())
        except RuntimeError:  # raised only for a change, once TensorFlow has started
            log.warning(
                "threads one_per_op cannot apply: TensorFlow already runs in this process "
                "(threads %s); they stay.",
                threads_in_effect(),
            )
    return threads_in_effect()


def threads_in_effect() -> str:
    """The mode TensorFlow's pools are sized for: one_per_op, tensorflow (its defaults), or
    their sizes when set otherwise."""
    pools = (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    if pools == (1, cpu_cores()):
        return "one_per_op"
    return "tensorflow" if pools == (0, 0) else "intra-op {}, inter-op {}".format(*pools)


def onednn_bfloat16_available() -> bool:
    """Whether precision onednn_bfloat16 can speed anything up here: it rewrites the ops oneDNN
    runs on the CPU, in bfloat16, which only a CPU with native bfloat16 does fast."""
    return not gpu_compute_capabilities() and cpu_supports_bf16()


def check_onednn_bfloat16():
    """Refuse precision onednn_bfloat16 where onednn_bfloat16_available() says it is no use."""
    checks.require(
        onednn_bfloat16_available(),
        "precision 'onednn_bfloat16' is for training on a CPU with native bfloat16 "
        f"({' or '.join(sorted(BF16_CPU_FLAGS))} in /proc/cpuinfo) and no GPU; this machine "
        "has a GPU or lacks those flags. Use precision auto, float32 or mixed_bfloat16.",
    )


def keras_policy(precision) -> str:
    """The Keras dtype policy of a resolved precision: onednn_bfloat16 builds float32 models."""
    return "float32" if precision == "onednn_bfloat16" else precision


def apply_precision(policy="auto", model_name=None) -> str:
    """Set the global Keras dtype policy and grappler's bfloat16 rewrite (resolving `auto`) and
    return the precision's name.

    Under mixed_float16, Keras 3's `compile` wraps the optimizer in a LossScaleOptimizer by
    itself (auto_scale_loss=True) when the model was built under this policy, so build the model
    after this call. bfloat16 has float32's exponent range and needs no loss scaling. The
    rewrite applies to functions traced after this call, in this process.
    """
    name = resolve_precision(policy, model_name)
    keras.config.set_dtype_policy(keras_policy(name))
    set_graph_rewrite(name)
    return name


def set_graph_rewrite(precision):
    """Turn grappler's bfloat16 rewrite on for a resolved precision onednn_bfloat16, off for
    the others. Process-wide, and read when a traced function first runs (not when the model
    is built): keep it on until a model's functions have run once."""
    rewrite = precision == "onednn_bfloat16"
    tf.config.optimizer.set_experimental_options({GRAPPLER_BFLOAT16: rewrite})


def _local_devices(device_type):
    return [device.name for device in tf.config.list_logical_devices(device_type)]


def read_tf_config() -> dict:
    """TF_CONFIG, parsed and checked: a cluster of worker (and chief) addresses and this task."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}; it is not set.'
        )
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise ValueError(f"TF_CONFIG needs a 'cluster' with a 'worker' list; got {raw!r}.")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            f"TF_CONFIG needs a 'task' whose 'type' is one of the cluster's jobs "
            f"({', '.join(cluster)}); got {raw!r}."
        )
    index = task.get("index")
    tasks = cluster[task["type"]]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(tasks):
        raise ValueError(
            f"TF_CONFIG task index must be an integer in [0, {len(tasks)}) for job "
            f"{task['type']!r}; got {index!r}."
        )
    return tf_config


def resolve_strategy(mode="auto"):
    """A tf.distribute strategy for `mode`; build and compile the model under its scope().

    one_device: TensorFlow's default strategy (no replication: plain Keras, on the GPU if any).
    mirrored: MirroredStrategy over the local GPUs, or over the logical CPU devices when there
    are no GPUs (configure several with tf.config.set_logical_device_configuration to test
    multi-replica code on a CPU). auto: mirrored when there are several GPUs, else one_device.
    multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG, with the Keras fix it needs.
    """
    checks.one_of("strategy", mode, STRATEGIES)
    if mode == "multi_worker":
        from training import multi_worker_fix

        read_tf_config()
        multi_worker_fix.apply()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = _local_devices("GPU")
    if mode == "mirrored":
        return tf.distribute.MirroredStrategy(devices=gpus or _local_devices("CPU"))
    if mode == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy(devices=gpus)
    return tf.distribute.get_strategy()


def global_batch_size(per_replica_batch, strategy) -> int:
    """The batch one training step consumes across all replicas (what tf.data must batch by)."""
    checks.in_range("per_replica_batch", per_replica_batch, 1, integer=True)
    return per_replica_batch * strategy.num_replicas_in_sync


def scaled_learning_rate(base_lr, replicas, rule=None) -> float:
    """The learning rate for `replicas` replicas: unchanged, or times `replicas` with `linear`.

    The linear scaling rule (Goyal et al., 2017): a k times larger global batch takes k times
    the learning rate, so the same number of epochs reaches about the same accuracy.
    """
    checks.one_of("learning-rate scaling rule", rule, LR_SCALING_RULES)
    checks.in_range("replicas", replicas, 1, integer=True)
    checks.in_range("base_lr", base_lr, 0, low_open=True)
    return base_lr * replicas if rule == "linear" else base_lr


def _task(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().jobs


def steps_per_execution(requested, strategy) -> int:
    """`requested`, or 1 under MultiWorkerMirroredStrategy: there Keras 3.15's multi-step train
    function fails ("You must feed a value for placeholder tensor ... while/cond"), measured
    with two local workers."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    return requested


def is_chief(strategy) -> bool:
    """Whether this process writes the run's outputs: the only process, the `chief` task, or
    worker 0 when the cluster has no chief (TensorFlow's convention)."""
    task = _task(strategy)
    if task is None:
        return True
    task_type, task_id, jobs = task
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in jobs)


def worker_dir(run_dir, strategy) -> pathlib.Path:
    """Where this process keeps checkpoints, backups and logs: the run directory on the chief,
    `<run_dir>/workertemp_<type>_<index>` on other workers.

    Every worker must save (saving may run collective ops), but two workers writing one file
    collide, so non-chief workers write into their own directory, as the TensorFlow
    multi-worker guide does.
    """
    run_dir = pathlib.Path(run_dir)
    if is_chief(strategy):
        return run_dir
    task_type, task_id, _ = _task(strategy)
    return run_dir / f"workertemp_{task_type}_{task_id}"


def check_config(config):
    checks.one_of("precision", config.hardware.precision, PRECISIONS)
    if config.hardware.precision == "onednn_bfloat16":
        check_onednn_bfloat16()
    checks.one_of("threads", config.hardware.threads, THREADS)
    if config.hardware.sub_batches is not None:
        checks.in_range("hardware.sub_batches", config.hardware.sub_batches, 1, integer=True)
        checks.require(
            config.hardware.sub_batches <= config.data.batch_size,
            f"hardware.sub_batches ({config.hardware.sub_batches}) must be at most the batch "
            f"size per replica ({config.data.batch_size}): each part needs an example.",
        )
    checks.one_of("strategy", config.hardware.strategy, STRATEGIES)
    checks.in_range(
        "hardware.steps_per_execution", config.hardware.steps_per_execution, 1, integer=True
    )
    checks.one_of("learning-rate scaling rule", config.optimizer.scale_lr, LR_SCALING_RULES)
    checks.require(
        config.hardware.strategy != "multi_worker" or config.output.run_name,
        "strategy multi_worker needs an explicit run_name (--run-name), the same on every "
        "worker, so that all workers write into one run.",
    )
