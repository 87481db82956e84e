"""How large is each exported format of a run, and how closely does it agree with the Keras model?

On the run's own test split (rebuilt from its config.yaml), prints for the SavedModel
(serving_float), every LiteRT file and the ONNX file found in RUN_DIR: its size, the share of
test images whose top-1 class equals the Keras model's, the largest probability difference, and
its test accuracy. `max |dp| f32` compares with the float32 copy the LiteRT and ONNX files are
made from, which differs from the model itself only for mixed-precision runs. The formats run
in a separate process that imports none of this project's code (tests/training/serving_check.py),
as the tests run them.

    python -m training.export RUN_DIR --format litert --quantize none --quantize float16 \\
        --quantize int8 --format onnx
    python benchmarks/export_formats.py RUN_DIR
"""

import argparse
import importlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Before TensorFlow loads: importing `training` turns oneDNN on (training/onednn.py).
importlib.import_module("training")

import keras
import numpy as np

from training import export, serving, trainer

CHECKER = REPO / "tests" / "training" / "serving_check.py"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    run_dir = parser.parse_args().run_dir

    prepared = trainer.prepare_data(export.load_run_config(run_dir))
    pixels = np.stack([image for image, _ in prepared.test.as_numpy_iterator()])
    labels = np.array([label for _, label in prepared.test.as_numpy_iterator()])
    model = keras.saving.load_model(run_dir / export.MODEL_FILE, compile=False)
    expected = np.asarray(serving.class_probabilities(model.predict(pixels, verbose=0)))
    # What LiteRT and ONNX hold: the same weights computing in float32 (differs under mixed
    # precision only).
    float32 = np.asarray(
        serving.class_probabilities(export.float32_copy(model).predict(pixels, verbose=0))
    )

    saved_model = serving.saved_model_path(run_dir)
    jobs = [["SavedModel", "saved_model_float", str(saved_model)]]
    jobs += [
        [name, "litert", str(run_dir / name)]
        for name in export.LITERT_FILES.values()
        if (run_dir / name).is_file()
    ]
    if (run_dir / export.ONNX_FILE).is_file():
        jobs.append([export.ONNX_FILE, "onnx", str(run_dir / export.ONNX_FILE)])
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        np.savez(work / "inputs.npz", pixels=pixels, files=np.array([], dtype=str))
        (work / "jobs.json").write_text(
            json.dumps({"inputs": str(work / "inputs.npz"), "jobs": jobs})
        )
        result = subprocess.run(
            [sys.executable, str(CHECKER), str(work / "jobs.json")],
            capture_output=True,
            text=True,
            check=True,
        )
    served = json.loads(result.stdout.strip().splitlines()[-1])

    print(
        f"{run_dir}: {len(labels)} test images, Keras model accuracy "
        f"{np.mean(expected.argmax(1) == labels):.2%}"
    )
    print(
        f"{'format':24} {'size':>9}  {'same top-1':>10}  {'max |dp|':>9}  "
        f"{'max |dp| f32':>12}  {'accuracy':>8}"
    )
    for name, _, path in jobs:
        path = pathlib.Path(path)
        size = (
            sum(p.stat().st_size for p in path.rglob("*"))
            if path.is_dir()
            else (path.stat().st_size)
        )
        probabilities = np.array(served[name])
        print(
            f"{name:24} {size / 1e3:7.0f} kB  "
            f"{np.mean(probabilities.argmax(1) == expected.argmax(1)):10.2%}  "
            f"{np.abs(probabilities - expected).max():9.1e}  "
            f"{np.abs(probabilities - float32).max():12.1e}  "
            f"{np.mean(probabilities.argmax(1) == labels):8.2%}"
        )


if __name__ == "__main__":
    main()
