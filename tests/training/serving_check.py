"""Runs exported models with none of this project's code, as a server or a phone would.

    python serving_check.py JOBS.json

JOBS.json: {"inputs": "inputs.npz", "jobs": [[name, kind, path], ...]} where inputs.npz holds
`pixels` (float32 [N, H, W, C] at the model's input size) and `files` (image file paths), and
kind is one of saved_model_bytes, saved_model_uint8, saved_model_float, litert, onnx. Prints
{name: probabilities as nested lists, "project_modules": [...]} as JSON on stdout.
"""

import json
import pathlib
import sys

import numpy as np

LOADED = {}  # each SavedModel is loaded once for its three signatures


def saved_model(path, signature_name, feed):
    import tensorflow as tf

    if path not in LOADED:
        LOADED[path] = tf.saved_model.load(path)
    signature = LOADED[path].signatures[signature_name]
    return signature(**{key: tf.constant(value) for key, value in feed.items()})[
        "probabilities"
    ].numpy()


def litert(path, pixels):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    (image,), (probabilities,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(image["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(image["index"], pixels)
    interpreter.invoke()
    return interpreter.get_tensor(probabilities["index"])


def onnx(path, pixels):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": pixels})[0]


def main(jobs_path):
    with open(jobs_path) as file:
        spec = json.load(file)
    with np.load(spec["inputs"]) as inputs:
        pixels, files = inputs["pixels"].astype(np.float32), [str(f) for f in inputs["files"]]
    results = {}
    for name, kind, path in spec["jobs"]:
        if kind == "saved_model_bytes":
            contents = [pathlib.Path(f).read_bytes() for f in files]
            results[name] = saved_model(path, "serving_bytes", {"image_bytes": contents})
        elif kind == "saved_model_uint8":
            import tensorflow as tf

            decoded = np.stack(
                [tf.io.decode_image(pathlib.Path(f).read_bytes()).numpy() for f in files]
            )
            results[name] = saved_model(path, "serving_default", {"image": decoded})
        elif kind == "saved_model_float":
            results[name] = saved_model(path, "serving_float", {"image": pixels})
        elif kind == "litert":
            results[name] = litert(path, pixels)
        elif kind == "onnx":
            results[name] = onnx(path, pixels)
        else:
            raise ValueError(f"unknown kind {kind!r}")
    output = {name: np.asarray(value, np.float64).tolist() for name, value in results.items()}
    output["project_modules"] = sorted(
        name for name in sys.modules if name.split(".")[0] in ("training", "tuning", "zoo", "tests")
    )
    print(json.dumps(output))


if __name__ == "__main__":
    main(sys.argv[1])
