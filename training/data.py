"""Data sources, splits and the tf.data input pipeline of the trainer.

`load_dataset` turns a source (the bundled digits, a tensorflow-datasets name, a folder of
images or a .npz file) into unbatched train/validation/test datasets of (uint8 image, int64
label); `fit_to_input` fits the images to a model's input; `stored` keeps them in memory as
8-bit images; `channel_statistics` gives the per-channel mean and std of the training split;
`make_pipeline` batches for `fit`; `without_autotune_thread` gives a dataset the options every
dataset `fit` reads here carries.
"""

import collections
import dataclasses
import difflib
import functools
import logging
import math
import pathlib
import socket
import threading
import urllib.parse
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from training import checks

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "validation", "test")
FIT_METHODS = ("resize", "pad")
SOURCE_KINDS = (
    "'digits' (scikit-learn's bundled 8x8 digits)",
    "a tensorflow-datasets name such as 'mnist' or 'cifar10'",
    "a folder of images in class subfolders (optionally inside train/, validation/, test/)",
    "a .npz file with x_train, y_train, x_test, y_test (optionally x_val, y_val)",
)
# Horizontal flips turn these digits and characters into other (or no) classes.
FLIP_UNSAFE_DATASETS = frozenset(
    {
        "digits",
        "mnist",
        "emnist",
        "kmnist",
        "svhn_cropped",
        "mnist_corrupted",
        "binary_alpha_digits",
        "omniglot",
    }
)
# Sampled to choose a fixed image size when a tensorflow-datasets source has variable sizes.
SIZE_SAMPLE = 512
PROBE_TIMEOUT_SECONDS = 3.0
# Examples the training pipeline's shuffle buffer holds (the whole split up to this size).
SHUFFLE_BUFFER = 10_000
# The most memory what a pipeline keeps (make_pipeline's `keep`: its float32 images) may take:
# the default job's training split 5.9 MB, MNIST's (54,000 32x32 images) 221 MB.
KEPT_BYTES = 256 * 2**20
# map_images' batches (of float32 images): 1,024 32x32 grey images spread an op call's cost;
# a parallel call per core holds one.
MAP_BATCH_BYTES = 4 * 2**20


@dataclasses.dataclass
class DatasetSplits:
    """Unbatched splits of (image uint8 HxWxC, label int64) and what describes them."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list[str]
    image_shape: tuple[int, int, int]
    num_examples: dict[str, int]
    flip_safe: bool
    # Image files of a folder source that could not be decoded and were left out.
    skipped_files: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass
class _Split:
    """One split as its source holds it, with a dataset for any subset of its examples."""

    size: int
    # Labels in source order; only carving a stratified split needs them.
    read_labels: Callable[[], np.ndarray]
    build: Callable[[np.ndarray], tf.data.Dataset]


def load_dataset(
    dataset,
    *,
    data_dir=None,
    manual_dir=None,
    val_split=0.1,
    test_split=0.1,
    seed=0,
    classes=(),
    subset_per_class=None,
) -> DatasetSplits:
    """Loads `dataset` and returns its train/validation/test splits.

    Missing validation and test splits are carved from train, stratified by class and seeded:
    `val_split` and `test_split` are fractions of the examples they are carved from.
    `classes` (names or indices) keeps only those classes, relabelled 0.. in the order given;
    `subset_per_class` then keeps that many seeded, stratified examples per class of train.
    """
    check_split_fractions(val_split, test_split)

    name = str(dataset)
    path = pathlib.Path(name).expanduser()
    skipped = []
    if name == "digits":
        splits, class_names, image_shape = _digits_source()
    elif path.is_dir():
        splits, class_names, image_shape, skipped = _folder_source(path)
    elif path.suffix == ".npz" and path.is_file():
        splits, class_names, image_shape = _npz_source(path)
    elif path.suffix == ".npz" or name.startswith((".", "/", "~")):
        raise ValueError(
            f"dataset path {name!r} does not exist. Valid sources: " + "; ".join(SOURCE_KINDS)
        )
    else:
        splits, class_names, image_shape = _tfds_source(name, data_dir, manual_dir)

    train = splits["train"]
    train_idx = np.arange(train.size)
    labels = train.read_labels() if len(splits) < 3 else None
    parts = {}
    for split, fraction in (("test", test_split), ("validation", val_split)):
        if split in splits:
            parts[split] = splits[split], np.arange(splits[split].size)
        else:
            # Fractions are of train before any carving: 0.1 and 0.1 of 1797 give 180 + 180.
            train_idx, carved = _carve(labels, train_idx, round(fraction * train.size), seed)
            parts[split] = train, carved
    parts["train"] = train, train_idx
    relabel = None
    if classes:
        chosen = _class_indices(classes, class_names)
        parts = {
            split: (source, _of_classes(source, indices, chosen))
            for split, (source, indices) in parts.items()
        }
        relabel = np.full(len(class_names), -1, np.int64)
        relabel[chosen] = np.arange(len(chosen))
        class_names = [class_names[i] for i in chosen]
    if subset_per_class is not None:
        train_source, train_idx = parts["train"]
        parts["train"] = (
            train_source,
            _per_class_subset(train_source.read_labels(), train_idx, subset_per_class, seed),
        )
    # Folders (and many arrays) list their examples class by class, and a shuffle buffer
    # smaller than the split would then fill each epoch's early batches with a few classes.
    # A seeded permutation up front mixes them whatever the size. (A tensorflow-datasets split
    # keeps the order tfds shuffled it into when preparing: its subset is read as a mask.)
    train_source, train_idx = parts["train"]
    parts["train"] = train_source, np.random.default_rng(seed).permutation(train_idx)

    base_name = path.stem if path.exists() else name.split(":")[0].split("/")[0]
    return DatasetSplits(
        **{
            # Every pipeline made from a split inherits its options.
            split: without_autotune_thread(_relabelled(source.build(indices), relabel))
            for split, (source, indices) in parts.items()
        },
        class_names=class_names,
        image_shape=tuple(int(d) for d in image_shape),
        num_examples={split: len(parts[split][1]) for split in SPLIT_FOLDERS},
        flip_safe=base_name.lower() not in FLIP_UNSAFE_DATASETS,
        skipped_files=skipped,
    )


def _carve(labels, indices, count, seed):
    """Splits `count` indices off `indices`, stratified by label: (rest, carved), both sorted."""
    if count == 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split

    try:
        rest, carved = train_test_split(
            indices, test_size=count, stratify=labels[indices], random_state=seed
        )
    except ValueError as error:
        raise ValueError(
            f"cannot carve a stratified split of {count} from {len(indices)} examples: {error}"
        ) from error
    return np.sort(rest), np.sort(carved)


def _class_indices(classes, class_names):
    """The indices of `classes`, each a class name or else an index into `class_names`."""
    chosen = []
    for value in classes:
        text = str(value)
        if text in class_names:
            chosen.append(class_names.index(text))
        elif text.isdigit() and int(text) < len(class_names):
            chosen.append(int(text))
        else:
            raise ValueError(
                f"classes: {text!r} is neither a class name nor an index below "
                f"{len(class_names)}; the classes are {', '.join(class_names)}"
            )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"classes: {list(classes)} names a class twice")
    return np.array(chosen, np.int64)


def _of_classes(source, indices, chosen):
    return indices[np.isin(source.read_labels()[indices], chosen)]


def _per_class_subset(labels, indices, per_class, seed):
    """`per_class` indices of each class present (all of a smaller class), seeded, sorted."""
    rng = np.random.default_rng(seed)
    kept = [
        rng.permutation(indices[labels[indices] == label])[:per_class]
        for label in np.unique(labels[indices])
    ]
    return np.sort(np.concatenate(kept)) if kept else indices


def _relabelled(dataset, relabel):
    if relabel is None:
        return dataset
    table = tf.constant(relabel)
    return dataset.map(
        lambda image, label: (image, tf.gather(table, label)), num_parallel_calls=tf.data.AUTOTUNE
    )


def _array_split(images, labels):
    def build(indices):
        return tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))

    return _Split(size=len(labels), read_labels=lambda: labels, build=build)


def _digits_source():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16: scale to the 0..255 of every other source.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    return {"train": _array_split(images, labels)}, [str(c) for c in range(10)], images.shape[1:]


def _npz_source(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    required = ("x_train", "y_train", "x_test", "y_test")
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ValueError(
            f"{path} lacks {missing}: a .npz source needs x_train, y_train, x_test, y_test "
            f"(optionally x_val, y_val); it holds {sorted(arrays)}"
        )
    names = {"train": "train", "test": "test"}
    if "x_val" in arrays or "y_val" in arrays:
        names["validation"] = "val"
    images = {
        split: _npz_images(arrays[f"x_{suffix}"], f"x_{suffix}") for split, suffix in names.items()
    }
    shapes = {x.shape[1:] for x in images.values()}
    if len(shapes) != 1:
        raise ValueError(f"{path}: image shapes differ between splits: {sorted(shapes)}")
    splits = {}
    for split, suffix in names.items():
        labels = np.asarray(arrays[f"y_{suffix}"])
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if (
            labels.ndim != 1
            or len(labels) != len(images[split])
            or not np.issubdtype(labels.dtype, np.integer)
        ):
            raise ValueError(
                f"y_{suffix} must hold {len(images[split])} integer class indices, received "
                f"shape {labels.shape} and dtype {labels.dtype}"
            )
        splits[split] = _array_split(images[split], labels.astype(np.int64))
    num_classes = int(max(split.read_labels().max(initial=-1) for split in splits.values())) + 1
    return splits, [str(c) for c in range(num_classes)], shapes.pop()


def _npz_images(images, key):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{key} must be (N, H, W) or (N, H, W, 1|3) images, received shape {images.shape}"
        )
    if images.dtype == np.uint8:
        return images
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"{key} must hold pixels in 0..255, found {images.min()}..{images.max()}")
    if np.issubdtype(images.dtype, np.floating) and images.size and images.max() <= 1.0:
        raise ValueError(f"{key} looks scaled to 0..1: store pixels as 0..255")
    return np.round(images).astype(np.uint8)


def _folder_source(root):
    layout = {split: root / split for split in SPLIT_FOLDERS if (root / split).is_dir()}
    if "train" not in layout:
        layout = {"train": root}
    files = {split: _class_files(folder) for split, folder in layout.items()}
    class_names = sorted({name for per_class in files.values() for name in per_class})
    if not class_names:
        raise ValueError(
            f"{root} holds no class subfolders with images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    paths, labels = {}, {}
    for split, per_class in files.items():
        pairs = [
            (p, label) for label, name in enumerate(class_names) for p in per_class.get(name, [])
        ]
        paths[split] = [p for p, _ in pairs]
        labels[split] = np.array([label for _, label in pairs], dtype=np.int64)

    all_paths = [p for split in paths.values() for p in split]
    shapes = _probe_images([str(p) for p in all_paths])
    skipped = [str(p) for p, shape in zip(all_paths, shapes) if shape is None]
    if skipped:
        logger.warning(
            "Skipped %d unreadable image files in %s: %s", len(skipped), root, ", ".join(skipped)
        )
    valid = [s for s in shapes if s is not None]
    if not valid:
        raise ValueError(f"{root}: none of the {len(all_paths)} image files could be decoded")
    # The most common size wins; other images are resized to it on load.
    height, width = collections.Counter(s[:2] for s in valid).most_common(1)[0][0]
    channels = 1 if all(s[2] <= 2 for s in valid) else 3

    splits = {}
    offset = 0
    for split, split_paths in paths.items():
        ok = np.array(
            [s is not None for s in shapes[offset : offset + len(split_paths)]], dtype=bool
        )
        offset += len(split_paths)
        splits[split] = _file_split(
            np.array([str(p) for p in split_paths])[ok],
            labels[split][ok],
            (height, width, channels),
        )
    return splits, class_names, (height, width, channels), skipped


def _class_files(folder):
    """{class name: sorted image paths} for the class subfolders of `folder`."""
    per_class = {}
    for class_dir in sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        images = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if images:
            per_class[class_dir.name] = images
    return per_class


def _probe_images(paths):
    """Decodes every file once with the decoder training uses: (H, W, C) each, or None."""
    indices = without_autotune_thread(
        tf.data.Dataset.from_tensor_slices(
            (tf.range(len(paths), dtype=tf.int64), tf.constant(paths, dtype=tf.string))
        )
    )
    shapes = indices.map(
        lambda i, path: (i, tf.shape(decode_image(tf.io.read_file(path)))),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).ignore_errors()
    found = [None] * len(paths)
    for index, shape in shapes.as_numpy_iterator():
        found[index] = tuple(int(d) for d in shape)
    return found


def decode_image(contents):
    # channels=0 keeps each file's own channels: GIFs refuse channels=1.
    return tf.io.decode_image(contents, channels=0, expand_animations=False)


def _file_split(paths, labels, image_shape):
    def build(indices):
        files = tf.data.Dataset.from_tensor_slices((paths[indices], labels[indices]))
        return files.map(
            lambda path, label: (_load_image(path, image_shape), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return _Split(size=len(labels), read_labels=lambda: labels, build=build)


def _load_image(path, image_shape):
    height, width, channels = image_shape
    image = to_channels(decode_image(tf.io.read_file(path)), channels)
    shape = tf.shape(image)
    image = tf.cond(
        tf.logical_and(shape[0] == height, shape[1] == width),
        lambda: image,
        lambda: _resize_uint8(image, height, width),
    )
    return tf.ensure_shape(image, image_shape)


def to_channels(image, channels):
    """Gray, gray+alpha, RGB or RGBA (decided per file at run time) to 1 or 3 channels."""
    is_gray = tf.shape(image)[-1] < 3
    if channels == 1:
        return tf.cond(
            is_gray, lambda: image[..., :1], lambda: tf.image.rgb_to_grayscale(image[..., :3])
        )
    return tf.cond(
        is_gray, lambda: tf.image.grayscale_to_rgb(image[..., :1]), lambda: image[..., :3]
    )


def _resize_uint8(image, height, width):
    # Antialiasing keeps large photos (3024x3024 down to 100x100) from aliasing.
    return _round_to_uint8(tf.image.resize(image, (height, width), antialias=True))


def _round_to_uint8(images):
    return tf.cast(tf.round(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)), tf.uint8)


def _tfds_source(name, data_dir, manual_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(), n=5)
        raise ValueError(
            f"unknown dataset {name!r}: not a folder, a .npz file or a tensorflow-datasets name"
            + (f" (close tensorflow-datasets names: {', '.join(close)})" if close else "")
            + ". Valid sources: "
            + "; ".join(SOURCE_KINDS)
        ) from error
    _ensure_prepared(builder, manual_dir)

    info = builder.info
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise ValueError(f"tensorflow-datasets {name!r} has no (image, label) supervised keys")
    image_key, label_key = info.supervised_keys
    label_feature = info.features[label_key]
    if not hasattr(label_feature, "names"):
        raise ValueError(f"tensorflow-datasets {name!r}: {label_key!r} is not a class label")
    if "train" not in info.splits:
        raise ValueError(f"tensorflow-datasets {name!r} has no train split: {list(info.splits)}")

    def read(split, **kwargs):
        return without_autotune_thread(
            builder.as_dataset(split=split, as_supervised=True, shuffle_files=False, **kwargs)
        )

    image_shape = tuple(info.features[image_key].shape)
    if None in image_shape[:2]:
        sample = read("train").take(SIZE_SAMPLE).map(lambda image, label: tf.shape(image)[:2])
        sizes = collections.Counter(tuple(s) for s in sample.as_numpy_iterator())
        image_shape = (*sizes.most_common(1)[0][0], image_shape[2])

    def read_encoded(split):
        return read(split, decoders={image_key: tfds.decode.SkipDecoding()})

    def read_labels(split):
        labels_only = read_encoded(split).map(lambda _, label: label).batch(8192)
        return np.concatenate(list(labels_only.as_numpy_iterator())).astype(np.int64)

    splits = {}
    for split in SPLIT_FOLDERS:
        if split in info.splits:
            size = info.splits[split].num_examples
            splits[split] = _Split(
                size=size,
                read_labels=functools.partial(read_labels, split),
                build=_tfds_subset(
                    read_encoded, info.features[image_key].decode_example, split, size, image_shape
                ),
            )
    return splits, list(label_feature.names), image_shape


def _tfds_subset(read_encoded, decode, split, size, image_shape):
    """Builds a split's subset by index, decoding only the images it keeps (a validation split
    carved from train would otherwise decode all of train for a tenth of it)."""

    def build(indices):
        dataset = read_encoded(split)
        if len(indices) < size:
            keep = np.zeros(size, dtype=bool)
            keep[indices] = True
            keep = tf.constant(keep)
            # filter() hides the size; stating it gives Keras its steps per epoch up front
            # (a progress bar with a total, no "ran out of data" warning after epoch 1).
            dataset = (
                dataset.enumerate()
                .filter(lambda i, example: keep[i])
                .map(lambda i, example: example)
                .apply(tf.data.experimental.assert_cardinality(len(indices)))
            )
        return dataset.map(
            lambda image, label: (
                _fit_size_uint8(decode(image), image_shape),
                tf.cast(label, tf.int64),
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return build


def _fit_size_uint8(image, image_shape):
    height, width = image_shape[:2]
    if tuple(image.shape[:2]) == (height, width):
        return image
    return tf.ensure_shape(_resize_uint8(image, height, width), image_shape)


def _ensure_prepared(builder, manual_dir):
    """Prepares a tfds dataset, failing in seconds (not tfds' minutes of retries) when offline."""
    if builder.is_prepared():
        return
    import tensorflow_datasets as tfds

    url_infos = builder.url_infos or {}
    needed = sorted({info.filename for info in url_infos.values() if info.filename})
    name = builder.name
    missing = [
        f for f in needed if manual_dir is None or not (pathlib.Path(manual_dir) / f).is_file()
    ]
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and manual_dir is None:
        raise ConnectionError(
            f"tensorflow-datasets {name!r} needs files you download yourself: "
            f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()} Pass their folder as --manual-dir."
        )
    if missing:
        hosts = sorted({urllib.parse.urlparse(url).hostname for url in url_infos})
        if not any(_reachable(host) for host in hosts):
            urls = sorted(url for url, info in url_infos.items() if info.filename in missing)
            where = f" ({manual_dir} lacks them)" if manual_dir is not None else ""
            raise ConnectionError(
                f"cannot download tensorflow-datasets {name!r}: {', '.join(hosts)} cannot be "
                f"reached. Get these files{where}: {', '.join(urls)}; put them in one folder "
                f"and pass it as --manual-dir (manual_dir=...)"
            )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=None if manual_dir is None else str(manual_dir)
        )
    )


def _reachable(host, port=443):
    """Whether a TCP connection to `host` opens within PROBE_TIMEOUT_SECONDS (DNS included)."""
    result = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS).close()
            result.append(True)
        except OSError:
            pass

    # A thread bounds the DNS lookup too, which socket timeouts do not cover.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_SECONDS + 1.0)
    return bool(result)


def fit_to_input(dataset, input_shape, *, method="resize"):
    """Fits (image, label) examples to a model's `input_shape` (H, W, C): float32 in 0..255.

    "resize" scales to H x W; "pad" zero-pads or center-crops without scaling. Gray images
    become RGB and RGB images gray as the model's channels require.
    """
    checks.one_of("fit method", method, FIT_METHODS)
    height, width, channels = (int(d) for d in input_shape)
    source_channels = dataset.element_spec[0].shape[-1]
    if channels not in (1, 3) or source_channels not in (1, 3):
        raise ValueError(
            f"images and model inputs must have 1 or 3 channels, received images with "
            f"{source_channels} and input_shape {tuple(input_shape)}"
        )
    shape = (height, width, channels)
    return map_images(dataset, lambda images: fit_images(images, shape, method=method))


def map_images(dataset, function):
    """Applies `function` (of an image or a batch of them, to float32 or uint8) to the images
    of (image, label) examples: in batches when every image has the same shape, which gives
    the same values 2-3x faster (one op call per batch, not per image: resizing 54,000 28x28
    images to 32x32 on this project's 2-core CPU), else one image at a time."""
    if None in dataset.element_spec[0].shape:
        return dataset.map(
            lambda image, label: (function(image), label), num_parallel_calls=tf.data.AUTOTUNE
        )
    return _map_in_batches(dataset, lambda images, labels: (function(images), labels))


def _map_in_batches(dataset, function):
    """`function` of a batch of (images, labels), applied to (image, label) examples whose
    images have one shape, batch by batch (MAP_BATCH_BYTES), as examples again."""
    count = int(dataset.cardinality())
    image_bytes = 4 * int(np.prod(dataset.element_spec[0].shape))  # as float32
    mapped = (
        dataset.batch(max(1, MAP_BATCH_BYTES // image_bytes))
        .map(function, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    # unbatch() hides the count; Keras reads its steps per epoch from it.
    return mapped.apply(tf.data.experimental.assert_cardinality(count)) if count >= 0 else mapped


def fit_images(images, input_shape, *, method="resize"):
    """One image or a batch ([..., H, W, 1|3], any size) as float32 0..255 at `input_shape`.

    The trainer's fit for every split, and the exported SavedModel's for served images: a size
    known only at run time (a served image) is checked then.
    """
    height, width, channels = (int(d) for d in input_shape)
    images = tf.cast(images, tf.float32)
    source_channels = images.shape[-1]
    if source_channels == 1 and channels == 3:
        images = tf.image.grayscale_to_rgb(images)
    elif source_channels == 3 and channels == 1:
        images = tf.image.rgb_to_grayscale(images)
    if tuple(images.shape[-3:-1]) == (height, width):
        return images

    def fit():
        if method == "resize":
            return tf.image.resize(images, (height, width), antialias=True)
        return tf.image.resize_with_crop_or_pad(images, height, width)

    if None not in images.shape[-3:-1]:
        return fit()
    size = tf.shape(images)[-3:-1]
    return tf.cond(tf.reduce_all(size == (height, width)), lambda: images, fit)


def as_uint8(dataset):
    """(image, label) examples with the images rounded to 8 bits, as the models see them;
    uint8 images pass as they are."""
    if dataset.element_spec[0].dtype == tf.uint8:
        return dataset
    return map_images(dataset, _round_to_uint8)


def stored(dataset, *, cache=True):
    """`dataset`'s examples as 8-bit images (a quarter of float32's memory), kept in memory
    after the first full pass with `cache`. Every pipeline made from the result shares that
    memory, so the training split is decoded and resized once a run, by channel_statistics,
    instead of again in the first epoch (and for each trial of a search)."""
    dataset = as_uint8(dataset)
    return dataset.cache() if cache else dataset


def channel_statistics(train_dataset):
    """Per-channel (mean, std) of the images of an unbatched (image, label) dataset."""
    total = squares = None
    count = 0
    for images, _ in train_dataset.batch(1024).as_numpy_iterator():
        pixels = images.astype(np.float64).reshape(-1, images.shape[-1])
        total = pixels.sum(axis=0) + (0.0 if total is None else total)
        squares = (pixels**2).sum(axis=0) + (0.0 if squares is None else squares)
        count += len(pixels)
    if count == 0:
        raise ValueError("cannot compute channel statistics of an empty dataset")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def make_pipeline(
    dataset,
    *,
    batch_size,
    num_classes,
    training,
    binary=False,
    seed=0,
    augment=None,
    shuffle_buffer=SHUFFLE_BUFFER,
    keep=False,
):
    """Batches (image, label) examples into (float32 images 0..255, one-hot float32 labels),
    or with `binary` (two classes) labels of shape (batch, 1): 1.0 for the second class.

    Training pipelines reshuffle every epoch (seeded) and apply `augment`, a callable on a
    batch of (images, one-hot labels), in parallel map calls on the CPU.

    `keep` keeps in memory, once a first pass has made it, what every later pass would make
    again (see can_keep): a training pipeline its examples as the model reads them (float32,
    encoded labels), reshuffled and batched each epoch; another its batches (validation, read
    unchanged every epoch). An iterator then makes no map for the cast and the labels: making
    a tf.data iterator instantiates its map functions anew (4 ms for the default job's, whose
    epochs take 0.17 s), and casting and encoding every batch again held lenet5's training at
    0.89 of its speed from memory, 0.945 from kept examples (docs/speed.md).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, received {batch_size}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, received {num_classes}")
    if binary and int(num_classes) != 2:
        raise ValueError(f"binary labels need exactly 2 classes, received {num_classes}")
    dataset = as_uint8(dataset)
    keep_examples = keep and training
    if keep_examples and None in dataset.element_spec[0].shape:
        raise ValueError("keep needs images of one shape (fit_to_input gives them one)")

    def ready(images, labels):
        if binary:
            return tf.cast(images, tf.float32), tf.cast(labels, tf.float32)[:, None]
        return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes, dtype=tf.float32)

    if keep_examples:  # cast and encoded once, then shuffled and batched from memory
        dataset = _map_in_batches(dataset, ready).cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if not keep_examples:
        dataset = dataset.map(ready, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    # Once a pass has filled the cache, an iterator reads it without making the maps' iterators.
    return without_autotune_thread(dataset.cache() if keep and not training else dataset)


def can_keep(num_examples, image_shape):
    """Whether a pipeline over `num_examples` images of `image_shape` may keep what it makes
    (make_pipeline's `keep`): their float32 images within KEPT_BYTES."""
    return num_examples * math.prod(image_shape) * 4 <= KEPT_BYTES


def without_autotune_thread(dataset):
    """`dataset`, and every dataset made from it, without tf.data's autotuning thread.

    Deleting an iterator whose autotuning thread sleeps between optimizations often waits out
    the sleep (TensorFlow 2.21), and the sleeps double from 10 ms up to a minute; Keras' fit
    deletes the training iterator at every epoch's end and the validation one after every
    evaluation, and each pass over a split (its statistics, the test evaluation) ends with one.
    On this project's 2-core CPU about half of the deletions waited, up to as long as the
    iterator had lived: 0.1 s of lenet5's 0.2 s epochs on the digits, 4.7 s after an iterator of
    5.5 s. Without the thread the pipelines run as fast here (each parallel map keeps one call
    per core, up to 16; prefetch tunes its own buffer; docs/speed.md).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def check_split_fractions(val_split, test_split, section=""):
    checks.in_range(f"{section}val_split", val_split, 0, 1)
    checks.in_range(f"{section}test_split", test_split, 0, 1)
    checks.require(
        val_split + test_split < 1,
        f"{section}val_split + {section}test_split must leave training data (sum "
        f"below 1), got {val_split} + {test_split}.",
    )


def check_config(config):
    data = config.data
    check_split_fractions(data.val_split, data.test_split, section="data.")
    checks.in_range("data.batch_size", data.batch_size, 1, integer=True)
    checks.one_of("fit method (data.fit)", data.fit, FIT_METHODS)
    if data.image_size is not None:
        checks.in_range("data.image_size", data.image_size, 1, integer=True)
    if data.subset_per_class is not None:
        checks.in_range("data.subset_per_class", data.subset_per_class, 1, integer=True)
    checks.require(
        len(set(map(str, data.classes))) == len(data.classes),
        f"data.classes names a class twice: {data.classes}.",
    )
    checks.require(
        len(data.classes) != 1, f"data.classes must keep at least two classes, got {data.classes}."
    )
