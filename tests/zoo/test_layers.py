"""The zoo's custom layers and activations keep their registered names, so `.keras` files saved
before any code move still load."""

import pathlib

import keras
import numpy as np

import zoo  # noqa: F401  (registers the zoo's layers, as a user's `import zoo` does)

DATA = pathlib.Path(__file__).parent / "data"


def test_a_model_saved_when_the_layers_lived_in_zoo_blocks_still_loads():
    # Saved by the code before the layers moved out of zoo/blocks.py (config "module":
    # "zoo.blocks"): TrainableSubsampling, lecun_tanh, PartialConnectionConv2D with LeNet's table,
    # LocalResponseNormalization, ParameterFreeShortcut.
    model = keras.saving.load_model(DATA / "custom_layers.keras", safe_mode=True)
    saved = np.load(DATA / "custom_layers_io.npz")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(saved["images"])), saved["outputs"]
    )
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "TrainableSubsampling",
        "Activation",
        "PartialConnectionConv2D",
        "LocalResponseNormalization",
        "ParameterFreeShortcut",
    ]
