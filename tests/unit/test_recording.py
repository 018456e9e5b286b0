"""Recording accepted readings: the file format, rotation under the cap, the machine filter,
segments that never span a gap, and `forewarn train --from-recording`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from agent.metrics import AgentMetrics
from agent.recording import Recorder
from config.errors import ConfigError
from config.fields import FEATURES
from config.recording import RecordingSettings
from models.data import DataError
from models.recording import SUFFIX, read_recording, recording_files, segments
from models.train import TrainConfig, split_segments
from wire.reading import Reading

MIB = 1024 * 1024


def tick_readings(machines: list[str], step: int, rng: np.random.Generator) -> list[Reading]:
    return [
        Reading(m, 1_700_000_000.0 + step, step, rng.normal(70.0, 5.0, 4).astype(np.float32))
        for m in machines
    ]


def recorder(tmp_path: Path, **settings: object) -> tuple[Recorder, AgentMetrics]:
    metrics = AgentMetrics()
    section = RecordingSettings(enabled=True, directory=tmp_path / "rec", **settings)
    rec = Recorder(section, FEATURES, metrics)
    rec.start()
    return rec, metrics


def test_accepted_readings_are_read_back_exactly(tmp_path: Path) -> None:
    rec, metrics = recorder(tmp_path)
    rng = np.random.default_rng(1)
    sent: list[Reading] = []
    for step in range(30):
        readings = tick_readings(["m-1", "m-2", "m-3"], step, rng)
        accepted = np.array([True, step % 2 == 0, True])  # m-2: every other one refused
        sent += [r for r, ok in zip(readings, accepted, strict=True) if ok]
        rec.record(readings, accepted)
    rec.stop()
    back = read_recording(tmp_path / "rec")
    assert back.features == FEATURES
    assert back.readings == len(sent) == 75
    for machine_id in ("m-1", "m-2", "m-3"):
        mine = [r for r in sent if r.machine_id == machine_id]
        ts, seq, values = back.machines[machine_id]
        assert seq.tolist() == [r.seq for r in mine]
        assert ts.tolist() == [r.ts for r in mine]
        np.testing.assert_array_equal(values, np.array([r.values for r in mine]))
    written = metrics.registry.get_sample_value("forewarn_recording_bytes_total")
    assert written == sum(p.stat().st_size for p in recording_files(tmp_path / "rec"))
    assert metrics.registry.get_sample_value("forewarn_recording_readings_total") == 75


def test_the_folder_never_exceeds_its_cap_and_drops_the_oldest_file(tmp_path: Path) -> None:
    cap, file_bytes = MIB, 128 * 1024
    rec, metrics = recorder(tmp_path, max_bytes=cap, file_bytes=file_bytes)
    rng = np.random.default_rng(2)
    machines = [f"m-{i}" for i in range(200)]
    largest = 0
    for step in range(500):
        rec.record(tick_readings(machines, step, rng), np.ones(200, dtype=np.bool_))
        rec.flush()
        files = recording_files(tmp_path / "rec")
        total = sum(p.stat().st_size for p in files)
        largest = max(largest, total)
        assert total <= cap
        assert all(p.stat().st_size <= file_bytes for p in files)
    rec.stop()
    assert largest > cap - file_bytes  # it did fill up
    dropped = metrics.registry.get_sample_value("forewarn_recording_files_dropped_total")
    assert dropped and dropped > 0
    back = read_recording(tmp_path / "rec")
    last_seq = back.machines["m-0"][1]
    assert last_seq[-1] == 499 and last_seq[0] > 0  # the newest kept, the oldest gone
    assert segments(back.machines["m-0"][0], last_seq) == [(0, len(last_seq))]


def test_an_existing_folder_counts_against_the_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    first, _ = recorder(tmp_path, max_bytes=MIB, file_bytes=64 * 1024)
    for step in range(100):
        first.record(tick_readings([f"m-{i}" for i in range(100)], step, rng), np.ones(100, bool))
    first.stop()
    again, metrics = recorder(tmp_path, max_bytes=MIB, file_bytes=64 * 1024)
    assert again.folder_bytes == sum(p.stat().st_size for p in recording_files(tmp_path / "rec"))
    assert (
        metrics.registry.get_sample_value("forewarn_recording_folder_bytes") == again.folder_bytes
    )
    again.stop()


def test_only_machines_matching_the_patterns_are_recorded(tmp_path: Path) -> None:
    rec, _ = recorder(tmp_path, machines="press-*,oven-7")
    rng = np.random.default_rng(4)
    for step in range(5):
        readings = tick_readings(["press-1", "press-2", "oven-7", "oven-8", "pump"], step, rng)
        rec.record(readings, np.ones(5, dtype=np.bool_))
    rec.stop()
    assert set(read_recording(tmp_path / "rec").machines) == {"press-1", "press-2", "oven-7"}


def test_a_backlog_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    section = RecordingSettings(enabled=True, directory=tmp_path / "rec", max_backlog_ticks=2)
    rec = Recorder(section, FEATURES, metrics)  # not started: nothing drains the queue
    rng = np.random.default_rng(5)
    for step in range(5):
        rec.record(tick_readings(["a", "b"], step, rng), np.ones(2, dtype=np.bool_))
    value = metrics.registry.get_sample_value
    assert value("forewarn_recording_readings_dropped_total", {"reason": "backlog"}) == 6


def test_a_restart_under_other_features_starts_a_new_file_and_reading_both_is_refused(
    tmp_path: Path,
) -> None:
    rec, _ = recorder(tmp_path)
    rng = np.random.default_rng(7)
    rec.record(tick_readings(["a"], 0, rng), np.ones(1, dtype=np.bool_))
    rec.stop()
    section = RecordingSettings(enabled=True, directory=tmp_path / "rec")
    restarted = Recorder(section, FEATURES[:2], AgentMetrics())
    restarted.start()
    narrow = [Reading("a", 1_700_000_001.0, 1, np.array([70.0, 30.0], dtype=np.float32))]
    restarted.record(narrow, np.ones(1, dtype=np.bool_))
    restarted.stop()
    assert len(recording_files(tmp_path / "rec")) == 2
    with pytest.raises(DataError, match="train on one model's recording at a time"):
        read_recording(tmp_path / "rec")


def test_a_file_cut_short_is_read_to_its_last_whole_block(tmp_path: Path) -> None:
    rec, _ = recorder(tmp_path)
    rng = np.random.default_rng(6)
    for step in range(10):
        rec.record(tick_readings(["a"], step, rng), np.ones(1, dtype=np.bool_))
    rec.stop()
    (path,) = recording_files(tmp_path / "rec")
    path.write_bytes(path.read_bytes()[:-5])
    back = read_recording(tmp_path / "rec")
    assert back.machines["a"][1].tolist() == list(range(9))
    assert back.truncated_files == 1


def test_a_foreign_file_is_named(tmp_path: Path) -> None:
    (tmp_path / f"x{SUFFIX}").write_bytes(b"not a recording")
    with pytest.raises(DataError, match=f"x{SUFFIX} is not a forewarn recording"):
        read_recording(tmp_path)
    with pytest.raises(DataError, match="holds no"):
        read_recording(tmp_path / "..")


def test_settings_are_checked_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="set file_bytes to at most max_bytes"):
        RecordingSettings(max_bytes=MIB, file_bytes=2 * MIB)
    with pytest.raises(ValidationError, match="give \\* to record every machine"):
        RecordingSettings(machines=" , ")
    assert RecordingSettings(machines='["a-*", "b"]').machines == ["a-*", "b"]


def test_segments_break_at_missing_readings_time_gaps_and_restarts() -> None:
    seq = np.array([0, 1, 2, 4, 5, 6, 0, 1, 2, 3])
    ts = np.array([0.0, 1, 2, 4, 5, 6, 7, 8, 30, 31])
    #              missing 3 ^      restart ^   time gap ^
    assert segments(ts, seq) == [(0, 3), (3, 6), (6, 8), (8, 10)]


def test_split_segments_keeps_time_order_and_never_spans_a_gap() -> None:
    config = TrainConfig(window=4, horizon=2, ticks=100, epochs=1)
    series = np.arange(200, dtype=np.float64).reshape(100, 2)
    split = split_segments([(series, [(0, 50), (50, 100)])], config)
    # 70 % = row 70, 85 % = row 85: train 0-50 and 50-70, validation 70-85, test 85-100.
    assert [p.shape[1] for p in split.train] == [50, 20]
    assert [p.shape[1] for p in split.validation] == [15]
    assert [p.shape[1] for p in split.test] == [15]
    assert split.train[0][0, -1, 0] == 98 and split.train[1][0, 0, 0] == 100
    with pytest.raises(ValueError, match="record longer"):
        split_segments([(series[:10], [(0, 10)])], config)


def test_train_from_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from forewarn.cli import main

    for name in list(os.environ):
        if name.upper().startswith("FOREWARN_"):
            os.environ.pop(name)
    rec, _ = recorder(tmp_path)
    t = np.arange(400)
    for step in t.tolist():
        if step == 200:
            continue  # a missing reading: two segments
        readings = [
            Reading(
                f"m-{m}",
                1_700_000_000.0 + step,
                step,
                np.array(
                    [70 + 8 * np.sin(2 * np.pi * (step + 17 * m) / 60), 30.0, 100.0, 1500.0],
                    dtype=np.float32,
                ),
            )
            for m in range(3)
        ]
        rec.record(readings, np.ones(3, dtype=np.bool_))
        rec.flush()
    rec.stop()
    output = tmp_path / "from-rec.pt"
    argv = ["train", "--from-recording", str(tmp_path / "rec"), "--kind", "ridge"]
    assert main([*argv, "--output", str(output)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "1,197 readings of 3 machines" in captured.err
    assert (
        report["drift_reference"]["model_rmse_c"] < report["drift_reference"]["persistence_rmse_c"]
    )
    served = json.loads((tmp_path / "from-rec.json").read_text())
    assert served["report"]["drift_reference"] == report["drift_reference"]
    assert served["features"] == list(FEATURES)
    assert main([*argv, "--csv", "x.csv", "--output", str(output)]) == 2
    assert "one or the other" in capsys.readouterr().err


def test_a_folder_it_cannot_create_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    """Under the shipped unit (WorkingDirectory=/, a read-only system) a relative default
    would be created at /: a clear configuration error, not a traceback at start."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    section = RecordingSettings(enabled=True, directory=blocker / "recordings")
    with pytest.raises(ConfigError, match="FOREWARN_RECORDING__DIRECTORY"):
        Recorder(section, FEATURES, AgentMetrics())


def test_a_tick_too_big_for_the_cap_leaves_no_name_behind(tmp_path: Path) -> None:
    """A tick left out for its size names machines the file never received: a later block
    must name them again, or the recording could not be read back."""
    rec, metrics = recorder(tmp_path, max_bytes=MIB, file_bytes=MIB)
    rng = np.random.default_rng(6)
    rec.record(tick_readings(["m-0"], 0, rng), np.ones(1, dtype=np.bool_))
    crowd = [f"machine-with-a-long-name-{i:06d}" for i in range(150_000)]
    rec.record(tick_readings(crowd, 1, rng), np.ones(len(crowd), dtype=np.bool_))
    rec.record(tick_readings(["m-0", crowd[7]], 2, rng), np.ones(2, dtype=np.bool_))
    rec.stop()
    assert metrics.registry.get_sample_value(
        "forewarn_recording_readings_dropped_total", {"reason": "too_big"}
    ) == len(crowd)
    back = read_recording(tmp_path / "rec")
    assert back.readings == 3
    assert back.machines[crowd[7]][1].tolist() == [2]
    assert back.machines["m-0"][1].tolist() == [0, 2]
