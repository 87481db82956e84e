import json

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
