"""Summaries of py-spy's collapsed stacks: threads picked by a function, shares, self time."""

from __future__ import annotations

from pathlib import Path

from bench.profiling import profile_file, read_raw, select, spy_command, summarise

_TICK = "Thread._bootstrap (threading.py:995);Agent._tick_loop (agent/app.py:560);"
_NET = "Thread._bootstrap (threading.py:995);Client.loop_forever (paho/mqtt/client.py:2301);"
RAW = "\n".join(
    [
        _TICK
        + "Agent.tick (agent/app.py:600);TorchForecaster.forecast (models/checkpoint.py:9) 60",
        _TICK + "Agent.tick (agent/app.py:597);Agent._drain (agent/app.py:650);"
        "WindowStore.append (agent/window.py:200) 30",
        _TICK + "Agent.tick (agent/app.py:597);Agent._drain (agent/app.py:651) 10",
        _NET + "Client._loop (paho/mqtt/client.py:1667) 40",
        "not a stack line",
    ]
)


def test_stacks_are_read_without_line_numbers():
    stacks = read_raw(RAW)
    assert len(stacks) == 4
    assert stacks[0].frames[-1] == "TorchForecaster.forecast (models/checkpoint.py)"
    assert stacks[0].count == 60


def test_a_thread_is_the_stacks_through_its_function():
    tick = select(read_raw(RAW), "Agent._tick_loop")
    assert sum(s.count for s in tick) == 100


def test_shares_are_inclusive_for_parts_and_exclusive_for_the_top_list():
    tick = select(read_raw(RAW), "Agent._tick_loop")
    summary = summarise(
        tick,
        [("forward", "TorchForecaster.forecast"), ("drain", "Agent._drain"), ("gone", "X.y")],
    )
    assert summary["samples"] == 100
    assert summary["running_s"] == 1.0
    assert [(p["part"], p["pct"]) for p in summary["parts"]] == [("forward", 60.0), ("drain", 40.0)]
    top = [(t["function"], t["pct"]) for t in summary["top_self"]]
    assert top[:3] == [
        ("TorchForecaster.forecast (models/checkpoint.py)", 60.0),
        ("WindowStore.append (agent/window.py)", 30.0),
        ("Agent._drain (agent/app.py)", 10.0),
    ]


def test_a_missing_profile_is_none(tmp_path: Path):
    assert profile_file(tmp_path / "absent.raw", []) is None
    path = tmp_path / "p.raw"
    path.write_text(RAW)
    result = profile_file(path, [("network", "Client.loop_forever", [])])
    assert result["network"]["samples"] == 40


def test_the_profiled_command_follows_py_spys_double_dash():
    command = spy_command(Path("out.raw"), ["python", "-m", "x"], "py-spy")
    assert command[:2] == ["py-spy", "record"]
    assert command[command.index("--") + 1 :] == ["python", "-m", "x"]
    assert "--nonblocking" in command
