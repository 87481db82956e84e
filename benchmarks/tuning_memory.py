"""Resident memory across the trials of a search: it should stay flat.

    python benchmarks/tuning_memory.py [--trials 10]

Runs a random search of tiny stagewise CNNs on the digits (1 epoch each) and prints the
process's resident set size after every trial. KerasTuner clears the Keras session before each
build; without that, every trial's graphs and weights would pile up.
"""

import argparse
import importlib
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# Before TensorFlow loads: importing `training` turns oneDNN on (training/onednn.py).
importlib.import_module("training")


def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()

    from tuning import hypermodel
    from tuning.search import SearchSettings, run_search

    readings = []
    fit = hypermodel.TrialHyperModel.fit

    def measured_fit(self, hp, model, **kwargs):
        result = fit(self, hp, model, **kwargs)
        readings.append(rss_mib())
        return result

    hypermodel.TrialHyperModel.fit = measured_fit
    fixed = {
        "epochs": 1,
        "data": {"dataset": "digits", "image_size": 8},
        "model": {"name": "stagewise_cnn", "options": {"dense_layers": 0}},
        "hardware": {"precision": "float32"},
    }
    space = {
        "model.options.num_stages": {"min": 1, "max": 3},
        "model.options.filters": {"values": [4, 8, 16]},
        "augment.preset": None,
    }
    with tempfile.TemporaryDirectory() as output:
        run_search(
            fixed,
            SearchSettings(
                name="memory", output_dir=output, max_trials=args.trials, epochs=1, patience=0
            ),
            space,
        )
    for trial, mib in enumerate(readings):
        print(f"after trial {trial}: {mib:.0f} MiB")
    later = readings[1:]
    print(
        f"growth from trial 1 to {len(readings) - 1}: {later[-1] - later[0]:+.0f} MiB "
        f"({(later[-1] - later[0]) / max(len(later) - 1, 1):+.1f} MiB per trial)"
    )


if __name__ == "__main__":
    main()
