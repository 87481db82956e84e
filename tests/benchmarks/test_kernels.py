"""benchmarks.kernels reads oneDNN's verbose log: from made-up lines, and from real workers."""

import argparse

import pytest

from benchmarks import kernels

LOG = """\
onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,exec_time
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16 dst:bf16,,,128x128x3x3,0.25
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,src:bf16,,alg:convolution_direct,mb32,0.5
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,src:bf16,,alg:convolution_direct,mb32,0.25
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,src:bf16,,alg:convolution_direct,mb32,2.0
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16 dst:bf16,,,128x128x3x3,0.5
some other line, 9.0
"""


def test_the_log_gives_the_convolutions_median_and_the_reorders_per_call():
    parsed = kernels.parse_verbose(LOG, 3 - kernels.WARMUP_CALLS, "forward_training")
    assert parsed == {
        "convolution": 0.5,
        "implementation": "brg_conv_fwd:avx10_1_512_amx",
        "reorders": 0.25,  # (0.25 + 0.5) ms over 3 calls
    }


def test_a_log_without_convolutions_says_so():
    with pytest.raises(ValueError, match="no forward_training convolution"):
        kernels.parse_verbose(LOG.replace("convolution,", "pooling,"), 1, "forward_training")


def test_only_the_direction_asked_for_is_timed():
    with pytest.raises(ValueError, match="no backward_weights convolution"):
        kernels.parse_verbose(LOG, 1, "backward_weights")


def arguments(**overrides):
    settings = {"shape": [4, 8, 8, 16], "filters": 16, "kernel": 3, "dtype": "float32"}
    return argparse.Namespace(calls=3, **{**settings, **overrides})


@pytest.mark.parametrize("direction", kernels.DIRECTIONS)
def test_tensorflow_runs_each_direction_on_onednn(direction):
    result = kernels.measure("tensorflow", direction, 1, arguments())
    assert result["convolution"] > 0
    assert ":" in result["implementation"]  # e.g. jit:avx512_core, gemm:jit


def test_pytorch_runs_the_same_problem_on_onednn():
    pytest.importorskip("torch")
    result = kernels.measure("torch", "filter_gradient", 1, arguments())
    assert result["convolution"] > 0 and ":" in result["implementation"]


@pytest.mark.parametrize(
    "bad, named",
    [
        (["--shape", "4,8,8"], "--shape"),
        (["--threads", "0"], "--threads"),
        (["--shape", "a"], "--shape"),
        (["--kernel", "2"], "--kernel takes an odd size"),
        (["--calls", "0"], "--calls"),
    ],
)
def test_bad_settings_are_refused_with_what_is_allowed(bad, named, capsys):
    with pytest.raises(SystemExit):
        kernels.parse_args(bad)
    assert named in capsys.readouterr().err
