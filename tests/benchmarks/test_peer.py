"""benchmarks.peer's PyTorch side: the zoo's architectures exactly, and its compiled setting
computes what the eager model does. PyTorch is the `bench` extra, not the test one: without it
these are skipped."""

import pytest

torch = pytest.importorskip("torch")

from benchmarks import peer  # noqa: E402
from training import hardware  # noqa: E402


@pytest.mark.parametrize("name", peer.MODELS)
def test_the_pytorch_models_have_the_zoos_parameter_count(name):
    torch_count, zoo_count = peer.param_counts(name)
    assert torch_count == zoo_count


def test_the_fastest_eager_setting_is_also_compiled_where_torch_compile_works():
    settings = peer.torch_settings()
    assert settings[:2] == ["float32", "channels_last"]
    assert ("channels_last+bf16" in settings) == hardware.cpu_supports_bf16()
    assert settings[-1] == settings[-2] + peer.COMPILED
    assert peer.torch_settings(compiles=False) == settings[:-1]


def test_a_compiled_case_trains_and_computes_what_its_eager_model_does():
    if peer.torch_compile_problem(torch):
        pytest.skip("torch.compile does not work here")
    case = peer.TorchCase("lenet5", "channels_last" + peer.COMPILED, seconds=0.01)
    assert case.measure("train") > 0 and case.measure("infer") > 0
    case.model.eval()
    with torch.inference_mode():
        compiled = case.model(case.images)
        eager = case.model._orig_mod(case.images)  # the same module and weights, not compiled
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_a_case_runs_at_the_batch_asked_for():
    case = peer.TorchCase("lenet5", "channels_last", seconds=0.01, batch=8)
    assert case.images.shape == (8, 1, 32, 32) and case.labels.shape == (8,)
    assert case.measure("train") > 0
