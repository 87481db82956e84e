"""The same architectures in PyTorch on the same CPU, against the Keras models as the trainer
builds and compiles them: training and inference images/s, in alternating rounds.

    pip install -e '.[bench]'        # torch==2.13.0, the CPU build
    python -m benchmarks.peer [--models lenet5,resnet20] [--batch 32] [--threads auto]
        [--sub-batches 2] [--rounds 5] [--seconds 3]

PyTorch runs each model in several settings (float32; channels_last; channels_last with
bfloat16 autocast where the CPU has bfloat16; the last of these under `torch.compile`, PyTorch
2's own speed path: inductor's generated C++ around oneDNN's convolutions, left out with a
message where it does not work, as without a C++ compiler) and the table compares Keras with
the fastest of them, round by round (PyTorch on all the cores: one thread trained slower at
batch 32 and 128). Keras runs at the trainer's defaults (`--precision auto`, and the threads
and sub-batches `auto` picks: on 2 cores each batch of 32 or more in two halves side by side,
one thread per op; elsewhere TensorFlow's pools and the whole batch), fed from
tensors in memory as PyTorch is, and also through the trainer's tf.data pipeline with its
default augmentation (none). Both sides are the zoo's architectures exactly (the parameter
counts are checked): LeNet-5 with its partial C3 table and trainable subsampling, the CIFAR
ResNet-20 with option-A shortcuts.
Writes benchmarks/results/<machine>-<date>-peer.json.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common, throughput
from training import hardware
from training.config import TrainConfig

MODELS = ("lenet5", "resnet20")
COMPILED = "+compile"  # a setting's suffix: the model under torch.compile
NUM_CLASSES = throughput.NUM_CLASSES
INSTALL_HINT = (
    "benchmarks.peer needs PyTorch, which the project does not install by default: "
    "pip install -e '.[bench]' (torch==2.13.0, the CPU build)."
)


def import_torch():
    try:
        import torch
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    return torch


def build_torch_model(name):
    """The zoo's `name` in PyTorch (NCHW), its layers in the zoo's order and sizes."""
    torch = import_torch()
    nn, F = torch.nn, torch.nn.functional

    def lecun_tanh(x):
        return 1.7159 * torch.tanh(2.0 / 3.0 * x)

    class TrainableSubsampling(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.coefficient = nn.Parameter(torch.ones(channels, 1, 1))
            self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

        def forward(self, x):
            return F.avg_pool2d(x, 2) * self.coefficient + self.bias

    class PartialConv(nn.Module):
        """A 5x5 convolution whose output maps read only the inputs of `connections` (the
        zoo's C3 table): a weight per connection, scattered into a dense kernel."""

        def __init__(self, in_channels, connections, kernel_size=5):
            super().__init__()
            self.shape = (len(connections), in_channels, kernel_size, kernel_size)
            index = [o * in_channels + i for o, inputs in enumerate(connections) for i in inputs]
            self.register_buffer("index", torch.tensor(index))
            self.weight = nn.Parameter(torch.randn(len(index), kernel_size, kernel_size) * 0.1)
            self.bias = nn.Parameter(torch.zeros(len(connections)))

        def forward(self, x):
            out, inp, kh, kw = self.shape
            dense = self.weight.new_zeros(out * inp, kh, kw).index_copy(0, self.index, self.weight)
            return F.conv2d(x, dense.reshape(self.shape), self.bias)

    class LeNet5(nn.Module):
        def __init__(self, connections):
            super().__init__()
            self.c1 = nn.Conv2d(1, 6, 5)
            self.s2 = TrainableSubsampling(6)
            self.c3 = PartialConv(6, connections)
            self.s4 = TrainableSubsampling(16)
            self.c5 = nn.Conv2d(16, 120, 5)
            self.f6 = nn.Linear(120, 84)
            self.out = nn.Linear(84, NUM_CLASSES)

        def forward(self, x):
            x = lecun_tanh(self.s2(lecun_tanh(self.c1(x))))
            x = lecun_tanh(self.s4(lecun_tanh(self.c3(x))))
            x = lecun_tanh(self.c5(x)).flatten(1)
            return self.out(lecun_tanh(self.f6(x)))

    def norm(channels):  # Keras: epsilon 1.001e-5, momentum 0.9 (PyTorch counts 1 - 0.9)
        return nn.BatchNorm2d(channels, eps=1.001e-5, momentum=0.1)

    class Block(nn.Module):
        def __init__(self, in_channels, filters, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, filters, 3, stride, 1, bias=False)
            self.norm1 = norm(filters)
            self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
            self.norm2 = norm(filters)
            self.stride, self.extra = stride, filters - in_channels

        def forward(self, x):
            y = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
            # Option A: subsample, then zero channels appended (zoo.blocks.ParameterFreeShortcut).
            shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            if self.extra:
                shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
            return F.relu(y + shortcut)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), norm(16), nn.ReLU())
            blocks, channels = [], 16
            for filters, stride in ((16, 1), (32, 2), (64, 2)):
                for index in range(3):
                    blocks.append(Block(channels, filters, stride if index == 0 else 1))
                    channels = filters
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(64, NUM_CLASSES)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    if name == "lenet5":
        import zoo

        keras_model = zoo.create("lenet5", input_shape=(32, 32, 1), num_classes=NUM_CLASSES)
        return LeNet5(keras_model.get_layer("c3_conv").connections)
    return ResNet20()


def torch_param_count(model):
    """Parameters plus BatchNorm's moving statistics, which Keras's count_params includes."""
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("_mean", "_var")))
    return sum(p.numel() for p in model.parameters()) + buffers


def param_counts(name):
    """(PyTorch's, the zoo's) parameter counts of `name`: equal when the architectures are."""
    import zoo

    shape, _ = throughput.MODELS[name]
    keras_model = zoo.create(name, input_shape=shape, num_classes=NUM_CLASSES)
    return torch_param_count(build_torch_model(name)), keras_model.count_params()


class TorchCase:
    """One PyTorch model in one setting (layout, autocast), trained and run on one batch."""

    def __init__(self, name, setting, seconds, batch=None):
        torch = import_torch()
        self.torch = torch
        self.name, self.setting = f"{name} torch {setting}", setting
        shape, self.batch = throughput.MODELS[name]
        self.batch = batch or self.batch
        self.model = build_torch_model(name)
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(self.batch, shape[2], shape[0], shape[1], generator=generator)
        self.labels = torch.randint(0, NUM_CLASSES, (self.batch,), generator=generator)
        self.channels_last = setting != "float32"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.images = images
        self.bf16 = "+bf16" in setting
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        if setting.endswith(COMPILED):
            # Shares the parameters the optimizer holds; the warm-up below compiles a graph
            # for training and one for inference (each about half a minute on two cores).
            self.model = torch.compile(self.model)
        self.loss = torch.nn.CrossEntropyLoss()
        self.steps = {}
        for kind in ("train", "infer"):
            self.steps[kind] = 3
            rate = self.measure(kind)
            self.steps[kind] = max(3, int(seconds * rate / self.batch))

    def _autocast(self):
        return self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bf16)

    def measure(self, kind):
        self.model.train(kind == "train")
        self._step(kind)  # not timed: the first call allocates
        started = time.perf_counter()
        for _ in range(self.steps[kind]):
            self._step(kind)
        return self.steps[kind] * self.batch / (time.perf_counter() - started)

    def _step(self, kind):
        torch = self.torch
        if kind == "infer":
            with torch.inference_mode(), self._autocast():
                self.model(self.images)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss(self.model(self.images), self.labels)
        loss.backward()
        self.optimizer.step()


class KerasCase:
    """The trainer's model at its defaults (throughput.Case), measured in the same rounds; its
    pipeline augments as `training.run` does by default (benchmarks.throughput measures the
    cost of the standard augmentation)."""

    def __init__(self, name, precision, seconds, batch=None, sub_batches=1):
        self.precision = precision
        augmentation = TrainConfig().augment.preset
        self.case = throughput.Case(
            name,
            precision,
            seconds,
            batch=batch,
            measurements=throughput.FED,
            augmentation=augmentation,
            sub_batches=sub_batches,
        )
        self.name = f"{name} keras {precision}"

    def measure(self, measurement):
        return self.case.measure(measurement)


def torch_settings(compiles=True):
    """PyTorch's settings; the fastest eager one also compiled, where torch.compile works."""
    settings = ["float32", "channels_last"]
    if hardware.cpu_supports_bf16():
        settings.append("channels_last+bf16")
    return [*settings, settings[-1] + COMPILED] if compiles else settings


def torch_compile_problem(torch):
    """Why torch.compile fails here (it needs a C++ compiler), or None: found in seconds,
    before the long warm-ups."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as error:  # inductor raises many kinds; any means: leave it out
        return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument(
        "--batch", type=common.positive_int, default=None, help="both sides' (default: 128)"
    )
    throughput.add_threads_argument(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    models = throughput.parse_list(args.models, MODELS, "model")
    batches = {name: args.batch or throughput.MODELS[name][1] for name in models}
    precisions = {name: hardware.resolve_precision("auto", name) for name in models}  # Keras'
    parts = {
        name: throughput.sub_batches_for(args.sub_batches, batches[name], args.threads)
        for name in models
    }
    inputs = [
        (throughput.MODELS[name][0], batches[name], precisions[name], parts[name])
        for name in models
    ]
    torch = import_torch()
    # Before TensorFlow's first op (the parameter counts below build Keras models).
    threads = throughput.apply_threads_for(args.threads, inputs)

    facts = {**common.machine_facts(), "threads": threads}
    facts["torch_threads"] = torch.get_num_threads()
    print(common.facts_line(facts), flush=True)
    problem = torch_compile_problem(torch)
    if problem:
        print(f"torch.compile does not work here, so it is left out ({problem})", flush=True)
    settings = torch_settings(compiles=problem is None)
    measured = []  # (case, measurement) in the order every round runs them
    for name in models:
        got, expected = param_counts(name)
        print(f"{name}: {got:,} parameters in PyTorch, {expected:,} in the zoo", flush=True)
        if got != expected:
            raise SystemExit(f"{name}: the PyTorch model is not the zoo's ({got} != {expected})")
        print(f"building and warming up {name}", flush=True)
        keras_case = KerasCase(name, precisions[name], args.seconds, batches[name], parts[name])
        measured += [(keras_case, m) for m in throughput.FED]
        for setting in settings:
            if setting.endswith(COMPILED):
                print(f"compiling {name} with torch.compile ({setting})", flush=True)
            case = TorchCase(name, setting, args.seconds, batches[name])
            measured += [(case, "train"), (case, "infer")]
    figures = common.run_rounds(measured, args.rounds, lambda key: key[0].measure(key[1]))
    by_name = {(case.name, m): values for (case, m), values in figures.items()}

    rows, results = [], []
    for name in models:
        precision = precisions[name]
        keras_name = f"{name} keras {precision}"
        for kind in ("train", "infer"):
            torch_runs = {s: by_name[(f"{name} torch {s}", kind)] for s in settings}
            best = max(torch_runs, key=lambda s: common.median(torch_runs[s]))
            memory = by_name[(keras_name, f"{kind}/memory")]
            pipeline = by_name[(keras_name, f"{kind}/pipeline")]
            result = {
                "model": name,
                "kind": kind,
                "batch": batches[name],
                "keras_precision": precision,
                "keras_sub_batches": parts[name],
                "keras_memory": memory,
                "keras_pipeline": pipeline,
                "torch": torch_runs,
                "torch_best": best,
                "keras_memory_over_torch_best": common.median_ratio(memory, torch_runs[best]),
                "keras_pipeline_over_torch_best": common.median_ratio(pipeline, torch_runs[best]),
            }
            results.append(result)
            rows.append(
                [
                    name,
                    kind,
                    batches[name],
                    *(f"{common.median(torch_runs[s]):,.0f}" for s in settings),
                    f"{common.median(memory):,.0f}",
                    f"{common.median(pipeline):,.0f}",
                    f"{result['keras_memory_over_torch_best']:.2f}",
                    f"{result['keras_pipeline_over_torch_best']:.2f}",
                ]
            )
    header = [
        "model",
        "step",
        "batch",
        *(f"PyTorch {s}" for s in settings),
        "Keras (auto precision), memory",
        f"Keras (auto precision), pipeline (augment {TrainConfig().augment.preset})",
        "Keras memory / best PyTorch",
        "Keras pipeline / best PyTorch",
    ]
    path = common.write_results(
        "peer", facts, {"rounds": args.rounds, "seconds": args.seconds, "cases": results}
    )
    print(f"\nimages/s, medians of {args.rounds} rounds ({common.facts_line(facts)})\n")
    print(common.markdown_table(header, rows))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
