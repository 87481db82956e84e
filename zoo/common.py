"""What every family does the same way: the documented arguments, their checks, the input, the
classifier head."""

import keras

from zoo.options import ACTIVATIONS, INITIALIZERS, NORMALIZATIONS, LayerOptions

POOLINGS = (None, "avg", "max")
CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid", None)

# The `Args:` text of the arguments every builder takes (a family may say more about its own use
# of one, e.g. where its dropout goes). The registry writes each builder's docstring from these.
ARGUMENT_DOCS = {
    "input_shape": "(height, width, channels), channels last, any channel count; None: the "
    "default input. Below the model's minimum size a ValueError names it.",
    "num_classes": "classes of the classifier.",
    "include_top": "end in the classifier; False: a headless feature extractor (see pooling).",
    "pooling": "output of a headless model: None (the last feature map), 'avg' or 'max' "
    "(global pooling to a feature vector).",
    "classifier_activation": "'softmax', 'sigmoid' (binary, with num_classes=1) or None "
    "(logits); computed in float32 under mixed precision.",
    "weights": "None (random initialization), a .weights.h5/.keras path, or 'imagenet' where "
    "keras.applications has the same architecture.",
    "activation": f"hidden activation: {', '.join(ACTIVATIONS)}.",
    "leaky_slope": "negative slope of activation='leaky_relu', in [0, 1); other activations "
    "ignore it.",
    "kernel_initializer": f"one of {', '.join(INITIALIZERS)}.",
    "normalization": f"one of {', '.join(NORMALIZATIONS)}.",
    "dropout_rate": "dropout before the classifier, in [0, 1); 0 removes the Dropout layer.",
    "weight_decay": "L2 penalty on kernels (not biases or normalization scales), >= 0.",
    "name": "the Keras model's name.",
}


def check_head_arguments(name, *, num_classes, include_top, pooling, classifier_activation):
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive integer, got {num_classes!r}.")
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of None, 'avg', 'max'; got {pooling!r}.")
    if classifier_activation not in CLASSIFIER_ACTIVATIONS:
        raise ValueError(
            f"{name}: classifier_activation must be 'softmax', 'sigmoid' or None (logits); "
            f"got {classifier_activation!r}."
        )
    if include_top and classifier_activation == "softmax" and num_classes == 1:
        raise ValueError(
            f"{name}: softmax over a single class is constant; use classifier_activation="
            "'sigmoid' for a binary classifier with num_classes=1."
        )


def check_dropout(name, dropout_rate):
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{name}: dropout_rate must be in [0, 1), got {dropout_rate!r}.")


def layer_options(
    *, activation, leaky_slope, kernel_initializer, normalization, weight_decay, **bn
):
    """The `LayerOptions` for a builder's cross-cutting keyword arguments."""
    return LayerOptions(
        activation=activation,
        leaky_slope=leaky_slope,
        kernel_initializer=kernel_initializer,
        normalization=normalization,
        weight_decay=weight_decay,
        **bn,
    )


def model_input(input_shape):
    return keras.Input(shape=input_shape, name="image")


def pool_features(x, pooling):
    """The headless output: the feature map, or a vector after global avg/max pooling."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def classifier(x, *, num_classes, classifier_activation, options, name="predictions"):
    """The final dense layer. Its activation runs in float32 so a mixed-precision model still
    returns float32 probabilities (or logits)."""
    x = options.dense(num_classes, name=f"{name}_dense")(x)
    return keras.layers.Activation(classifier_activation or "linear", dtype="float32", name=name)(x)


def global_pool_classifier(
    x, *, include_top, pooling, num_classes, classifier_activation, dropout_rate, options
):
    """The head modern families share: global average pool, dropout, dense (or headless)."""
    if not include_top:
        return pool_features(x, pooling)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
    return classifier(
        x, num_classes=num_classes, classifier_activation=classifier_activation, options=options
    )
