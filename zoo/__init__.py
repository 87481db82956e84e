"""The model zoo: classic CNNs as Keras functional builders, exact to their papers.

import zoo
zoo.list_models()                       # every registered name
model = zoo.create("resnet20", input_shape=(32, 32, 3), num_classes=10)
zoo.describe("vgg16")                   # params, FLOPs, input shapes, paper
from zoo import resnet50                # every builder is importable by name
help(zoo.resnet50)                      # its arguments, defaults and what they mean
"""

from zoo import families  # noqa: F401  (importing the families registers their builders)
from zoo.describe import describe
from zoo.registry import create, get_builder, list_models, model_info


def __getattr__(name):
    # `from zoo import resnet50` and `zoo.resnet50(...)` resolve through the registry, so the
    # list of builders lives in one place.
    if name in list_models():
        return get_builder(name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(list_models()))


__all__ = ["create", "describe", "get_builder", "list_models", "model_info", *list_models()]
