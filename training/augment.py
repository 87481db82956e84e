"""Batch augmentation for the trainer, built from Keras' own preprocessing layers.

`build_augmentation` returns a callable that maps a batch of (float32 images 0..255, one-hot
labels) to an augmented batch, for `tf.data.Dataset.map` on the CPU.
"""

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from training import checks

VALUE_RANGE = (0, 255)
# Geometric ops fill uncovered pixels with black, as padding-and-cropping does.
FILL = {"fill_mode": "constant", "fill_value": 0.0}


def _crop_padding(image_shape, padding):
    return max(1, round(min(image_shape[:2]) / 8)) if padding is None else padding


def _random_crop(image_shape, layer_kwargs, padding=None):
    """Pad-and-crop: a random shift of up to `padding` pixels (default 1/8 of the side)."""
    height, width = image_shape[:2]
    padding = _crop_padding(image_shape, padding)
    # keras.layers.RandomCrop crops a whole batch at one location; a nearest-neighbour
    # translation with zero fill shifts each image on its own, as padding then cropping does.
    return keras.layers.RandomTranslation(
        padding / height, padding / width, interpolation="nearest", **FILL, **layer_kwargs
    )


def _flip(image_shape, layer_kwargs):
    return keras.layers.RandomFlip("horizontal", **layer_kwargs)


def _zoom(image_shape, layer_kwargs, factor=0.1):
    """Random resized crop: zoom in or out by up to `factor`, each axis on its own."""
    return keras.layers.RandomZoom((-factor, factor), (-factor, factor), **FILL, **layer_kwargs)


def _rotation(image_shape, layer_kwargs, degrees=10.0):
    return keras.layers.RandomRotation(degrees / 360.0, **FILL, **layer_kwargs)


def _translation(image_shape, layer_kwargs, fraction=0.1):
    return keras.layers.RandomTranslation(fraction, fraction, **FILL, **layer_kwargs)


def _color_jitter(
    image_shape, layer_kwargs, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02
):
    return LinearColorJitter(brightness, contrast, saturation, hue, **layer_kwargs)


# ITU-R BT.601 luma, the grey a saturation of 0 leaves (as in tf.image.rgb_to_grayscale).
LUMA = (0.299, 0.587, 0.114)


def color_matrices(saturation, hue):
    """Per image, the 3x3 matrix (acting on RGB column vectors) that scales saturation by
    `saturation` (a blend with the luma grey) and then rotates hue by `hue` turns (a rotation
    about the grey axis (1, 1, 1), Rodrigues' formula; a third of a turn cycles R -> G -> B)."""
    a = 3**-0.5  # each coordinate of the unit grey axis
    eye = np.eye(3, dtype="float32")
    cross = np.array([[0, -a, a], [a, 0, -a], [-a, a, 0]], "float32")  # axis x v, as a matrix
    outer = np.full((3, 3), a * a, "float32")
    grey = np.tile(np.array(LUMA, "float32"), (3, 1))  # every channel := the luma
    s = saturation[:, None, None]
    scale = s * eye + (1.0 - s) * grey
    angle = (2 * math.pi * hue)[:, None, None]
    rotate = keras.ops.cos(angle) * eye + keras.ops.sin(angle) * cross
    rotate += (1.0 - keras.ops.cos(angle)) * outer
    return keras.ops.matmul(rotate, scale)


# XLA fuses the per-pixel matrix, offset and clip into one pass (TensorFlow alone runs the
# einsum as a batched matmul): LinearColorJitter on 128 32x32x3 images in tf.data on this
# project's 2-core AVX2 CPU, 3.3 -> 1.5 ms a batch.
@tf.function(jit_compile=True)
def jitter_colors(images, brightness, contrast, saturation, hue):
    """RGB images (batch, height, width, 3) in 0..255 with per-image factors: saturation and hue
    (color_matrices), then contrast about each channel's mean, then `brightness` added; one
    affine map per image, clipped to 0..255."""
    colors = color_matrices(saturation, hue)
    matrices = colors * contrast[:, None, None]
    means = keras.ops.mean(images, axis=(1, 2))  # (batch, 3)
    # (1 - c) M mean + brightness: the contrast keeps each channel's mean where M put it.
    offsets = keras.ops.einsum("bij,bj->bi", colors, means)
    offsets = offsets * (1.0 - contrast[:, None]) + brightness[:, None]
    out = keras.ops.einsum("bhwj,bij->bhwi", images, matrices) + offsets[:, None, None, :]
    return keras.ops.clip(out, *VALUE_RANGE)


class _RandomBatchLayer(keras.layers.Layer):
    """A random op on a batch of images, alone or in the {"images", "labels"} dicts that
    keras.layers.Pipeline passes; subclasses give `augment(images)`, run in training only."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, low, high):
        """One draw per image from U(low, high)."""
        return keras.random.uniform((batch,), low, high, seed=self.seed_generator)

    def call(self, data, training=True):
        images = data["images"] if isinstance(data, dict) else data
        if training:
            images = self.augment(images)
        return {**data, "images": images} if isinstance(data, dict) else images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="training")
class LinearColorJitter(_RandomBatchLayer):
    """Brightness, contrast, saturation and hue jitter of RGB batches in 0..255, with the factors
    of keras.layers.RandomColorJitter: brightness adds up to +-brightness of the range,
    contrast scales about each channel's mean by 1 +- contrast, saturation by f / (1 - f) for f
    in 0.5 +- saturation / 2 (0.67-1.5 at 0.2), hue turns by up to +-hue / 2 of a circle.

    Keras' layer converts every pixel to HSV and back for saturation and hue: 12-17 of the
    `standard` preset's 25-29 ms per 128 32x32 images on this project's 2-core CPU, this one
    2.6 ms. Here saturation is a blend with the luma grey (as torchvision's adjust_saturation)
    and hue a rotation about the grey axis, both linear in RGB, so the four compose into one
    affine map per image (jitter_colors).
    """

    def __init__(self, brightness, contrast, saturation, hue, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        for name, value in (("brightness", brightness), ("contrast", contrast), ("hue", hue)):
            if not 0 <= value <= 1:
                raise ValueError(f"color_jitter {name} must be in [0, 1], received {value}")
        if not 0 <= saturation < 1:  # at 1, f = 1 would scale saturation by f / (1 - f) = inf
            raise ValueError(f"color_jitter saturation must be in [0, 1), received {saturation}")
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.hue = saturation, hue

    def augment(self, images):
        batch = keras.ops.shape(images)[0]
        f = self._uniform(batch, 0.5 - self.saturation / 2, 0.5 + self.saturation / 2)
        return jitter_colors(
            images,
            brightness=self._uniform(batch, -self.brightness, self.brightness) * 255.0,
            contrast=self._uniform(batch, 1 - self.contrast, 1 + self.contrast),
            saturation=f / (1.0 - f),
            hue=self._uniform(batch, -self.hue / 2, self.hue / 2),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
        }


def affine_transforms(image_shape, shift_x, shift_y, mirror, angle, zoom_x, zoom_y):
    """Per image, the 8 projective-transform numbers of keras.ops.image.affine_transform (an
    output pixel (x, y) samples the input at (a0 x + a1 y + a2, b0 x + b1 y + b2)) that zoom by
    (zoom_x, zoom_y), rotate by `angle` radians, mirror where `mirror` is -1 (1: not) about the
    image's centre, then shift by (shift_x, shift_y) pixels; every argument has one entry per
    image."""
    height, width = image_shape[:2]
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin = keras.ops.cos(angle), keras.ops.sin(angle)
    a0, a1 = mirror * cos * zoom_x, -mirror * sin * zoom_y
    b0, b1 = sin * zoom_x, cos * zoom_y
    a2 = cx + shift_x - a0 * cx - a1 * cy
    b2 = cy + shift_y - b0 * cx - b1 * cy
    zeros = keras.ops.zeros_like(a0)
    return keras.ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


@tf.function(jit_compile=True)
def sample_affine(images, transforms):
    """keras.ops.image.affine_transform(images, transforms) with bilinear interpolation and zeros
    outside the image (FILL), for channels-last batches: the same values, to float32 rounding.

    Our own because TensorFlow's ImageProjectiveTransformV3 kernel, which Keras calls, spends
    about 30 ns per output value on this project's 2-core CPU: the same sampling as four
    gathers that XLA fuses into one loop takes a third of that alone, and RandomAffine on 128
    32x32x3 images in tf.data 2.8 ms a batch instead of 4.5 (grey: 1.6 instead of 1.9)."""
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1:]
    # A one-pixel border of zeros: every neighbour outside the image clamps onto it.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    pixels = tf.reshape(padded, [-1, channels])
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    t = transforms[:, :, None, None]
    x = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    y = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = tf.reshape(x - x0, [-1, 1]), tf.reshape(y - y0, [-1, 1])
    x0, y0 = tf.cast(x0, tf.int32) + 1, tf.cast(y0, tf.int32) + 1  # in the padded image
    first = (tf.range(batch) * (height + 2) * (width + 2))[:, None, None]

    def neighbour(dy, dx):
        row = tf.clip_by_value(y0 + dy, 0, height + 1)
        column = tf.clip_by_value(x0 + dx, 0, width + 1)
        return tf.gather(pixels, tf.reshape(first + row * (width + 2) + column, [-1]))

    top = neighbour(0, 0) * (1 - fx) + neighbour(0, 1) * fx
    bottom = neighbour(1, 0) * (1 - fx) + neighbour(1, 1) * fx
    return tf.reshape(top * (1 - fy) + bottom * fy, [batch, height, width, channels])


@keras.saving.register_keras_serializable(package="training")
class RandomAffine(_RandomBatchLayer):
    """Shift (up to `shift` = (x, y) pixels), horizontal flip, rotation (up to +-`degrees`) and
    zoom (each axis by 1 +- `zoom`) of a batch, as one bilinear affine transform per image
    with zeros outside, for adjacent geometric ops of a preset (build_augmentation fuses them).

    Keras' RandomTranslation, RandomFlip, RandomRotation and RandomZoom each resample the
    whole batch: 13 ms of the `standard` preset's 14.6 ms per 128 32x32 images on this
    project's 2-core CPU, this one 6.1 ms with Keras' sampling, less with sample_affine's.
    Sampling once also blurs less than three bilinear resamplings; a fused random_crop shifts
    by fractions of a pixel too (Keras' alone rounds).
    """

    def __init__(self, shift=(0.0, 0.0), flip=False, degrees=0.0, zoom=0.0, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.shift, self.flip = tuple(float(v) for v in shift), bool(flip)
        self.degrees, self.zoom = float(degrees), float(zoom)

    def augment(self, images):
        batch = keras.ops.shape(images)[0]

        def symmetric(bound):
            return self._uniform(batch, -bound, bound)

        transforms = affine_transforms(
            images.shape[1:],
            shift_x=symmetric(self.shift[0]),
            shift_y=symmetric(self.shift[1]),
            mirror=keras.ops.sign(symmetric(1.0)) if self.flip else keras.ops.ones((batch,)),
            angle=symmetric(math.radians(self.degrees)),
            zoom_x=1.0 + symmetric(self.zoom),
            zoom_y=1.0 + symmetric(self.zoom),
        )
        return sample_affine(images, transforms)

    def get_config(self):
        return {
            **super().get_config(),
            "shift": self.shift,
            "flip": self.flip,
            "degrees": self.degrees,
            "zoom": self.zoom,
        }


def _random_erasing(image_shape, layer_kwargs, probability=0.25, scale=(0.02, 0.33)):
    return keras.layers.RandomErasing(
        factor=(probability, probability), scale=scale, value_range=VALUE_RANGE, **layer_kwargs
    )


def _cutout(image_shape, layer_kwargs, size=None, *, mean):
    """Cutout (DeVries & Taylor 2017): a `size`-pixel square (default half the side) set to zero
    in the standardized input the model sees, i.e. to the training mean colour in the raw
    0..255 pixels the pipeline carries, on every image. Keras' RandomErasing does it with a
    fixed scale and fill; its square lies inside the image (DeVries' may overhang an edge)."""
    side = min(image_shape[:2])
    size = max(1, round(side / 2)) if size is None else size
    if not 1 <= size <= side:
        raise ValueError(
            f"cutout size must be 1..{side} pixels for {side}-pixel images, received {size}"
        )
    fraction = (size / side) ** 2  # RandomErasing's scale is an area: each side is its root
    fill = [float(m) for m in mean] if len(mean) == 3 else float(mean[0])
    return keras.layers.RandomErasing(
        factor=(1.0, 1.0),
        scale=(fraction, fraction),
        fill_value=fill,
        value_range=VALUE_RANGE,
        **layer_kwargs,
    )


def _rand_augment(image_shape, layer_kwargs, num_ops=2, magnitude=0.5):
    return keras.layers.RandAugment(
        value_range=VALUE_RANGE, num_ops=num_ops, factor=magnitude, **layer_kwargs
    )


def _mixup(image_shape, layer_kwargs, alpha=0.2):
    return keras.layers.MixUp(alpha=alpha, **layer_kwargs)


def _cutmix(image_shape, layer_kwargs, alpha=1.0):
    return keras.layers.CutMix(factor=alpha, **layer_kwargs)


OPS = {
    "random_crop": _random_crop,
    "flip": _flip,
    "zoom": _zoom,
    "rotation": _rotation,
    "translation": _translation,
    "color_jitter": _color_jitter,
    "random_erasing": _random_erasing,
    "cutout": _cutout,
    "rand_augment": _rand_augment,
    "mixup": _mixup,
    "cutmix": _cutmix,
}
# Saturation and hue need three channels (RandAugment's color ops degrade to no-ops on one).
COLOR_OPS = frozenset({"color_jitter"})
# Each preset adds to the one before it. Label-mixing ops (mixup, cutmix) are opt-in: they
# change what accuracy means during training and need longer schedules to pay off.
PRESETS = {
    "none": (),
    "light": ("random_crop", "flip"),
    "standard": ("random_crop", "flip", "rotation", "zoom", "color_jitter"),
    "strong": (
        "random_crop",
        "flip",
        "rotation",
        "zoom",
        "color_jitter",
        "rand_augment",
        "random_erasing",
    ),
}


def build_augmentation(
    preset="standard", *, ops=None, image_shape, num_classes, flip_safe, seed=0, mean=None
):
    """A callable (images, one-hot labels) -> (images, labels) on batches, or None.

    `ops` overrides the preset with a list of op names, `name:value` strings that set an op's
    first parameter (`random_crop:4`, `cutout:8`) or one-key mappings from an op name to its
    parameters, e.g. `["flip", {"rotation": {"degrees": 15}}]`. `mean` is the training images'
    per-channel mean in 0..255, which the model standardizes to zero (cutout fills with it).
    Presets leave out the flip
    when `flip_safe` is False and color ops on 1-channel images; explicit ops that do not fit
    the data are an error. Images stay float32 in 0..255.
    """
    channels = int(image_shape[-1])
    if ops is None:
        checks.one_of("augmentation preset", preset, PRESETS)
        specs = [
            (name, {})
            for name in PRESETS[preset]
            if (name != "flip" or flip_safe) and (name not in COLOR_OPS or channels == 3)
        ]
    else:
        specs = [_parse_op(op) for op in ops]
        for name, _ in specs:
            if name == "flip" and not flip_safe:
                raise ValueError("op 'flip' changes this dataset's labels (flip_safe=False)")
            if name in COLOR_OPS and channels != 3:
                raise ValueError(f"op {name!r} needs 3-channel images, received {channels}")
    if not specs:
        return None
    if num_classes < 2 and any(name in ("mixup", "cutmix") for name, _ in specs):
        raise ValueError(f"mixup and cutmix need at least 2 classes, received {num_classes}")

    layers = [
        _make_op(name, params, image_shape, index, seed + index, mean)
        for index, (name, params) in enumerate(_fuse_geometry(specs, image_shape))
    ]
    pipeline = keras.layers.Pipeline(layers, name="augmentation")

    def augment(images, labels):
        batch = pipeline({"images": images, "labels": labels}, training=True)
        # Random erasing fills with unbounded noise: keep the 0..255 contract.
        return keras.ops.clip(batch["images"], *VALUE_RANGE), batch["labels"]

    return augment


# Geometric ops that, adjacent in a list, fuse into one RandomAffine: each kind once, one shift.
AFFINE_OPS = {
    "random_crop": "shift",
    "translation": "shift",
    "flip": "flip",
    "rotation": "degrees",
    "zoom": "zoom",
}


def _affine_range(name, params, image_shape):
    """RandomAffine's setting for one geometric op, with the op's own defaults."""
    params = {**_user_defaults(name), **params}
    height, width = image_shape[:2]
    if name == "random_crop":
        padding = _crop_padding(image_shape, params["padding"])
        return {"shift": (padding, padding)}
    if name == "translation":
        return {"shift": (params["fraction"] * width, params["fraction"] * height)}
    if name == "flip":
        return {"flip": True}
    if name == "rotation":
        return {"degrees": params["degrees"]}
    return {"zoom": params["factor"]}


def _fuse_geometry(specs, image_shape):
    """`specs` with each run of two or more adjacent geometric ops (AFFINE_OPS, no setting
    twice) replaced by one ("affine", RandomAffine's settings) spec."""
    fused, run = [], []

    def close_run():
        if len(run) > 1:
            settings = {}
            for name, params in run:
                settings.update(_affine_range(name, params, image_shape))
            fused.append(("affine", settings))
        else:
            fused.extend(run)
        run.clear()

    for name, params in specs:
        setting = AFFINE_OPS.get(name)
        if setting is None or setting in {AFFINE_OPS[n] for n, _ in run}:
            close_run()
        if setting is None:
            fused.append((name, params))
        else:
            run.append((name, params))
    close_run()
    return fused


def _parse_op(op):
    """(name, params) of an op given as a name or a one-key mapping; refuses unknown names and
    parameters."""
    if isinstance(op, str):
        name, _, value = op.partition(":")
        params = {}
        if value:
            checks.one_of("augmentation op", name, OPS)
            first = _user_parameters(name)[:1]
            checks.require(first, f"augmentation op {name!r} takes no value, received {op!r}")
            try:
                params[first[0]] = int(value) if value.lstrip("-").isdigit() else float(value)
            except ValueError:
                raise checks.ConfigError(
                    f"augmentation op {op!r}: the value after ':' must be a number, its {first[0]}"
                ) from None
    else:
        checks.require(
            isinstance(op, dict) and len(op) == 1,
            f"an augmentation op is a name, name:value or a one-key mapping "
            f"{{name: {{param: value}}}}, received {op!r}",
        )
        ((name, params),) = op.items()
        params = dict(params or {})
    checks.one_of("augmentation op", name, OPS)
    allowed = _user_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    checks.require(
        not unknown,
        f"unknown parameters {unknown} for augmentation op {name!r}; "
        f"valid parameters: {allowed or 'none'}",
    )
    return name, params


def _user_parameters(name):
    """An op's parameters a user sets: after (image_shape, layer_kwargs), before the keyword-only
    ones, which describe the data."""
    parameters = list(inspect.signature(OPS[name]).parameters.values())[2:]
    return [p.name for p in parameters if p.kind != p.KEYWORD_ONLY]


def _user_defaults(name):
    parameters = inspect.signature(OPS[name]).parameters
    return {p: parameters[p].default for p in _user_parameters(name)}


def _make_op(name, params, image_shape, index, seed, mean):
    # float32 whatever the global dtype policy: mixed precision is for the model, not the data.
    layer_kwargs = {"seed": seed, "name": f"augment_{index}_{name}", "dtype": "float32"}
    if name == "affine":
        return RandomAffine(**params, **layer_kwargs)
    builder = OPS[name]
    if "mean" in inspect.signature(builder).parameters:
        if mean is None:
            raise ValueError(f"augmentation op {name!r} needs the training images' mean")
        params = {**params, "mean": mean}
    return builder(image_shape, layer_kwargs, **params)


def check_config(config):
    checks.one_of("augmentation preset", config.augment.preset, PRESETS)
    for op in config.augment.ops:
        _parse_op(op)
