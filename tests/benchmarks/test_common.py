import argparse
import json

import pytest

from benchmarks import common


def test_a_rerun_the_same_day_keeps_the_results_already_written(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    facts = common.machine_facts()
    first = common.write_results("versus", facts, {"round": 1})
    second = common.write_results("versus", facts, {"round": 2})
    third = common.write_results("versus", facts, {"round": 3})
    assert first.name.endswith("-versus.json")
    assert second.name == first.name.replace("-versus.json", "-versus-2.json")
    assert third.name == first.name.replace("-versus.json", "-versus-3.json")
    assert [json.loads(p.read_text())["results"]["round"] for p in (first, second, third)] == [
        1,
        2,
        3,
    ]


def test_the_machine_name_tells_the_widest_arithmetic_of_the_cpu():
    def facts(*present):
        flags = {flag: flag in present for flag in common.CPU_FLAGS}
        return {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "flags": flags}

    assert common.machine_name(facts("avx2", "avx512f", "avx512_bf16", "amx_bf16")) == (
        "intel-r-xeon-r-processor-2cores-amx"
    )
    assert common.machine_name(facts("avx2", "avx512f", "avx512_bf16")).endswith("-2cores-bf16")
    assert common.machine_name(facts("avx2", "avx512f")).endswith("-2cores-avx512")
    assert common.machine_name(facts("avx2", "fma")).endswith("-2cores-avx2")
    assert common.machine_name(facts()).endswith("-2cores-novector")


def test_a_count_argument_takes_whole_numbers_from_one():
    assert common.positive_int("32") == 32
    for text in ("0", "-1", "2.5", "all"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"from 1, not '{text}'"):
            common.positive_int(text)


def test_the_facts_line_names_the_thread_pools_where_a_benchmark_set_them():
    facts = common.machine_facts()
    assert "threads" not in common.facts_line(facts)
    line = common.facts_line({**facts, "threads": "one_per_op"})
    assert line.endswith("; TensorFlow threads one_per_op")
