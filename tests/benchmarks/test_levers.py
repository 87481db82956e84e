"""benchmarks.levers' --levers: which levers a run measures, and a clear error for a bad name."""

import argparse

import pytest

from benchmarks import levers


def test_named_levers_are_measured_with_the_default_in_their_own_order():
    names = levers.parse_levers("batch 256, threads intra=1 inter=1,steps_per_execution=1")
    assert list(levers.selected(levers.IN_PROCESS, names)) == [
        "default",
        "steps_per_execution=1",
        "batch 256",
    ]
    assert list(levers.selected(levers.PER_PROCESS, names)) == [
        "default",
        "threads intra=1 inter=1",
    ]


def test_without_levers_every_lever_is_measured():
    assert levers.selected(levers.IN_PROCESS, None) == levers.IN_PROCESS


def test_an_unknown_lever_names_the_known_ones():
    with pytest.raises(argparse.ArgumentTypeError, match="unknown lever.*'batch 64'.*batch 256"):
        levers.parse_levers("batch 256,batch 64")


def test_a_model_the_benchmarks_have_no_shape_for_is_refused_before_any_measurement(capsys):
    with pytest.raises(SystemExit):
        levers.main(["--model", "lenet5_modern"])
    assert "'lenet5_modern' is not one of lenet5, stagewise_cnn" in capsys.readouterr().err


def test_every_lever_can_be_named_on_the_command_line():
    """--levers splits on commas: a name with one could never be measured alone."""
    for name in {*levers.IN_PROCESS, *levers.PER_PROCESS}:
        assert levers.parse_levers(name) == {name}


def test_bfloat16_levers_are_left_out_on_a_cpu_without_bfloat16(monkeypatch):
    from training import hardware

    monkeypatch.setattr(hardware, "onednn_bfloat16_available", lambda: False)
    kept = levers.process_levers(levers.PER_PROCESS)
    assert "precision onednn_bfloat16" not in kept and "fpmath bf16" not in kept
    assert "default" in kept and "xla pointwise" in kept
    monkeypatch.setattr(hardware, "onednn_bfloat16_available", lambda: True)
    assert levers.process_levers(levers.PER_PROCESS) == levers.PER_PROCESS
