"""benchmarks.ops compares like with like: each op computes the same values in TensorFlow and
PyTorch, and the workers time every op."""

import argparse

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import ops

SHAPE = (4, 5, 5, 3)


@pytest.mark.parametrize("op", ops.OPS)
def test_each_op_computes_the_same_values_in_both_frameworks(op):
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    other = ops.operand(SHAPE)
    expected = ops.tensorflow_ops(other, "float32")[op](tf.constant(images)).numpy()
    with torch.no_grad():
        result = ops.torch_ops(other, "float32")[op](ops.to_torch(images, "float32"))
    np.testing.assert_allclose(result.permute(0, 2, 3, 1).numpy(), expected, atol=1e-4)


def test_the_batchnorm_gradient_is_the_gradient_of_the_batchnorm():
    """The TensorFlow side's gradient op against autodiff of its forward op."""
    other = ops.operand(SHAPE)
    table = ops.tensorflow_ops(other, "float32")
    upstream = tf.constant(np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32))
    features = tf.constant(other)
    with tf.GradientTape() as tape:
        tape.watch(features)
        outputs = table["batchnorm"](features)
    expected = tape.gradient(outputs, features, output_gradients=upstream)
    np.testing.assert_allclose(table["batchnorm_gradient"](upstream), expected, atol=1e-4)


def settings(**overrides):
    return argparse.Namespace(
        **{"threads": 1, "shape": [2, 4, 4, 3], "chain": 2, "repeats": 2, **overrides}
    )


@pytest.mark.parametrize("framework", ops.FRAMEWORKS)
def test_a_worker_times_every_op(framework):
    if framework == "torch":
        pytest.importorskip("torch")
    figures = ops.measure(framework, "bfloat16", settings())
    assert set(figures) == set(ops.OPS)
    assert all(ms > 0 for ms in figures.values())


@pytest.mark.parametrize(
    "bad, named",
    [
        (["--shape", "1,2,3"], "--shape"),
        (["--shape", "a,b,c,d"], "--shape"),
        (["--dtypes", "float16"], "given: float16"),
        (["--dtypes", ","], "given: none"),
        (["--chain", "0"], "--chain"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(bad, named, capsys):
    with pytest.raises(SystemExit):
        ops.parse_args(bad)
    assert named in capsys.readouterr().err
