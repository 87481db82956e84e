"""Batch augmentation for the trainer, built from Keras' own preprocessing layers.

`build_augmentation` returns a callable that maps a batch of (float32 images 0..255, one-hot
labels) to an augmented batch, for `tf.data.Dataset.map` on the CPU.
"""

import inspect

import keras

from training import checks

VALUE_RANGE = (0, 255)
# Geometric ops fill uncovered pixels with black, as padding-and-cropping does.
FILL = {"fill_mode": "constant", "fill_value": 0.0}


def _random_crop(image_shape, layer_kwargs, padding=None):
    """Pad-and-crop: a random shift of up to `padding` pixels (default 1/8 of the side)."""
    height, width = image_shape[:2]
    padding = max(1, round(min(height, width) / 8)) if padding is None else padding
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
    # RandomSaturation leaves images unchanged at 0.5: jitter around it.
    return keras.layers.RandomColorJitter(
        value_range=VALUE_RANGE,
        brightness_factor=brightness,
        contrast_factor=contrast,
        saturation_factor=(0.5 - saturation / 2, 0.5 + saturation / 2),
        hue_factor=hue,
        **layer_kwargs,
    )


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
        for index, (name, params) in enumerate(specs)
    ]
    pipeline = keras.layers.Pipeline(layers, name="augmentation")

    def augment(images, labels):
        batch = pipeline({"images": images, "labels": labels}, training=True)
        # Random erasing fills with unbounded noise: keep the 0..255 contract.
        return keras.ops.clip(batch["images"], *VALUE_RANGE), batch["labels"]

    return augment


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


def _make_op(name, params, image_shape, index, seed, mean):
    builder = OPS[name]
    # float32 whatever the global dtype policy: mixed precision is for the model, not the data.
    layer_kwargs = {"seed": seed, "name": f"augment_{index}_{name}", "dtype": "float32"}
    if "mean" in inspect.signature(builder).parameters:
        if mean is None:
            raise ValueError(f"augmentation op {name!r} needs the training images' mean")
        params = {**params, "mean": mean}
    return builder(image_shape, layer_kwargs, **params)


def check_config(config):
    checks.one_of("augmentation preset", config.augment.preset, PRESETS)
    for op in config.augment.ops:
        _parse_op(op)
