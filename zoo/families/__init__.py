"""One module per model family; importing them registers their builders. The builders are
reached as `zoo.<name>`: the family modules sit here so that no module shadows a builder of the
same name (`zoo.mobilenet` is the MobileNet builder, not its module)."""

from zoo.families import alexnet, googlenet, lenet, mobilenet, resnet, stagewise, vgg

__all__ = ["alexnet", "googlenet", "lenet", "mobilenet", "resnet", "stagewise", "vgg"]
