"""`python -m training.predict RUN_DIR IMAGE|FOLDER [...]`: top-k classes of image files.

The files go through the run's exported SavedModel (its `serving_bytes` signature), not the
training code, so a prediction here is what a server holding that SavedModel would answer.

    python -m training.predict saved_models/lenet5-digits photo.png --top-k 3
    python -m training.predict saved_models/lenet5-digits photos/ --json
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import json
import pathlib
import sys

from training.data import IMAGE_EXTENSIONS

# What tf.io.decode_image, and so the SavedModel's serving_bytes signature, reads.
DECODABLE = ("JPEG", "PNG", "BMP", "GIF")


def image_files(paths):
    """The files named, and the image files (by extension) anywhere under the folders named."""
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            files.append(path)
    return files


def predict_files(run_dir, paths, *, top_k=5, version=None):
    """({file: [(class name, probability), ...] best first}, {file: why it was skipped})."""
    import tensorflow as tf

    from training import serving

    loaded, class_names = serving.load(run_dir, version)
    signature = loaded.signatures["serving_bytes"]
    predictions, skipped = {}, {}
    for path in image_files(paths):
        try:
            contents = path.read_bytes()
            # One file a call: a file that does not decode fails only its own call.
            probabilities = signature(image_bytes=tf.constant([contents]))["probabilities"]
        except OSError as error:
            skipped[str(path)] = error.strerror or str(error)
            continue
        except tf.errors.InvalidArgumentError:
            skipped[str(path)] = f"not a decodable image ({', '.join(DECODABLE)})"
            continue
        values = probabilities.numpy()[0]
        best = values.argsort()[::-1][:top_k]
        predictions[str(path)] = [(class_names[i], float(values[i])) for i in best]
    return predictions, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training.predict",
        description="Classify image files with a run's exported SavedModel.",
    )
    parser.add_argument("run_dir", help="a run directory holding serving/<version>/")
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (5)")
    parser.add_argument("--version", type=int, help="SavedModel version (default: the newest)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, received {args.top_k}")
    try:
        predictions, skipped = predict_files(
            args.run_dir, args.images, top_k=args.top_k, version=args.version
        )
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    path: [{"class_name": name, "probability": round(p, 6)} for name, p in top]
                    for path, top in predictions.items()
                },
                indent=2,
            )
        )
    else:
        for path, top in predictions.items():
            print(path)
            for name, probability in top:
                print(f"  {probability:8.4f}  {name}")
    if not predictions:
        sys.exit(
            "error: none of the images could be read"
            if skipped
            else f"error: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {' '.join(args.images)}"
        )


if __name__ == "__main__":
    main()
