"""Precision policies, strategies, batch and learning-rate scaling, worker dirs, the #20585 fix."""

import json
import pathlib
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer

import zoo
from training import hardware, multi_worker_fix

CPUINFO = pathlib.Path("/proc/cpuinfo")


def fake_cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\n"
        f"flags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 {flags}\n"
    )
    return path


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("avx512f avx512_bf16", True),
        ("amx_tile amx_bf16", True),
        ("avx512f avx512_vnni", False),
    ],
)
def test_cpu_supports_bf16_reads_the_flags(tmp_path, flags, expected):
    assert hardware.cpu_supports_bf16(fake_cpuinfo(tmp_path, flags)) is expected


def test_without_cpuinfo_the_cpu_has_no_bf16(tmp_path):
    assert hardware.cpu_supports_bf16(tmp_path / "missing") is False


@pytest.mark.skipif(
    not CPUINFO.is_file() or "avx512_bf16" not in CPUINFO.read_text(),
    reason="this CPU has no AVX512-BF16",
)
def test_auto_precision_on_this_cpu_is_mixed_bfloat16():
    assert hardware.gpu_compute_capabilities() == []
    assert hardware.resolve_precision() == "mixed_bfloat16"
    assert hardware.resolve_precision("auto") == "mixed_bfloat16"


@pytest.mark.parametrize(
    "capabilities, cpu_bf16, expected",
    [
        ([(8, 0)], False, "mixed_float16"),
        ([(7, 0), (8, 6)], True, "mixed_float16"),
        ([(7, 5), (6, 1)], True, "float32"),  # one GPU without tensor cores holds the others back
        ([(6, 1)], True, "float32"),  # the GPU computes, so the CPU's bf16 does not matter
        ([], True, "mixed_bfloat16"),
        ([], False, "float32"),
    ],
)
def test_auto_precision_branches(monkeypatch, capabilities, cpu_bf16, expected):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: capabilities)
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: cpu_bf16)
    assert hardware.resolve_precision("auto") == expected


def test_auto_keeps_depthwise_models_float32_on_a_bfloat16_cpu(monkeypatch):
    import zoo

    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    assert hardware.CPU_BFLOAT16_SLOWER <= set(zoo.list_models())
    assert hardware.resolve_precision("auto", "mobilenet_v2") == "float32"
    assert hardware.resolve_precision("auto", "mobilenet") == "float32"
    assert hardware.resolve_precision("auto", "resnet20") == "mixed_bfloat16"
    assert hardware.resolve_precision("mixed_bfloat16", "mobilenet_v2") == "mixed_bfloat16"
    # On a GPU with tensor cores the depthwise models take float16 like the rest.
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [(8, 0)])
    assert hardware.resolve_precision("auto", "mobilenet_v2") == "mixed_float16"


@pytest.mark.parametrize("mode", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_explicit_precision_is_kept(monkeypatch, mode):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [(9, 0)])
    assert hardware.resolve_precision(mode) == mode
    assert hardware.apply_precision(mode) == mode
    assert keras.config.dtype_policy().name == mode


def test_apply_precision_resolves_auto(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    assert hardware.apply_precision("auto") == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"


@pytest.mark.parametrize("call", [hardware.resolve_precision, hardware.apply_precision])
def test_unknown_precision_lists_the_valid_ones(call):
    with pytest.raises(ValueError) as error:
        call("float16")
    message = str(error.value)
    assert "'float16'" in message
    for name in hardware.PRECISIONS:
        assert name in message


@pytest.mark.parametrize(
    "side, batch, cores, bf16, precision, expected",
    [
        (32, 32, 2, True, "mixed_bfloat16", "one_per_op"),  # the default job on a bf16 CPU
        (28, 16, 1, True, "onednn_bfloat16", "one_per_op"),
        (32, 64, 2, True, "mixed_bfloat16", "tensorflow"),  # larger batches: loops worth sharing
        (64, 32, 2, True, "mixed_bfloat16", "tensorflow"),  # larger images, likewise
        (32, 32, 4, True, "mixed_bfloat16", "tensorflow"),  # not measured on more cores
        (32, 32, 2, True, "float32", "tensorflow"),  # float32 convolutions: loops worth sharing
        (32, 32, 2, False, "float32", "tensorflow"),  # likewise, on a CPU without bfloat16
        (32, 32, 2, False, "mixed_bfloat16", "tensorflow"),  # emulated bfloat16: not measured
    ],
)
def test_auto_threads_branches(monkeypatch, side, batch, cores, bf16, precision, expected):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: bf16)
    assert hardware.resolve_threads("auto", side, batch, precision, cores=cores) == expected


def test_auto_threads_keep_tensorflows_pools_with_a_gpu_or_unknown_job(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [(8, 0)])
    assert hardware.resolve_threads("auto", 32, 32, "mixed_bfloat16", cores=2) == "tensorflow"
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    assert hardware.resolve_threads("auto", cores=2) == "tensorflow"
    assert hardware.resolve_threads("auto", 32, 32, cores=2) == "tensorflow"  # no precision


@pytest.mark.parametrize(
    "requested, batch, threads, cores, expected",
    [
        (None, 32, "auto", 2, 2),  # the default job on 2 cores: two halves of 16
        (None, 128, "one_per_op", 2, 2),
        (None, 31, "auto", 2, 1),  # a half would keep fewer than MIN_SUB_BATCH examples
        (None, 32, "tensorflow", 2, 1),  # the chains need one thread per op
        (None, 32, "auto", 1, 1),  # one core: no second chain to run
        (None, 64, "auto", 4, 1),  # not measured on more cores
        (3, 32, "tensorflow", 8, 3),  # asked for: kept
        (1, 32, "auto", 2, 1),
    ],
)
def test_sub_batches_resolve(monkeypatch, requested, batch, threads, cores, expected):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    assert hardware.resolve_sub_batches(requested, batch, threads, cores=cores) == expected
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [(8, 0)])
    assert hardware.resolve_sub_batches(None, batch, threads, cores=cores) == 1  # GPUs: whole


@pytest.mark.parametrize(
    "side, batch, precision, cores, expected",
    [
        (32, 32, "float32", 2, "one_per_op"),  # float32 too (whole, it keeps the pools)
        (224, 64, "float32", 2, "one_per_op"),
        (32, 32, "mixed_bfloat16", 1, "one_per_op"),
        (32, 32, "mixed_bfloat16", 4, "tensorflow"),  # not measured on more cores
    ],
)
def test_split_batches_take_one_thread_per_op(monkeypatch, side, batch, precision, cores, expected):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: False)
    assert hardware.resolve_threads("auto", side, batch, precision, 2, cores=cores) == expected


@pytest.mark.parametrize("mode", ["tensorflow", "one_per_op"])
def test_explicit_threads_are_kept(monkeypatch, mode):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    assert hardware.resolve_threads(mode, 224, 256, cores=64) == mode


def test_unknown_threads_list_the_valid_ones():
    with pytest.raises(ValueError) as error:
        hardware.apply_threads("max")
    for name in ("'max'", *hardware.THREADS):
        assert name in str(error.value)


THREADS_BEFORE_THE_FIRST_OP = """
first = hardware.apply_threads("one_per_op")
pools = [tf.config.threading.get_intra_op_parallelism_threads(),
         tf.config.threading.get_inter_op_parallelism_threads()]
tf.constant(1.0) + 1.0
later = hardware.apply_threads("tensorflow")  # leaves the pools as they are
"""
THREADS_AFTER_THE_FIRST_OP = """
tf.constant(1.0) + 1.0
first = hardware.apply_threads("one_per_op")  # too late: TensorFlow's pools stay
pools = [tf.config.threading.get_intra_op_parallelism_threads(),
         tf.config.threading.get_inter_op_parallelism_threads()]
later = hardware.threads_in_effect()
"""


@pytest.mark.parametrize(
    "body, first, pools, warned",
    [
        (THREADS_BEFORE_THE_FIRST_OP, "one_per_op", "one_per_op", False),
        (THREADS_AFTER_THE_FIRST_OP, "tensorflow", "tensorflow", True),
    ],
)
def test_apply_threads_sizes_the_pools_only_before_tensorflow_starts(body, first, pools, warned):
    """Each in a fresh process: TensorFlow's pools are per process and fixed at its first op."""
    script = "\n".join(
        [
            "import json, logging, tensorflow as tf",
            "from training import hardware",
            "logging.basicConfig(level=logging.WARNING)",
            body,
            "print(json.dumps({'first': first, 'pools': pools, 'later': later,",
            "                  'cores': hardware.cpu_cores()}))",
        ]
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"] == report["later"] == first
    expected_pools = [1, report["cores"]] if pools == "one_per_op" else [0, 0]
    assert report["pools"] == expected_pools
    assert ("threads one_per_op cannot apply" in result.stderr) == warned


def lenet5_and_data(num_examples=32):
    shape = zoo.model_info("lenet5").default_input_shape
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(num_examples, *shape)).astype("float32") / 255.0
    labels = np.eye(10, dtype="float32")[np.arange(num_examples) % 10]
    model = zoo.create("lenet5", input_shape=shape, num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.CategoricalCrossentropy())
    return model, images, labels


def test_mixed_float16_model_gets_loss_scaling():
    hardware.apply_precision("mixed_float16")
    model, images, labels = lenet5_and_data()
    # Keras 3's compile wraps the optimizer itself when the model's policy is mixed_float16.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == 4
    # The dynamic scale starts at 2**15 and only halves on overflow, which these steps lack.
    assert float(model.optimizer.dynamic_scale.numpy()) == 2.0**15
    assert model.get_layer("predictions_dense").compute_dtype == "float16"
    assert model.predict(images[:2], verbose=0).dtype == np.float32


def test_mixed_bfloat16_trains_with_float32_outputs_and_no_loss_scaling():
    hardware.apply_precision("mixed_bfloat16")
    model, images, labels = lenet5_and_data()
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    dense = model.get_layer("predictions_dense")
    assert (dense.compute_dtype, dense.variable_dtype) == ("bfloat16", "float32")
    # The softmax runs in float32, so the probabilities are float32 and sum to one closely.
    assert model.get_layer("predictions").compute_dtype == "float32"
    probabilities = model.predict(images[:4], verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def grappler_bfloat16_is_on():
    return tf.config.optimizer.get_experimental_options().get(hardware.GRAPPLER_BFLOAT16, False)


@pytest.mark.parametrize(
    "capabilities, cpu_bf16", [([], False), ([(8, 0)], True), ([(8, 0)], False)]
)
def test_onednn_bfloat16_is_refused_off_a_bfloat16_cpu(monkeypatch, capabilities, cpu_bf16):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: capabilities)
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: cpu_bf16)
    for call in (hardware.resolve_precision, hardware.apply_precision):
        with pytest.raises(ValueError, match="native bfloat16.*Use precision auto"):
            call("onednn_bfloat16")
    assert not grappler_bfloat16_is_on()


def test_onednn_bfloat16_builds_float32_models_and_turns_the_rewrite_on_and_off(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    assert hardware.apply_precision("onednn_bfloat16") == "onednn_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    assert grappler_bfloat16_is_on()
    assert hardware.apply_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert not grappler_bfloat16_is_on()


@pytest.mark.skipif(not hardware.cpu_supports_bf16(), reason="this CPU has no native bfloat16")
def test_onednn_bfloat16_rewrites_the_graph_to_bfloat16():
    """The float32 model's traced functions compute in bfloat16: same weights, outputs that
    differ from float32's by bfloat16's rounding (8 bits of mantissa), not more."""
    images = np.random.default_rng(0).uniform(size=(16, 32, 32, 1)).astype("float32")
    model = zoo.create(
        "lenet5", input_shape=(32, 32, 1), num_classes=10, classifier_activation=None
    )
    weights = model.get_weights()
    float32 = model.predict(images, verbose=0)

    hardware.apply_precision("onednn_bfloat16")
    rewritten = zoo.create(
        "lenet5", input_shape=(32, 32, 1), num_classes=10, classifier_activation=None
    )
    rewritten.set_weights(weights)
    assert rewritten.get_layer("predictions_dense").compute_dtype == "float32"
    outputs = rewritten.predict(images, verbose=0)
    assert outputs.dtype == np.float32
    difference = np.abs(outputs - float32).max() / np.abs(float32).max()
    assert 1e-4 < difference < 5e-2


def test_one_device_and_auto_without_gpus_are_the_default_strategy():
    for mode in ("one_device", "auto"):
        strategy = hardware.resolve_strategy(mode)
        assert strategy is tf.distribute.get_strategy()
        assert strategy.num_replicas_in_sync == 1


def test_mirrored_without_gpus_uses_the_logical_cpus():
    strategy = hardware.resolve_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    assert strategy.num_replicas_in_sync == len(cpus)
    devices = strategy.extended.worker_devices
    assert [tf.DeviceSpec.from_string(d).to_string() for d in devices] == [
        tf.DeviceSpec.from_string(f"/job:localhost/replica:0/task:0{cpu}").to_string()
        for cpu in cpus
    ]


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        hardware.resolve_strategy("parameter_server")
    for name in hardware.STRATEGIES:
        assert name in str(error.value)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "TF_CONFIG environment variable"),
        ("{not json", "not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "'cluster' with a 'worker' list"),
        (json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}), "'task' whose 'type'"),
        (
            json.dumps(
                {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}
            ),
            "'task' whose 'type'",
        ),
        (
            json.dumps(
                {
                    "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                    "task": {"type": "worker", "index": 2},
                }
            ),
            "integer in [0, 2)",
        ),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    monkeypatch.setattr(multi_worker_fix, "apply", lambda: pytest.fail("fix applied"))
    with pytest.raises(ValueError, match=re.escape(message)):
        hardware.resolve_strategy("multi_worker")


def replicas(count):
    return types.SimpleNamespace(num_replicas_in_sync=count, cluster_resolver=None)


def test_global_batch_size_is_per_replica_times_replicas():
    assert hardware.global_batch_size(64, replicas(1)) == 64
    assert hardware.global_batch_size(64, replicas(4)) == 256
    assert hardware.global_batch_size(32, tf.distribute.get_strategy()) == 32
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="per_replica_batch must be an integer >= 1"):
            hardware.global_batch_size(bad, replicas(2))


def test_scaled_learning_rate():
    assert hardware.scaled_learning_rate(0.1, 4) == 0.1
    assert hardware.scaled_learning_rate(0.1, 4, rule=None) == 0.1
    assert hardware.scaled_learning_rate(0.1, 4, rule="linear") == pytest.approx(0.4)
    assert hardware.scaled_learning_rate(0.05, 1, rule="linear") == 0.05
    with pytest.raises(ValueError, match="'sqrt'.*Valid: None, linear"):
        hardware.scaled_learning_rate(0.1, 4, rule="sqrt")
    with pytest.raises(ValueError, match="replicas must be an integer >= 1"):
        hardware.scaled_learning_rate(0.1, 0, rule="linear")
    with pytest.raises(ValueError, match="base_lr must be > 0"):
        hardware.scaled_learning_rate(-0.1, 2)


def task(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(num_replicas_in_sync=2, cluster_resolver=resolver)


WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
CHIEF_AND_WORKER = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}


@pytest.mark.parametrize(
    "strategy, chief, subdir",
    [
        (tf.distribute.get_strategy(), True, None),
        (task(WORKERS, "worker", 0), True, None),
        (task(WORKERS, "worker", 1), False, "workertemp_worker_1"),
        (task(CHIEF_AND_WORKER, "chief", 0), True, None),
        (task(CHIEF_AND_WORKER, "worker", 0), False, "workertemp_worker_0"),
    ],
)
def test_chief_writes_the_run_dir_and_other_workers_their_own(tmp_path, strategy, chief, subdir):
    assert hardware.is_chief(strategy) is chief
    expected = tmp_path if subdir is None else tmp_path / subdir
    assert hardware.worker_dir(tmp_path, strategy) == expected
    assert hardware.worker_dir(str(tmp_path), strategy) == expected


@pytest.fixture
def keras_trainer(monkeypatch):
    """Keras' own trainer functions, restored after the test whatever it installs."""
    monkeypatch.setattr(
        tf_trainer.TensorFlowTrainer,
        "_maybe_symbolic_build",
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build,
    )
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", tf_trainer.reduce_per_replica)
    return tf_trainer


@pytest.mark.parametrize(
    "version, needed",
    [
        ("3.6.0", False),
        ("3.7.0", True),
        ("3.15.1", True),
        ("3.15.2", False),
        ("4.0.0", False),
    ],
)
def test_the_fix_is_tied_to_the_broken_keras_versions(version, needed):
    assert multi_worker_fix.is_needed(version) is needed


def test_the_fix_is_needed_for_the_pinned_keras():
    assert keras.version() == "3.15.1"
    assert multi_worker_fix.is_needed()


def test_apply_installs_the_fix_once(keras_trainer):
    keras_build = keras_trainer.TensorFlowTrainer._maybe_symbolic_build
    keras_reduce = keras_trainer.reduce_per_replica
    assert keras_reduce.__module__ == "keras.src.backend.tensorflow.trainer"  # not at import
    assert multi_worker_fix.apply() is True
    assert multi_worker_fix.apply() is True
    assert (
        keras_trainer.TensorFlowTrainer._maybe_symbolic_build
        is multi_worker_fix._maybe_symbolic_build
    )
    assert keras_trainer.reduce_per_replica is multi_worker_fix._reduce_per_replica
    # The fix delegates to Keras' own functions, never to itself.
    assert multi_worker_fix._ORIGINALS == {
        "_maybe_symbolic_build": keras_build,
        "reduce_per_replica": keras_reduce,
    }


def test_apply_leaves_other_keras_versions_alone(keras_trainer, monkeypatch):
    keras_reduce = keras_trainer.reduce_per_replica
    monkeypatch.setattr(keras, "version", lambda: "3.16.0")
    assert multi_worker_fix.apply() is False
    assert keras_trainer.reduce_per_replica is keras_reduce


def test_patched_functions_change_nothing_outside_multi_worker(keras_trainer):
    multi_worker_fix.apply()
    strategy = hardware.resolve_strategy("mirrored")
    with strategy.scope():
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.ones((8, 3), "float32")
    history = model.fit(x, np.zeros((8, 2), "float32"), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    value = tf.constant([1.0, 3.0])
    assert keras_trainer.reduce_per_replica(value, strategy, "auto") is value
