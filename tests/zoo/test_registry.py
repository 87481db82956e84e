import inspect
import pydoc
import re

import pytest

import zoo

# What every builder takes, besides its family's knobs.
CROSS_CUTTING = {
    "input_shape",
    "num_classes",
    "include_top",
    "pooling",
    "classifier_activation",
    "weights",
    "activation",
    "leaky_slope",
    "kernel_initializer",
    "normalization",
    "dropout_rate",
    "weight_decay",
}


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="Unknown model 'resnet51'.*Did you mean.*resnet50"):
        zoo.create("resnet51")


def test_list_models_filters_by_pattern():
    assert zoo.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]


# One test over all names rather than one per name: the per-test Keras clean-up (about 1 s of
# garbage collection each) would cost more than these checks.
def test_every_name_imports_as_its_registered_builder():
    # A family module of the same name (zoo/mobilenet.py once) would shadow the builder.
    for name in zoo.list_models():
        builder = zoo.get_builder(name)
        namespace = {}
        exec(f"from zoo import {name}", namespace)  # noqa: S102  (the statement users write)
        assert namespace[name] is builder, name
        assert getattr(zoo, name) is builder, name
        assert callable(builder) and builder.__name__ == name
        assert name in dir(zoo) and name in zoo.__all__, name


def test_every_builder_shows_and_documents_its_arguments():
    for name in zoo.list_models():
        parameters = inspect.signature(zoo.get_builder(name)).parameters
        assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters.values())
        assert CROSS_CUTTING <= set(parameters), name
        assert parameters["leaky_slope"].default == 0.01, name
        assert parameters["name"].default == name
        shown = pydoc.render_doc(zoo.get_builder(name), renderer=pydoc.plaintext)
        assert "leaky_slope=0.01" in shown, name  # the signature line, with its defaults
        documented = re.findall(r"^ {8}(\w+): ", shown.split("Args:")[1], re.MULTILINE)
        assert documented == list(parameters), name


def test_a_misspelled_option_fails_at_the_call():
    for name in zoo.list_models():
        with pytest.raises(
            TypeError,
            match=rf"^{name}\(\) got an unexpected keyword argument "
            r"'leaky_slop'\. Did you mean 'leaky_slope'\? Its "
            r"arguments: input_shape, ",
        ):
            zoo.create(name, leaky_slop=0.1)


def test_a_positional_argument_after_input_shape_is_refused():
    with pytest.raises(TypeError, match=r"resnet20\(\): too many positional arguments"):
        zoo.get_builder("resnet20")((32, 32, 3), 10)


@pytest.mark.parametrize("bad", [(32, 32), (32, 32, 0), (32.0, 32, 3), "32x32"])
def test_malformed_input_shape_is_rejected(bad):
    with pytest.raises(ValueError, match="height, width, channels"):
        zoo.create("resnet20", input_shape=bad)


def test_bad_weights_argument_is_rejected_before_building(tmp_path):
    with pytest.raises(ValueError, match="no ImageNet weights"):
        zoo.create("lenet5", weights="imagenet")
    with pytest.raises(ValueError, match=".weights.h5 or .keras"):
        zoo.create("lenet5", weights=str(tmp_path / "w.bin"))
    with pytest.raises(FileNotFoundError):
        zoo.create("lenet5", weights=str(tmp_path / "missing.weights.h5"))


def test_weights_from_a_file_round_trip(tmp_path):
    import numpy as np

    model = zoo.create("lenet5")
    path = tmp_path / "lenet.weights.h5"
    model.save_weights(path)
    again = zoo.create("lenet5", weights=str(path))
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "relu7"}, "Unknown activation 'relu7'"),
        ({"normalization": "batchy"}, "Unknown normalization"),
        ({"kernel_initializer": "nope"}, "Unknown kernel_initializer"),
        ({"pooling": "mean", "include_top": False}, "pooling must be one of"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"classifier_activation": "relu"}, "classifier_activation must be"),
    ],
)
def test_bad_options_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.create("resnet20", **kwargs)


def test_command_line_table_lists_models_with_exact_counts(capsys):
    from zoo.__main__ import main

    main(["lenet5*"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["model", "params", "trainable", "GFLOPs"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"lenet5", "lenet5_modern"}
    assert rows["lenet5"][1:3] == ["60,850", "60,850"]
    assert rows["lenet5"][4] == "32x32x1"
    assert rows["lenet5"][5:8] == ["LeCun", "et", "al."]


def test_command_line_table_rejects_an_unmatched_pattern(capsys):
    from zoo.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["nothing*"])
    assert stop.value.code == 1
    assert "No model matches 'nothing*'" in capsys.readouterr().err
