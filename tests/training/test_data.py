import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from training import data

SPLITS = ("train", "validation", "test")
# From shared/datasets/README.md.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def arrays(dataset):
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.stack(images), np.array(labels)


def labels_of(dataset):
    return np.concatenate([y for y in dataset.map(lambda x, y: y).batch(8192).as_numpy_iterator()])


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def test_digits_split_sizes_stratification_and_partition(digits):
    from sklearn.datasets import load_digits

    assert digits.num_examples == {"train": 1437, "validation": 180, "test": 180}
    assert digits.image_shape == (8, 8, 1)
    assert digits.class_names == [str(c) for c in range(10)]
    assert digits.flip_safe is False
    class_counts = np.bincount(load_digits().target)
    parts = {split: arrays(getattr(digits, split)) for split in SPLITS}
    for split, (images, labels) in parts.items():
        assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
        assert labels.dtype == np.int64 and len(labels) == digits.num_examples[split]
    assert np.bincount(parts["test"][1]).tolist() == [18] * 10
    # Stratified: every class within one example of its share of the split.
    for split in ("validation", "test"):
        expected = class_counts * 180 / 1797
        assert np.all(np.abs(np.bincount(parts[split][1], minlength=10) - expected) <= 1)
    # The three splits partition the 1797 images, scaled from 0..16 to 0..255.
    everything = sorted(
        (x.tobytes(), y) for images, labels in parts.values() for x, y in zip(images, labels)
    )
    source = load_digits()
    scaled = np.round(source.images * 255 / 16).astype(np.uint8)[..., None]
    assert everything == sorted((x.tobytes(), y) for x, y in zip(scaled, source.target))
    assert max(images.max() for images, _ in parts.values()) == 255


def test_splits_are_deterministic_for_a_seed(digits):
    again = data.load_dataset("digits", seed=0)
    other = data.load_dataset("digits", seed=1)
    for split in ("validation", "test"):
        images, labels = arrays(getattr(digits, split))
        same_images, same_labels = arrays(getattr(again, split))
        np.testing.assert_array_equal(images, same_images)
        np.testing.assert_array_equal(labels, same_labels)
        assert not np.array_equal(images, arrays(getattr(other, split))[0])


@pytest.mark.parametrize(
    "kwargs", [{"val_split": -0.1}, {"test_split": 1.0}, {"val_split": 0.5, "test_split": 0.5}]
)
def test_bad_split_fractions_are_refused(kwargs):
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("digits", **kwargs)


def test_unknown_name_lists_valid_sources_and_close_tfds_names():
    with pytest.raises(ValueError) as error:
        data.load_dataset("mnsit")
    message = str(error.value)
    assert "'mnsit'" in message and "mnist" in message and "kmnist" in message
    assert "'digits'" in message and ".npz" in message and "folder" in message


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.load_dataset(str(tmp_path / "missing.npz"))


def test_offline_tfds_download_fails_fast_with_what_to_get(tmp_path):
    if data._reachable("storage.googleapis.com"):
        pytest.skip("the MNIST download host is reachable: this test is for offline machines")
    with pytest.raises(ConnectionError) as error:
        data.load_dataset("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "--manual-dir" in message
    assert all(name in message for name in MNIST_FILES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConnectionError, match=f"{empty} lacks them"):
        data.load_dataset("mnist", data_dir=tmp_path, manual_dir=empty)


@pytest.fixture(scope="session")
def mnist(shared_datasets, mnist_data_dir):
    return data.load_dataset("mnist", data_dir=mnist_data_dir, manual_dir=shared_datasets / "mnist")


@pytest.mark.slow
def test_mnist_prepares_offline_and_carves_validation_from_train(mnist):
    assert mnist.num_examples == {"train": 54000, "validation": 6000, "test": 10000}
    assert mnist.image_shape == (28, 28, 1)
    assert mnist.class_names == [str(c) for c in range(10)]
    assert mnist.flip_safe is False
    assert np.bincount(labels_of(mnist.test)).tolist() == MNIST_TEST_COUNTS
    validation = np.bincount(labels_of(mnist.validation), minlength=10)
    # Carved from train, stratified: each class within one example of a tenth of its count.
    assert np.all(np.abs(validation - np.array(MNIST_TRAIN_COUNTS) / 10) <= 1)
    image, label = next(iter(mnist.train))
    assert image.dtype == tf.uint8 and image.shape == (28, 28, 1) and label.dtype == tf.int64
    # Carved splits keep their size known, so Keras shows a total from the first epoch on.
    assert int(mnist.train.cardinality()) == 54000
    assert int(mnist.validation.cardinality()) == 6000


def test_sign_language_folder(shared_datasets):
    splits = data.load_dataset(shared_datasets / "sign_language_digits")
    assert splits.class_names == [str(c) for c in range(10)]
    assert splits.image_shape == (100, 100, 3)
    assert splits.flip_safe is True
    assert splits.skipped_files == []
    assert sum(splits.num_examples.values()) == 2062
    assert splits.num_examples == {"train": 1650, "validation": 206, "test": 206}
    folder_counts = [
        len(list((shared_datasets / "sign_language_digits" / str(c)).iterdir())) for c in range(10)
    ]
    counts = np.zeros(10, dtype=int)
    for split in SPLITS:
        # Every image, the three 3024x3024 photos included, arrives resized to 100x100.
        for images, labels in getattr(splits, split).batch(512).as_numpy_iterator():
            assert images.shape[1:] == (100, 100, 3) and images.dtype == np.uint8
            counts += np.bincount(labels, minlength=10)
    assert counts.tolist() == folder_counts


def test_unreadable_files_are_skipped_with_a_warning(shared_datasets, tmp_path, caplog):
    source = shared_datasets / "sign_language_digits"
    for name in ("0", "1"):
        (tmp_path / name).mkdir()
        for path in sorted((source / name).iterdir())[:5]:
            shutil.copy(path, tmp_path / name / path.name)
    truncated = tmp_path / "0" / "truncated.jpg"
    truncated.write_bytes(next((source / "0").iterdir()).read_bytes()[:2000])
    not_png = tmp_path / "1" / "notes.png"
    not_png.write_text("not an image")
    (tmp_path / "README.txt").write_text("ignored: not in a class folder, not an image")

    with caplog.at_level(logging.WARNING, logger="training.data"):
        splits = data.load_dataset(tmp_path, val_split=0.2, test_split=0.2)
    assert sorted(splits.skipped_files) == sorted([str(truncated), str(not_png)])
    assert "Skipped 2 unreadable image files" in caplog.text
    assert "truncated.jpg" in caplog.text and "notes.png" in caplog.text
    assert splits.num_examples == {"train": 6, "validation": 2, "test": 2}
    labels = np.concatenate([arrays(getattr(splits, split))[1] for split in SPLITS])
    assert np.bincount(labels).tolist() == [5, 5]


def write_image(path, image):
    encoded = {".png": tf.io.encode_png, ".jpg": tf.io.encode_jpeg}[path.suffix](image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.numpy())


def test_train_validation_test_folders_are_used_as_given(tmp_path):
    # Class "a" is bright, class "b" dark, so labels can be checked from the pixels.
    counts = {"train": 4, "validation": 2, "test": 3}
    for split, count in counts.items():
        for name, value in (("a", 200), ("b", 40)):
            for index in range(count):
                write_image(
                    tmp_path / split / name / f"{index}.png", np.full((12, 16, 3), value, np.uint8)
                )
    # A gray image of another size: resized to the common 12x16 and made RGB.
    write_image(tmp_path / "train" / "b" / "odd.png", np.full((30, 30, 1), 40, np.uint8))
    splits = data.load_dataset(tmp_path)
    assert splits.class_names == ["a", "b"]
    assert splits.image_shape == (12, 16, 3)
    assert splits.num_examples == {"train": 9, "validation": 4, "test": 6}
    for split in SPLITS:
        images, labels = arrays(getattr(splits, split))
        assert images.shape[1:] == (12, 16, 3)
        np.testing.assert_array_equal(images.mean(axis=(1, 2, 3)), np.where(labels == 0, 200, 40))


def test_npz_source_carves_validation_or_uses_its_own(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (50, 12, 12), dtype=np.uint8)
    y_train = np.repeat(np.arange(5), 10)
    x_test = rng.integers(0, 256, (20, 12, 12), dtype=np.uint8)
    y_test = np.repeat(np.arange(5), 4)
    path = tmp_path / "small.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    splits = data.load_dataset(str(path), val_split=0.2)
    assert splits.num_examples == {"train": 40, "validation": 10, "test": 20}
    assert splits.image_shape == (12, 12, 1) and splits.flip_safe is True
    assert splits.class_names == ["0", "1", "2", "3", "4"]
    assert np.bincount(arrays(splits.validation)[1]).tolist() == [2] * 5
    test_images, test_labels = arrays(splits.test)
    np.testing.assert_array_equal(test_images[..., 0], x_test)
    np.testing.assert_array_equal(test_labels, y_test)

    with_val = tmp_path / "with_val.npz"
    np.savez(
        with_val,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        x_val=x_test[:5],
        y_val=y_test[:5],
    )
    assert data.load_dataset(with_val).num_examples == {"train": 50, "validation": 5, "test": 20}
    broken = tmp_path / "broken.npz"
    np.savez(broken, x_train=x_train, y_train=y_train)
    with pytest.raises(ValueError, match=r"lacks \['x_test', 'y_test'\]"):
        data.load_dataset(broken)


def single(image, label=0):
    return tf.data.Dataset.from_tensors(
        (tf.constant(image, tf.uint8), tf.constant(label, tf.int64))
    )


def test_fit_to_input_resizes_and_converts_channels(digits):
    fitted = data.fit_to_input(digits.train, (32, 32, 3))
    images, _ = arrays(fitted)
    assert images.dtype == np.float32 and images.shape == (1437, 32, 32, 3)
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 200
    np.testing.assert_array_equal(images[..., 0], images[..., 2])

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    gray, _ = next(iter(data.fit_to_input(single(red), (4, 4, 1))))
    np.testing.assert_allclose(gray.numpy(), np.full((4, 4, 1), 0.2989 * 255), atol=0.5)


def test_fit_to_input_in_batches_matches_image_by_image_and_keeps_the_count(digits):
    fitted = data.fit_to_input(digits.train, (32, 32, 3))
    assert int(fitted.cardinality()) == 1437  # Keras' steps per epoch
    one_by_one = digits.train.map(lambda image, label: data.fit_images(image, (32, 32, 3)))
    np.testing.assert_array_equal(arrays(fitted)[0], np.stack(list(one_by_one.as_numpy_iterator())))
    # Images whose size is known only per image are fitted one at a time.
    sizes = tf.data.Dataset.from_generator(
        lambda: ((np.full((n, n, 1), n, np.uint8), 0) for n in (4, 6)),
        output_signature=(tf.TensorSpec((None, None, 1), tf.uint8), tf.TensorSpec((), tf.int64)),
    )
    images, _ = arrays(data.fit_to_input(sizes, (5, 5, 1)))
    np.testing.assert_allclose(images[..., 0], [np.full((5, 5), 4), np.full((5, 5), 6)])


def test_fit_to_input_pads_and_crops_without_scaling():
    image = np.arange(1, 37, dtype=np.uint8).reshape(6, 6, 1)
    padded, _ = next(iter(data.fit_to_input(single(image), (10, 10, 1), method="pad")))
    np.testing.assert_array_equal(padded.numpy()[2:8, 2:8], image)
    assert padded.numpy().sum() == image.sum()
    cropped, _ = next(iter(data.fit_to_input(single(image), (4, 4, 1), method="pad")))
    np.testing.assert_array_equal(cropped.numpy(), image[1:5, 1:5])
    with pytest.raises(ValueError, match="'stretch'"):
        data.fit_to_input(single(image), (4, 4, 1), method="stretch")


def test_channel_statistics_match_numpy(digits):
    fitted = data.fit_to_input(digits.train, (16, 16, 3))
    mean, std = data.channel_statistics(fitted)
    images, _ = arrays(fitted)
    assert mean.shape == std.shape == (3,)
    np.testing.assert_allclose(mean, images.mean(axis=(0, 1, 2), dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(std, images.std(axis=(0, 1, 2), dtype=np.float64), rtol=1e-5)


def counted(reads, count=100):
    """`count` (8x8 image, label) examples, appending each index to `reads` as it is read."""

    def examples():
        for index in range(count):
            reads.append(index)
            yield np.full((8, 8, 1), index, np.uint8), np.int64(index % 2)

    spec = (tf.TensorSpec((8, 8, 1), tf.uint8), tf.TensorSpec((), tf.int64))
    dataset = tf.data.Dataset.from_generator(examples, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


@pytest.mark.parametrize("cache", [True, False])
def test_a_stored_split_is_read_once_for_the_statistics_and_every_pipeline(cache):
    import keras

    reads = []
    stored = data.stored(data.fit_to_input(counted(reads), (8, 8, 1)), cache=cache)
    assert stored.element_spec[0].dtype == tf.uint8
    mean, std = data.channel_statistics(stored)
    np.testing.assert_allclose([mean[0], std[0]], [49.5, np.arange(100).std()], rtol=1e-6)
    assert len(reads) == 100
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    model.compile("sgd", "categorical_crossentropy", steps_per_execution=4)
    pipelines = [
        data.make_pipeline(stored, batch_size=10, num_classes=2, training=training)
        for training in (True, False)
    ]
    model.fit(pipelines[0], validation_data=pipelines[1], epochs=2, verbose=0, shuffle=False)
    # Cached, two epochs of training and validation read what the statistics' pass kept.
    assert len(reads) == (100 if cache else 100 + 4 * 100)


def test_an_evaluation_pipeline_keeps_its_batches_after_the_first_pass():
    reads = []
    split = data.stored(data.fit_to_input(counted(reads), (8, 8, 1)), cache=False)
    kept = data.make_pipeline(split, batch_size=30, num_classes=2, training=False, keep=True)
    first = list(kept.as_numpy_iterator())
    assert len(reads) == 100
    again = list(kept.as_numpy_iterator())
    assert len(reads) == 100  # the second pass read the kept batches, not the split
    made = list(data.make_pipeline(split, batch_size=30, num_classes=2, training=False))
    assert [len(x) for x, _ in again] == [30, 30, 30, 10]
    for (x, y), (x_again, y_again), (x_made, y_made) in zip(first, again, made):
        np.testing.assert_array_equal(x_again, x)
        np.testing.assert_array_equal(x_made, x)
        np.testing.assert_array_equal(y_again, y)
        np.testing.assert_array_equal(y_made, y)
    assert kept.options().autotune.enabled is False


@pytest.mark.parametrize("binary", [False, True])
def test_a_training_pipeline_keeps_its_examples_and_still_reshuffles_every_epoch(binary):
    reads = []
    split = data.stored(data.fit_to_input(counted(reads), (8, 8, 1)), cache=False)

    def passes(keep, count=3):
        pipeline = data.make_pipeline(
            split, batch_size=30, num_classes=2, training=True, binary=binary, seed=4, keep=keep
        )
        return [list(pipeline.as_numpy_iterator()) for _ in range(count)]

    kept = passes(keep=True)
    assert len(reads) == 100  # three epochs, the split read once
    made = passes(keep=False)
    assert len(reads) == 400
    for epoch, epoch_made in zip(kept, made):  # the same batches, epoch by epoch
        assert [len(x) for x, _ in epoch] == [30, 30, 30, 10]
        for (x, y), (x_made, y_made) in zip(epoch, epoch_made):
            np.testing.assert_array_equal(x, x_made)
            np.testing.assert_array_equal(y, y_made)
            assert x.dtype == np.float32 and y.shape == (len(x), 1 if binary else 2)
    orders = [np.concatenate([x[:, 0, 0, 0] for x, _ in epoch]) for epoch in kept]
    assert sorted(orders[0]) == list(range(100))
    assert not np.array_equal(orders[0], orders[1])
    grown = tf.data.Dataset.from_generator(
        lambda: iter([(np.zeros((2, 3, 1), np.uint8), 0)]),
        output_signature=(tf.TensorSpec((None, None, 1), tf.uint8), tf.TensorSpec((), tf.int64)),
    )
    with pytest.raises(ValueError, match="keep needs images of one shape"):
        data.make_pipeline(grown, batch_size=2, num_classes=2, training=True, keep=True)


def test_pipelines_keep_up_to_their_memory_budget(monkeypatch):
    monkeypatch.setattr(data, "KEPT_BYTES", 10 * 32 * 32 * 3 * 4)
    assert data.can_keep(10, (32, 32, 3)) and not data.can_keep(11, (32, 32, 3))
    assert data.can_keep(30, (32, 32, 1)) and not data.can_keep(31, (32, 32, 1))


def pipeline_labels(pipeline):
    return np.concatenate([np.argmax(y, axis=1) for _, y in pipeline.as_numpy_iterator()])


def test_training_pipeline_batches_shuffles_per_epoch_and_augments(digits):
    fitted = data.fit_to_input(digits.train, (8, 8, 1))
    source_images, source_labels = arrays(digits.train)

    def make(seed):
        return data.make_pipeline(fitted, batch_size=64, num_classes=10, training=True, seed=seed)

    pipeline = make(0)
    images, labels = next(iter(pipeline))
    assert images.dtype == tf.float32 and images.shape == (64, 8, 8, 1)
    assert labels.dtype == tf.float32 and labels.shape == (64, 10)
    np.testing.assert_array_equal(tf.reduce_sum(labels, axis=1), np.ones(64))
    fresh = make(0)
    first, second = pipeline_labels(fresh), pipeline_labels(fresh)
    assert len(first) == 1437 and sorted(first) == sorted(source_labels)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(pipeline_labels(make(0)), first)
    assert not np.array_equal(pipeline_labels(make(1)), first)

    blackout = data.make_pipeline(
        fitted, batch_size=64, num_classes=10, training=True, augment=lambda x, y: (x * 0.0, y)
    )
    assert all(x.max() == 0 for x, _ in blackout.as_numpy_iterator())


def test_evaluation_pipeline_keeps_order_and_skips_augmentation(digits):
    source_images, source_labels = arrays(digits.test)
    pipeline = data.make_pipeline(
        digits.test,
        batch_size=64,
        num_classes=10,
        training=False,
        augment=lambda x, y: (x * 0.0, y),
    )
    batches = list(pipeline.as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [64, 64, 52]
    images = np.concatenate([x for x, _ in batches])
    np.testing.assert_array_equal(images, source_images.astype(np.float32))
    np.testing.assert_array_equal(pipeline_labels(pipeline), source_labels)
    with pytest.raises(ValueError, match="batch_size must be at least 1, received 0"):
        data.make_pipeline(digits.test, batch_size=0, num_classes=10, training=False)


def test_splits_and_pipelines_run_without_the_autotune_thread(digits):
    # fit deletes its iterators after every epoch, each pass over a split ends with one: none
    # has an autotune thread to wait for, whatever is made from the splits.
    derived = [
        digits.train,
        digits.validation,
        digits.test.batch(7),
        data.stored(data.fit_to_input(digits.test, (8, 8, 1))),
        *(
            data.make_pipeline(digits.test, batch_size=64, num_classes=10, training=training)
            for training in (True, False)
        ),
    ]
    assert [dataset.options().autotune.enabled for dataset in derived] == [False] * 6
    pipeline = data.make_pipeline(
        tf.data.Dataset.from_tensor_slices((np.zeros((5, 2, 2, 1), np.uint8), np.arange(5))),
        batch_size=2,
        num_classes=5,
        training=False,
    )
    assert pipeline.options().autotune.enabled is False  # a dataset from elsewhere too
    assert [len(x) for x, _ in pipeline.as_numpy_iterator()] == [2, 2, 1]


def test_tensorflow_datasets_splits_run_without_the_autotune_thread(mnist):
    splits = (mnist.train, mnist.validation, mnist.test)
    assert [split.options().autotune.enabled for split in splits] == [False] * 3


def test_a_folder_larger_than_the_shuffle_buffer_mixes_classes_in_every_early_batch(tmp_path):
    from PIL import Image

    # 4 classes of 50 tiny images, listed class by class; the buffer holds 32 of the 200.
    for label in range(4):
        for index in range(50):
            folder = tmp_path / f"class_{label}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), 60 * label, np.uint8)).save(folder / f"{index}.png")
    splits = data.load_dataset(tmp_path, val_split=0.0, test_split=0.0, seed=0)
    assert splits.num_examples["train"] == 200
    pipeline = data.make_pipeline(
        splits.train, batch_size=16, num_classes=4, training=True, seed=0, shuffle_buffer=32
    )
    for _ in range(2):  # epochs
        batches = [np.argmax(y, axis=1) for _, y in pipeline.take(5).as_numpy_iterator()]
        # Without the shuffled file list the first batches hold class 0 only.
        assert all(len(set(labels)) >= 3 for labels in batches), batches
    # Seeded: another seed, another order.
    other = data.load_dataset(tmp_path, val_split=0.0, test_split=0.0, seed=1)
    assert not np.array_equal(arrays(other.train)[1], arrays(splits.train)[1])
