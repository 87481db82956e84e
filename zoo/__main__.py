"""`python -m zoo [PATTERN]`: the table of models (name, params, trainable params, GFLOPs at the
default input, default input, paper)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse

COLUMNS = ("model", "params", "trainable", "GFLOPs", "default input", "paper")


def table_row(description):
    return (
        description["name"],
        f"{description['params']:,}",
        f"{description['trainable_params']:,}",
        f"{description['flops'] / 1e9:.3f}",
        "x".join(map(str, description["default_input_shape"])),
        description["paper"],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__.split(": ", 1)[1])
    parser.add_argument(
        "pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'"
    )
    args = parser.parse_args(argv)

    import keras

    import zoo

    names = zoo.list_models(args.pattern)
    if not names:
        parser.exit(
            1, f"No model matches {args.pattern!r}. Models: {', '.join(zoo.list_models())}\n"
        )
    keras.ops.zeros(1)  # device start-up logs go to stderr before the table, not inside it
    widths = (max(len(n) for n in names), 13, 13, 7, 13)
    header = "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(COLUMNS, widths))
    )
    print(header + "  " + COLUMNS[-1])
    print("-" * (len(header) + 40))
    for name in names:
        row = table_row(zoo.describe(name))
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:5], widths[1:])]
        print("  ".join(cells) + "  " + row[5], flush=True)
        keras.backend.clear_session()  # the table builds ~30 models; keep memory flat


if __name__ == "__main__":
    main()
