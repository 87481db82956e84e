import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib

import pytest

# Before any test module imports TensorFlow: the suite runs with the kernels the trainer uses
# (training.onednn).
import training  # noqa: E402, F401

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets():
    """../shared/datasets, or a skip where it does not exist (a user's machine, not CI)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from a clean Keras session, the float32 policy and no grappler
    bfloat16 rewrite."""
    import keras

    from training import hardware

    yield
    hardware.apply_precision("float32")
    keras.backend.clear_session()


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory, shared_datasets):
    """A tfds data directory holding MNIST, prepared from ../shared once for the whole run:
    pytest-xdist's workers are sessions of their own, and preparing takes 25-40 s."""
    import fcntl

    from training import data

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, shared by its workers
    path = root / "tfds-mnist"
    with open(root / "tfds-mnist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker prepares; the others wait, then reuse
        data.load_dataset("mnist", data_dir=path, manual_dir=shared_datasets / "mnist")
    return path
