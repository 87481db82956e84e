"""What every speed benchmark shares: the machine's facts, alternating rounds, medians and
per-round ratios, the results file and a markdown table.

Machines are shared and noisy: every benchmark measures its cases in rounds (A, B, A, B, ...)
inside one process, and reports the median of each case and the median over rounds of the
ratio between two cases measured in the same round, which drifts less than the absolute figures.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time

import benchmarks

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
# The CPU flags that decide which kernels run: AVX2 and AVX-512 float32, native bfloat16.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
PACKAGES = ("tensorflow", "keras", "numpy", "torch")


def cpu_facts(cpuinfo="/proc/cpuinfo") -> dict:
    """The CPU model and which of CPU_FLAGS it has (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        text = pathlib.Path(cpuinfo).read_text()
    except OSError:
        return {"cpu": platform.processor() or platform.machine(), "flags": {}}
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE).group(1).split())
    return {
        "cpu": model.group(1).strip() if model else platform.machine(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
    }


def machine_facts() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        **cpu_facts(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "versions": versions,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_name(facts) -> str:
    """A file-name slug: the CPU model, the cores and the widest vector arithmetic (host names of
    containers are random, and one CPU model name, "AMD EPYC", covers AVX2-only and AVX512-BF16
    machines here). AMX's matrix tiles run bfloat16 several times faster than AVX512-BF16."""
    slug = re.sub(r"[^a-z0-9]+", "-", facts["cpu"].lower()).strip("-")
    flags = facts["flags"]
    if flags.get("amx_bf16"):
        vector = "amx"
    elif flags.get("avx512_bf16"):
        vector = "bf16"
    elif flags.get("avx512f"):
        vector = "avx512"
    elif flags.get("avx2"):
        vector = "avx2"
    else:
        vector = "novector"
    return f"{slug}-{facts['cores']}cores-{vector}"


def write_results(benchmark, facts, results) -> pathlib.Path:
    """benchmarks/results/<machine>-<date>-<benchmark>.json; a rerun the same day writes
    ...-<benchmark>-2.json (then -3, ...): results already there, often cited, stay as they are."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = f"{machine_name(facts)}-{facts['date'][:10]}-{benchmark}"
    path, count = RESULTS_DIR / f"{stem}.json", 1
    while path.exists():
        count += 1
        path = RESULTS_DIR / f"{stem}-{count}.json"
    path.write_text(json.dumps({"machine": facts, "results": results}, indent=2) + "\n")
    return path


def facts_line(facts) -> str:
    flags = ", ".join(flag for flag, present in facts["flags"].items() if present) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    line = f"{facts['cpu']}, {facts['cores']} cores, flags: {flags}; {versions}"
    # TensorFlow's pools (training.hardware.threads_in_effect), where the benchmark sets them.
    return f"{line}; TensorFlow threads {facts['threads']}" if "threads" in facts else line


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_rounds(cases, rounds, measure):
    """{case: [one figure per round]}: `measure(case)` for every case in every round, in order,
    so that load on the machine spreads over all cases alike."""
    figures = {case: [] for case in cases}
    for index in range(rounds):
        for case in cases:
            figures[case].append(measure(case))
        print(f"round {index + 1}/{rounds} done", flush=True)
    return figures


def run_training(arguments, output_dir, run_name, *, cwd=None, quiet=False):
    """`python -m training.run ARGUMENTS` into output_dir/run_name as a process of its own (in
    `cwd`, default this one's): (its metrics.json, the command's seconds). `quiet` keeps the
    run's output and shows the end of its errors only if it fails."""
    command = [sys.executable, "-m", "training.run", *arguments]
    command += ["--output-dir", str(output_dir), "--run-name", run_name]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=benchmarks.LAUNCH_ENVIRONMENT, capture_output=quiet, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        tail = "\n".join((done.stderr or "").splitlines()[-15:])
        where = f" in {cwd}" if cwd else ""
        raise RuntimeError(f"{' '.join(command)} failed{where}:\n{tail}".rstrip())
    metrics = json.loads((pathlib.Path(output_dir) / run_name / "metrics.json").read_text())
    return metrics, seconds


def median(values):
    return statistics.median(values) if values else None


def median_ratio(numerators, denominators):
    """The median over rounds of numerator / denominator, each pair from the same round."""
    return median([a / b for a, b in zip(numerators, denominators)])


class StepTimes:
    """Times of the end of each batch, to time steady steps inside one fit or predict call."""

    def __init__(self):
        self.times = []

    def mark(self):
        self.times.append(time.perf_counter())

    def images_per_second(self, batch_size, skip):
        """Over the batches after the first `skip` (iterator start-up and prefetch filling)."""
        times = self.times[skip:]
        return (len(times) - 1) * batch_size / (times[-1] - times[0])


def positive_int(text) -> int:
    """The argparse type of a count such as --batch: a whole number from 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number from 1, not {text!r}")
    return value


def nhwc_shape(text) -> list:
    """The argparse type of --shape: "batch,height,width,channels", four whole numbers from 1."""
    try:
        shape = [int(size) for size in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"takes four whole numbers from 1, batch,height,width,channels, not {text!r}"
        )
    return shape
