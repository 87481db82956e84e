"""The linear probe's cached features: where a model splits into frozen features and a
trainable head, and where it must not."""

import keras
import numpy as np
import pytest

import zoo
from training import probe_cache


def probed(model, trainable=("predictions_dense",)):
    for layer in model.layers:
        layer.trainable = layer.name in trainable
    return model


def pixels(shape, count=4):
    return np.random.default_rng(0).uniform(0, 255, (count, *shape)).astype("float32")


def test_a_nested_backbone_splits_before_the_dropout_ahead_of_its_head():
    backbone = zoo.create("resnet20", input_shape=(32, 32, 3), num_classes=5, dropout_rate=0.5)
    inputs = keras.Input((32, 32, 3))
    outer = keras.Model(inputs, backbone(keras.layers.Rescaling(1 / 255)(inputs)))
    for layer in backbone.layers:
        layer.trainable = layer.name == "predictions_dense"
    features, head = probe_cache.split_at_head(outer)
    assert features.output.shape[1:] == (64,)  # the pooled features, the dropout left out
    assert [layer.name for layer in head.layers if probe_cache._is_random(layer)]
    x = pixels((32, 32, 3))
    np.testing.assert_allclose(head(features(x)), outer(x), rtol=1e-5, atol=1e-6)
    dense = backbone.get_layer("predictions_dense")
    assert [w.path for w in head.trainable_weights] == [w.path for w in dense.trainable_weights]


def test_a_head_behind_a_frozen_backbone_takes_its_pooled_output():
    backbone = zoo.create("lenet5", input_shape=(32, 32, 1), num_classes=10)
    backbone.trainable = False
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.GlobalAveragePooling2D()(backbone.get_layer("c3_conv").output)
    cut = keras.Model(backbone.input, x)
    outputs = keras.layers.Dense(3, name="predictions_dense")(cut(inputs))
    features, head = probe_cache.split_at_head(keras.Model(inputs, outputs))
    assert features.output.shape[1:] == (16,)
    assert [layer.name for layer in head.layers][1:] == ["predictions_dense"]


@pytest.mark.parametrize(
    ("frozen_end", "reason"),
    [
        (lambda x: keras.layers.Dropout(0.5, name="frozen_drop")(x), "random layers.*frozen_drop"),
        (lambda x: x, None),
    ],
)
def test_a_random_frozen_layer_refuses_the_cache(frozen_end, reason):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="frozen")(inputs)
    x = keras.layers.Dense(8, name="frozen_too")(frozen_end(x))
    outputs = keras.layers.Dense(2, name="predictions_dense")(x)
    model = probed(keras.Model(inputs, outputs))
    if reason is None:
        features, _ = probe_cache.split_at_head(model)
        assert features.output.shape[1:] == (8,)
    else:
        with pytest.raises(probe_cache.NotCacheable, match=reason):
            probe_cache.split_at_head(model)


def test_a_branch_around_the_cut_or_nothing_to_train_refuses_the_cache():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="frozen")(inputs)
    y = keras.layers.Dense(8, name="predictions_dense")(x)
    model = probed(keras.Model(inputs, keras.layers.Add()([inputs, y])))
    with pytest.raises(probe_cache.NotCacheable, match="not a chain"):
        probe_cache.split_at_head(model)
    with pytest.raises(probe_cache.NotCacheable, match="no layer trains"):
        probe_cache.split_at_head(probed(model, trainable=()))


def test_too_many_features_stay_uncached(monkeypatch):
    model = probed(zoo.create("lenet5", input_shape=(32, 32, 1), num_classes=10))
    monkeypatch.setattr(probe_cache, "MAX_CACHE_BYTES", 84 * 4 * 99)
    with pytest.raises(probe_cache.NotCacheable, match="features of 100 images"):
        probe_cache.build(
            probe_cache.split_at_head(model),
            train=None,
            validation=None,
            num_examples={"train": 90, "validation": 10},
            batch_size=32,
            pipeline_args={"num_classes": 10},
            seed=0,
            verbose=0,
        )
