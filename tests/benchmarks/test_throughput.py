"""benchmarks.throughput.Case measures each precision as the trainer runs it: onednn_bfloat16's
graph rewrite is on while its model's functions run, whatever cases were built before; and the
served measurement times the model as the trainer exports it."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import throughput
from training import hardware


def graph_rewrite_is_on():
    return tf.config.optimizer.get_experimental_options().get(hardware.GRAPPLER_BFLOAT16, False)


@pytest.mark.skipif(not hardware.cpu_supports_bf16(), reason="this CPU has no native bfloat16")
def test_onednn_bfloat16_case_runs_with_the_rewrite_on_and_float32_with_it_off():
    kwargs = dict(measurements=("infer/memory",), augmentation="none")
    rewritten = throughput.Case("lenet5", "onednn_bfloat16", 0.05, **kwargs)
    plain = throughput.Case("lenet5", "float32", 0.05, **kwargs)
    network = rewritten.model.get_layer("lenet5")
    assert network.get_layer("predictions_dense").compute_dtype == "float32"
    assert not graph_rewrite_is_on()  # the last case built, float32, turned it off
    assert rewritten.measure("infer/memory") > 0
    assert graph_rewrite_is_on()
    assert plain.measure("infer/memory") > 0
    assert not graph_rewrite_is_on()


def test_set_graph_rewrite_follows_the_precision():
    for precision, on in [("onednn_bfloat16", True), ("mixed_bfloat16", False), ("float32", False)]:
        hardware.set_graph_rewrite(precision)
        assert graph_rewrite_is_on() == on


def test_the_served_measurement_times_the_exported_model_on_uint8_images():
    case = throughput.Case(
        "lenet5", "float32", 0.05, measurements=(throughput.SERVED,), augmentation="none"
    )
    assert case.raw_images.dtype == np.uint8
    assert case.raw_images.shape == (case.batch, 32, 32, 1)
    served = case.serve(image=case.raw_images)
    expected = case.model.predict(case.raw_images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(served["class_id"].numpy(), expected.argmax(axis=-1))
    # Timed per call: one batch a mark.
    assert case.steps(throughput.SERVED) == case.marks[throughput.SERVED]
    assert case.measure(throughput.SERVED) > 0


@pytest.fixture
def two_bf16_cores_no_gpu(monkeypatch):
    """A machine where auto picks one thread per op at small batches."""
    monkeypatch.setattr(hardware, "cpu_cores", lambda: 2)
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])


def test_auto_threads_resolve_for_the_cases_as_the_trainer_resolves_them(two_bf16_cores_no_gpu):
    small = [((32, 32, 1), 16, "mixed_bfloat16", 1), ((32, 32, 3), 32, "mixed_bfloat16", 1)]
    assert throughput.threads_for("auto", small) == "one_per_op"
    whole = [((32, 32, 3), 128, "mixed_bfloat16", 1)]
    assert throughput.threads_for("auto", whole) == "tensorflow"
    assert throughput.threads_for("auto", [((32, 32, 3), 32, "float32", 1)]) == "tensorflow"
    # Split batches: one chain per core, each op on one thread, float32 and large inputs too.
    split = [((32, 32, 3), 128, "mixed_bfloat16", 2), ((96, 96, 3), 32, "float32", 2)]
    assert throughput.threads_for("auto", split) == "one_per_op"
    assert throughput.sub_batches_for(None, 32, "auto") == 2
    assert throughput.sub_batches_for(None, 16, "auto") == 1
    assert throughput.sub_batches_for(None, 32, "tensorflow") == 1
    with pytest.raises(SystemExit, match="--sub-batches 64 is more than the batch, 32"):
        throughput.sub_batches_for(64, 32, "auto")
    assert throughput.threads_for("one_per_op", [((96, 96, 3), 32, "float32", 1)]) == "one_per_op"


def test_cases_auto_resolves_apart_are_refused_before_anything_runs(
    two_bf16_cores_no_gpu, tmp_path, monkeypatch
):
    monkeypatch.setattr(throughput.common, "RESULTS_DIR", tmp_path)
    # Batches of 16 stay whole on 2 cores, where one thread per op is for small bfloat16 steps.
    models = ["--models", "lenet5,mobilenet_v2", "--precisions", "mixed_bfloat16"]
    with pytest.raises(
        SystemExit,
        match="32x32 batch 16 mixed_bfloat16 in 1: one_per_op, "
        "96x96 batch 16 mixed_bfloat16 in 1: tensorflow",
    ) as refused:
        throughput.main([*models, "--batch", "16", "--rounds", "1"])
    assert "pass --threads one of tensorflow, one_per_op" in str(refused.value)
    # One model at both precisions: bfloat16 convolutions take one thread each, float32 both.
    with pytest.raises(SystemExit, match="32x32 batch 16 float32 in 1: tensorflow, 32x32 batch"):
        throughput.main(["--models", "lenet5", "--batch", "16", "--rounds", "1"])
    # Split in two, both resolve alike; asked to keep the batches whole, they part again.
    with pytest.raises(SystemExit, match="batch 32 float32 in 1: tensorflow"):
        throughput.main(["--models", "lenet5", "--batch", "32", "--sub-batches", "1"])
    assert list(tmp_path.iterdir()) == []
