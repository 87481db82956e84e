import keras
import numpy as np
import pytest
import tensorflow as tf

from training import augment, data

SHAPE = (48, 48, 3)
MEAN = np.array([121.5, 110.25, 100.0], np.float32)  # a training mean, as the trainer passes it


@pytest.fixture(scope="module")
def signs(shared_datasets):
    """32 real sign-language photos at 48x48 (float32 0..255) and their one-hot labels."""
    splits = data.load_dataset(shared_datasets / "sign_language_digits")
    images, labels = next(iter(data.fit_to_input(splits.train, SHAPE).batch(32)))
    return images.numpy(), np.eye(10, dtype=np.float32)[labels.numpy()]


def build(preset="standard", **kwargs):
    kwargs = {"image_shape": SHAPE, "num_classes": 10, "flip_safe": True, "mean": MEAN, **kwargs}
    return augment.build_augmentation(preset, **kwargs)


def apply(augmentation, images, labels):
    out_images, out_labels = augmentation(tf.constant(images), tf.constant(labels))
    return np.asarray(out_images), np.asarray(out_labels)


@pytest.mark.parametrize("preset", ["light", "standard", "strong"])
def test_presets_keep_shape_dtype_range_and_labels(signs, preset):
    images, labels = signs
    out_images, out_labels = apply(build(preset), images, labels)
    assert out_images.dtype == np.float32 and out_images.shape == images.shape
    assert out_images.min() >= 0 and out_images.max() <= 255
    assert not np.array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)


@pytest.mark.parametrize("op", sorted(augment.OPS))
def test_each_op_keeps_shape_and_range(signs, op):
    images, labels = signs
    out_images, out_labels = apply(build(ops=[op]), images, labels)
    assert out_images.shape == images.shape and out_images.dtype == np.float32
    assert out_images.min() >= 0 and out_images.max() <= 255
    assert out_labels.shape == labels.shape


def test_none_preset_is_no_augmentation():
    assert build("none") is None


def test_presets_grow_in_strength(signs):
    images, labels = signs
    changes = [
        np.abs(apply(build(preset, seed=3), images, labels)[0] - images).mean()
        for preset in ("light", "standard", "strong")
    ]
    assert 0 < changes[0] < changes[1] < changes[2]


def test_same_seed_same_augmentation(signs):
    images, labels = signs
    first = apply(build("standard", seed=7), images, labels)[0]
    np.testing.assert_array_equal(apply(build("standard", seed=7), images, labels)[0], first)
    assert not np.array_equal(apply(build("standard", seed=8), images, labels)[0], first)


def left_bright_batch(channels):
    images = np.zeros((64, 32, 32, channels), np.float32)
    images[:, :, :16] = 255.0
    return images, np.eye(10, dtype=np.float32)[np.arange(64) % 10]


@pytest.mark.parametrize("channels", [1, 3])
def test_flip_only_when_flip_safe(channels):
    images, labels = left_bright_batch(channels)
    shape = (32, 32, channels)

    def left_brighter(flip_safe, preset):
        augmentation = augment.build_augmentation(
            preset, image_shape=shape, num_classes=10, flip_safe=flip_safe
        )
        out = apply(augmentation, images, labels)[0]
        # Shifts, rotations and zooms move these bands by a few pixels, a flip swaps them.
        return out[:, 12:20, 4:10].mean(axis=(1, 2, 3)) > out[:, 12:20, 22:28].mean(axis=(1, 2, 3))

    for preset in ("light", "standard"):
        assert left_brighter(False, preset).all()
    flipped = ~left_brighter(True, "light")
    assert 10 < flipped.sum() < 54
    with pytest.raises(ValueError, match="flip_safe=False"):
        augment.build_augmentation(ops=["flip"], image_shape=shape, num_classes=10, flip_safe=False)


def class_colored_batch():
    """Each image is one flat gray level that tells its class: 10 * class + 20."""
    classes = np.arange(32) % 10
    images = np.broadcast_to((10.0 * classes + 20.0)[:, None, None, None], (32, 16, 16, 3)).astype(
        np.float32
    )
    return images, np.eye(10, dtype=np.float32)[classes]


@pytest.mark.parametrize("op", ["mixup", "cutmix"])
def test_label_mixing_mixes_two_classes_as_the_pixels_do(op):
    images, labels = class_colored_batch()
    augmentation = augment.build_augmentation(
        ops=[op], image_shape=(16, 16, 3), num_classes=10, flip_safe=True
    )
    out_images, out_labels = apply(augmentation, images, labels)
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
    assert ((out_labels > 1e-6).sum(axis=1) <= 2).all()
    assert ((out_labels > 1e-6).sum(axis=1) == 2).sum() >= 16
    levels = 10.0 * np.arange(10) + 20.0
    if op == "mixup":
        # Pixels are the label-weighted blend of the two images' levels.
        np.testing.assert_allclose(out_images[:, 0, 0, 0], out_labels @ levels, atol=1e-3)
    else:
        # Each label weight is the share of pixels pasted from that class's image, up to
        # Keras computing it from the box before its edges snap to pixels (a row and a
        # column of 16 are 2/16 of the area at most).
        shares = np.stack(
            [(np.abs(out_images[..., 0] - level) < 1e-3).mean(axis=(1, 2)) for level in levels],
            axis=1,
        )
        np.testing.assert_allclose(shares, out_labels, atol=2 / 16)


def test_one_channel_presets_leave_out_color_ops_and_explicit_ones_fail():
    images, labels = left_bright_batch(1)
    augmentation = augment.build_augmentation(
        "strong", image_shape=(32, 32, 1), num_classes=10, flip_safe=False
    )
    out_images, _ = apply(augmentation, images, labels)
    assert out_images.shape == images.shape
    with pytest.raises(ValueError, match="'color_jitter' needs 3-channel images, received 1"):
        augment.build_augmentation(
            ops=["color_jitter"], image_shape=(32, 32, 1), num_classes=10, flip_safe=False
        )


def test_unknown_names_and_parameters_list_the_valid_ones():
    with pytest.raises(ValueError, match="'heavy'.*none, light, standard, strong"):
        build("heavy")
    with pytest.raises(ValueError, match="'blur'.*random_crop, flip"):
        build(ops=["blur"])
    with pytest.raises(ValueError, match=r"\['angle'\].*'rotation'.*\['degrees'\]"):
        build(ops=[{"rotation": {"angle": 5}}])
    with pytest.raises(ValueError, match="one-key mapping"):
        build(ops=[("rotation", 5)])


def test_op_parameters_take_effect():
    images, labels = left_bright_batch(3)
    still = apply(build(ops=[{"rotation": {"degrees": 0.0}}]), images, labels)[0]
    np.testing.assert_allclose(still, images, atol=1e-3)
    turned = apply(build(ops=[{"rotation": {"degrees": 90.0}}]), images, labels)[0]
    assert np.abs(turned - images).mean() > 20


def test_runs_in_tf_data_in_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    images, labels = class_colored_batch()
    augmentation = augment.build_augmentation(
        ops=["random_crop", "cutmix"], image_shape=(16, 16, 3), num_classes=10, flip_safe=True
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(8)
        .map(augmentation, num_parallel_calls=tf.data.AUTOTUNE)
    )
    for batch_images, batch_labels in dataset:
        assert batch_images.dtype == tf.float32 and batch_labels.dtype == tf.float32
        assert batch_images.shape == (8, 16, 16, 3)


def test_cutout_fills_a_square_with_the_mean_the_model_standardizes_to_zero():
    from training.config import TrainConfig
    from training.trainer import build_model

    images = np.full((6, *SHAPE), 200.0, np.float32)
    labels = np.eye(10, dtype=np.float32)[:6]
    for op, size in (("cutout", 24), ("cutout:8", 8)):  # default: half the side
        out = apply(build(ops=[op], seed=1), images, labels)[0]
        for image in out:
            erased = np.any(image != 200.0, axis=-1)
            rows, cols = np.nonzero(erased)
            assert erased.sum() == size * size  # one size x size square
            assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (size, size)
            np.testing.assert_array_equal(image[erased], np.broadcast_to(MEAN, (size * size, 3)))
            np.testing.assert_array_equal(image[~erased], 200.0)
    # The model's first layer maps that fill to exactly zero: the notes' cutout of a normalized
    # input.
    model = build_model(TrainConfig(), SHAPE, 10, MEAN, np.array([50.0, 60.0, 70.0]))
    standardized = model.get_layer("standardize")(out)
    np.testing.assert_array_equal(np.asarray(standardized)[np.any(out != 200.0, axis=-1)], 0.0)
    gray = augment.build_augmentation(
        ops=["cutout:3"],
        image_shape=(8, 8, 1),
        num_classes=10,
        flip_safe=False,
        mean=np.array([17.0]),
    )
    out = apply(gray, np.full((2, 8, 8, 1), 90.0, np.float32), labels[:2])[0]
    assert sorted(np.unique(out)) == [17.0, 90.0] and (out == 17.0).sum() == 2 * 9
    with pytest.raises(ValueError, match="cutout size must be 1..48 pixels.*received 60"):
        build(ops=["cutout:60"])
    with pytest.raises(ValueError, match="'flip' takes no value"):
        build(ops=["flip:3"])
    with pytest.raises(ValueError, match="value after ':' must be a number, its size"):
        build(ops=["cutout:big"])


def test_op_values_after_a_colon_set_the_first_parameter():
    images, labels = left_bright_batch(3)
    np.testing.assert_allclose(
        apply(build(ops=["rotation:0"]), images, labels)[0], images, atol=1e-3
    )
    assert np.abs(apply(build(ops=["rotation:90"]), images, labels)[0] - images).mean() > 20


# ---------------------------------------------------------------------------- the colour jitter


def factors(count, brightness=0.0, contrast=1.0, saturation=1.0, hue=0.0):
    return {
        name: tf.fill((count,), float(value))
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
            ("hue", hue),
        )
    }


def jittered(images, **values):
    return np.asarray(augment.jitter_colors(tf.constant(images), **factors(len(images), **values)))


def test_the_colour_jitter_is_exact_where_it_has_a_closed_form(signs):
    images = signs[0][:4]
    np.testing.assert_allclose(jittered(images), images, atol=2e-3)  # neutral factors
    # A third of a turn of hue cycles the channels: the new green is the old red.
    np.testing.assert_allclose(jittered(images, hue=1 / 3), images[..., [2, 0, 1]], atol=2e-3)
    # Saturation 0: every channel is the luma grey.
    grey = images @ np.array(augment.LUMA, np.float32)
    np.testing.assert_allclose(
        jittered(images, saturation=0.0), np.stack([grey] * 3, -1), atol=2e-3
    )
    # Contrast scales about each channel's mean; brightness adds; both clipped to 0..255.
    flat = np.full((1, 4, 4, 3), 100.0, np.float32)
    flat[0, 0, 0] = [140.0, 60.0, 100.0]
    out = jittered(flat, contrast=0.5, brightness=20.0)
    mean = flat.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, np.clip((flat - mean) * 0.5 + mean + 20.0, 0, 255), atol=2e-3)
    assert jittered(flat, brightness=300.0).max() == 255.0


def test_the_colour_jitter_draws_per_image_factors_in_keras_ranges(signs):
    images = np.repeat(signs[0][:1], 64, axis=0)
    layer = augment.LinearColorJitter(0.0, 0.0, 0.0, 0.5, seed=1)
    hue_only = np.asarray(layer(tf.constant(images)))
    # Hue alone keeps each pixel's channel mean (a rotation about the grey axis; pixels it
    # pushed out of 0..255 are clipped)...
    inside = ((hue_only > 0) & (hue_only < 255)).all(-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(hue_only.mean(-1)[inside], images.mean(-1)[inside], atol=0.05)
    # ...and differs from image to image.
    assert len({round(float(np.abs(out - images[0]).mean()), 3) for out in hue_only}) > 32
    brightness = augment.LinearColorJitter(0.2, 0.0, 0.0, 0.0, seed=1)
    shift = (np.asarray(brightness(tf.constant(images))) - images).mean(axis=(1, 2, 3))
    assert np.abs(shift).max() <= 0.2 * 255 and np.abs(shift).max() > 0.1 * 255
    config = layer.get_config()
    assert augment.LinearColorJitter.from_config(config).get_config() == config


def test_colour_jitter_factors_outside_their_range_are_refused():
    with pytest.raises(ValueError, match=r"saturation must be in \[0, 1\), received 1.5"):
        build(ops=[{"color_jitter": {"saturation": 1.5}}])
    with pytest.raises(ValueError, match=r"hue must be in \[0, 1\], received -0.1"):
        build(ops=[{"color_jitter": {"hue": -0.1}}])


# ---------------------------------------------------------------------------- fused geometry


def transformed(images, **values):
    count = len(images)
    neutral = {"shift_x": 0, "shift_y": 0, "mirror": 1, "angle": 0, "zoom_x": 1, "zoom_y": 1}
    arguments = {k: tf.fill((count,), float(v)) for k, v in {**neutral, **values}.items()}
    transforms = augment.affine_transforms(images.shape[1:], **arguments)
    return np.asarray(augment.sample_affine(tf.constant(images), transforms))


def test_the_affine_transform_is_exact_where_it_has_a_closed_form(signs):
    images = signs[0][:3]
    np.testing.assert_array_equal(transformed(images), images)
    np.testing.assert_array_equal(transformed(images, mirror=-1), images[:, :, ::-1])
    shifted = np.zeros_like(images)
    shifted[:, :, :-2] = images[:, :, 2:]  # the output samples the input 2 pixels right; zeros
    np.testing.assert_array_equal(transformed(images, shift_x=2), shifted)
    quarter = transformed(images, angle=np.pi / 2)
    turns = [np.abs(quarter - np.rot90(images, k, axes=(1, 2))).max() for k in (1, 3)]
    assert min(turns) < 0.01
    # Zoomed out by 2 about the centre (4, 4) of a 9x9 image: every other pixel, zeros around.
    nine = images[:, :9, :9]
    zoomed = transformed(nine, zoom_x=2, zoom_y=2)
    np.testing.assert_array_equal(zoomed[:, 2:7, 2:7], nine[:, ::2, ::2])
    assert not zoomed[:, :2].any() and not zoomed[:, :, 7:].any()


def test_our_affine_sampling_matches_keras_affine_transform_also_far_outside(signs):
    rng = np.random.default_rng(0)
    for images in (signs[0][:6], signs[0][:6, :9, :13, :1]):  # RGB, and grey non-square
        count = len(images)
        arguments = {
            "shift_x": rng.uniform(-20, 20, count),
            "shift_y": rng.uniform(-20, 20, count),
            "mirror": np.array([1, -1] * (count // 2)),
            "angle": rng.uniform(-np.pi, np.pi, count),
            "zoom_x": rng.uniform(0.3, 3, count),
            "zoom_y": rng.uniform(0.3, 3, count),
        }
        arguments = {k: tf.constant(v, tf.float32) for k, v in arguments.items()}
        transforms = augment.affine_transforms(images.shape[1:], **arguments)
        keras_out = keras.ops.image.affine_transform(
            tf.constant(images), transforms, data_format="channels_last", **augment.FILL
        )
        ours = augment.sample_affine(tf.constant(images), transforms)
        assert np.asarray(keras_out == 0).mean() > 0.1  # some pixels sample outside
        np.testing.assert_allclose(ours, keras_out, atol=5e-3)  # XLA's float32 rounding


def layer_names(augmentation):
    pipeline = augmentation.__closure__[0].cell_contents
    return [layer.name for layer in pipeline._pipeline_layers]


def test_adjacent_geometric_ops_fuse_into_one_transform_with_their_settings():
    standard = build("standard")
    assert layer_names(standard) == ["augment_0_affine", "augment_1_color_jitter"]
    affine = standard.__closure__[0].cell_contents._pipeline_layers[0]
    assert (affine.shift, affine.flip, affine.degrees, affine.zoom) == ((6, 6), True, 10, 0.1)
    # One shift per transform; a lone geometric op stays Keras' layer.
    assert layer_names(build(ops=["random_crop", "translation", "flip"])) == [
        "augment_0_random_crop",
        "augment_1_affine",
    ]
    assert layer_names(build(ops=["rotation", "cutout", "zoom"])) == [
        "augment_0_rotation",
        "augment_1_cutout",
        "augment_2_zoom",
    ]


def test_a_flip_only_transform_mirrors_about_half_the_images(signs):
    images = np.repeat(signs[0][:1], 64, axis=0)
    out = np.asarray(augment.RandomAffine(flip=True, seed=0)(tf.constant(images)))
    mirrored = [np.array_equal(o, images[0][:, ::-1]) for o in out]
    unchanged = [np.array_equal(o, images[0]) for o in out]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 16 < sum(mirrored) < 48
