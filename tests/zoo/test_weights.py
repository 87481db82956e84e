"""Weight loading: the offline "imagenet" path and copy_weights' refusal of a different network."""

import os
import subprocess
import sys
import textwrap

import pytest

import zoo
from zoo.weights import copy_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OFFLINE_IMAGENET = textwrap.dedent(
    """
    import time
    import zoo

    start = time.monotonic()
    try:
        zoo.create("resnet50", weights="imagenet")
    except RuntimeError as error:
        print(f"seconds={time.monotonic() - start:.1f}")
        print(error)
    else:
        print("loaded")
    """
)


def run_offline(script, keras_home, *args):
    """`script` in a fresh interpreter (Keras reads KERAS_HOME when it is imported) whose
    downloads fail at once: the proxy variables send urllib to a closed local port, so no
    traffic leaves the machine even where the network is up."""
    env = {
        **os.environ,
        "KERAS_HOME": str(keras_home),
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "no_proxy": "",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # a fresh interpreter imports TensorFlow and builds two ResNet-50s
def test_imagenet_weights_offline_fail_with_the_cache_location(tmp_path):
    keras_home = tmp_path / "keras_home"
    run = run_offline(OFFLINE_IMAGENET, keras_home)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "loaded" not in run.stdout
    assert "could not load ImageNet weights" in run.stdout
    assert str(keras_home / "models") in run.stdout
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in run.stdout


def test_copy_weights_refuses_a_different_layer_count():
    source = zoo.create("resnet20", input_shape=(8, 8, 3))
    target = zoo.create("resnet32", input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"resnet20 has 39 layers with weights, resnet32 has 63"):
        copy_weights(source, target)


def test_copy_weights_refuses_different_shapes_and_names_the_layers():
    source = zoo.create("resnet20", input_shape=(8, 8, 3))
    target = zoo.create("resnet20", input_shape=(8, 8, 3), width=2)
    with pytest.raises(
        ValueError,
        match=r"from layer conv1_conv .*\(3, 3, 3, 16\).*"
        r"to layer conv1_conv .*\(3, 3, 3, 32\).*differ",
    ):
        copy_weights(source, target)


CACHED_IMAGENET_AT_ALPHA = textwrap.dedent(
    """
    import sys
    import numpy as np
    import zoo

    model = zoo.create(
        "mobilenet", alpha=0.5, include_top=False, weights="imagenet", input_shape=(32, 32, 3)
    )
    np.savez(sys.argv[1], *model.get_weights())
    """
)


@pytest.mark.slow  # a fresh interpreter: Keras reads KERAS_HOME when it is imported
def test_imagenet_weights_follow_the_width_knobs(tmp_path):
    # keras.applications checks no hash for MobileNet's files, so a file made here stands in for
    # the real MobileNet 0.5 weights, offline; a width Keras has no weights for is refused by it.
    import h5py
    import keras
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(5)
    reference = keras.applications.MobileNet(
        alpha=0.5, include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    (tmp_path / "models").mkdir()
    with h5py.File(tmp_path / "models" / "mobilenet_5_0_224_tf_no_top.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    saved = tmp_path / "loaded.npz"
    run = run_offline(CACHED_IMAGENET_AT_ALPHA, tmp_path, str(saved))
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = np.load(saved)
    expected = reference.get_weights()
    assert len(loaded.files) == len(expected)
    for index, want in enumerate(expected):
        np.testing.assert_array_equal(loaded[f"arr_{index}"], want)

    with pytest.raises(ValueError, match="alpha can be one of"):
        zoo.create("mobilenet", alpha=0.3, include_top=False, weights="imagenet")
