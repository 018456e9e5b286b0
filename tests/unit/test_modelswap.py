"""Swapping the served model live (agent.modelswap): what a swap accepts and what it refuses.

Real model files (the shipped Ridge and LSTM serving files, and files derived from them) are
loaded by a real agent's model thread; readings go through the agent's hand-off and ticks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from agent.app import Agent
from agent.modelswap import Refused, parse_command
from config.settings import Settings, load_settings
from forewarn.modelcmd import command_payload
from models.candidate import HASH_DIGITS, content_hash, load_model
from models.recording import read_recording, recording_files
from models.skill import skill_reference
from tests.modelfiles import LSTM, RIDGE, copy_model, derived_ridge
from wire.reading import Reading

MACHINES = [f"m{i}" for i in range(8)]


def settings_for(tmp_path: Path, checkpoint: Path, **model: object) -> Settings:
    return load_settings(
        _env_file=None,
        metrics={"host": "127.0.0.1", "port": 0},
        model={
            "kind": orjson.loads(checkpoint.read_bytes())["kind"],
            "checkpoint": checkpoint,
            "runtime": "numpy",
            "directory": tmp_path / "models",
            "watch_interval_s": 0.05,
            **model,
        },
        agent={"state_dir": tmp_path / "state"},
    )


def feed(agent: Agent, seq: int) -> None:
    """One reading for every machine, warm and steady (a little noise)."""
    for index, machine_id in enumerate(MACHINES):
        warm = 60.0 + index + 0.2 * (seq % 3)
        values = np.array([warm, 30.0, 100.0, 1500.0], dtype=np.float32)
        agent.hand_off(Reading(machine_id, 1.7e9 + seq, seq, values))


def run(agent: Agent, start: int, ticks: int) -> int:
    forecast = 0
    for seq in range(start, start + ticks):
        feed(agent, seq)
        agent.tick()
        forecast += int(agent.metrics.batch_size._value.get())
    return forecast


def failures(agent: Agent, reason: str) -> float:
    return (
        agent.metrics.registry.get_sample_value(
            "forewarn_model_reload_failures_total", {"reason": reason}
        )
        or 0.0
    )


@pytest.fixture
def started(tmp_path: Path):
    agents: list[Agent] = []

    def start(settings: Settings) -> Agent:
        agent = Agent(settings)
        agent.models.start(agent.stop_event)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop_event.set()


def test_a_version_carries_the_content_hash_so_two_files_never_share_one(tmp_path: Path) -> None:
    """Same recipe and seed, other weights: other versions; the same bytes: the same one."""
    first = copy_model(RIDGE, tmp_path, "a")
    again = copy_model(RIDGE, tmp_path, "b")
    retrained = derived_ridge(tmp_path, "c", "retrained")
    settings = settings_for(tmp_path, first)
    versions = [load_model(settings.model, path).version for path in (first, again, retrained)]
    base = "ridge-h15-s2024+"
    assert all(v.startswith(base) and len(v) == len(base) + HASH_DIGITS for v in versions)
    assert versions[0] != versions[2]
    assert content_hash(first) != content_hash(again)  # the JSON names its own .npz
    assert versions[0] == load_model(settings.model, first).version


def test_a_command_swaps_the_model_between_ticks_and_keeps_windows_and_alert_states(
    tmp_path: Path, started
) -> None:
    """A Ridge is replaced by the LSTM (another kind): the next tick forecasts every machine
    with the new model from the windows already held, alert states are the same objects, the
    version changes in the alerts' publisher and in forewarn_model_info, and it is recorded."""
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    copy_model(LSTM, tmp_path / "models", "lstm")
    agent = started(settings_for(tmp_path, live))
    old_version = agent.forecaster.version
    run(agent, 0, 25)
    states = agent.policy.state.copy()
    agent.models.handle_command("t", orjson.dumps({"live": "lstm.json"}))
    assert agent.models.wait_idle()
    assert agent.forecaster.kind == "lstm" and agent.forecaster.version != old_version
    assert agent.publisher._model_version == agent.forecaster.version
    assert run(agent, 25, 1) == len(MACHINES)  # no window restarted
    assert np.array_equal(agent.policy.state[: len(MACHINES)], states[: len(MACHINES)])
    info = agent.metrics.registry.get_sample_value(
        "forewarn_model_info",
        {
            "kind": "lstm",
            "version": agent.forecaster.version,
            "window": "20",
            "horizon": "15",
            "device": "cpu",
            "path": "lstm.json",
        },
    )
    assert info == 1.0
    record = orjson.loads((tmp_path / "state" / "model.json").read_bytes())
    assert record["live"] == str((tmp_path / "models" / "lstm.json").resolve())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("truncated", "load"),
        ("nan", "load"),
        ("order", "features"),
        ("window", "window"),
        ("horizon", "horizon"),
        ("overflow", "forecast"),
    ],
)
def test_a_model_that_cannot_serve_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path, started, change: str, reason: str
) -> None:
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    if change == "truncated":
        bad = copy_model(LSTM, tmp_path / "models", "bad")
        npz = bad.with_suffix(".npz")
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    else:
        derived_ridge(tmp_path / "models", "bad", change)
    agent = started(settings_for(tmp_path, live))
    version = agent.forecaster.version
    run(agent, 0, 21)
    agent.models.handle_command("t", orjson.dumps({"live": "bad.json"}))
    assert agent.models.wait_idle()
    assert agent.forecaster.version == version
    assert failures(agent, reason) == 1.0
    assert run(agent, 21, 1) == len(MACHINES)


def test_commands_name_models_only_inside_the_model_directory(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    copy_model(RIDGE, folder, "ridge")
    outside = copy_model(RIDGE, tmp_path / "elsewhere", "ridge")
    os.symlink(outside, folder / "escape.json")
    (folder / "sub").mkdir()
    copy_model(RIDGE, folder / "sub", "inner")
    assert (
        parse_command(b'{"live": "sub/inner.json"}', folder).live
        == (folder / "sub" / "inner.json").resolve()
    )
    (folder / "linked.json").write_bytes((folder / "ridge.json").read_bytes())
    (tmp_path / "elsewhere" / "weights.npz").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere" / "weights.npz", folder / "linked.npz")  # read beside it
    names = (str(outside), "../elsewhere/ridge.json", "sub/../../x.json", "escape.json")
    for name in (*names, "linked.json"):
        with pytest.raises(Refused) as refused:
            parse_command(orjson.dumps({"live": name}), folder)
        assert refused.value.reason == "path", name
    with pytest.raises(Refused, match="no model directory"):
        parse_command(b'{"live": "ridge.json"}', None)
    for payload in (b"not json", b"[1]", b'{"live": 3}', b'{"bytes": "AAAA"}', b'{"promote": 1}'):
        with pytest.raises(Refused):
            parse_command(payload, folder)
    assert parse_command(b"", folder) is None  # a cleared retained command


def test_a_changed_file_is_swapped_in_once_it_holds_still(tmp_path: Path, started) -> None:
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    agent = started(settings_for(tmp_path, live))
    version = agent.forecaster.version
    derived_ridge(tmp_path / "models", "ridge", "retrained")  # written in place, as export does
    deadline = time.monotonic() + 10
    while agent.forecaster.version == version and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.forecaster.version != version
    assert agent.models.refusals == 0


def test_a_file_changed_into_a_broken_one_is_refused_once_not_at_every_poll(
    tmp_path: Path, started
) -> None:
    """The old model goes on serving, and the broken file is not loaded again at each poll
    (a log line and a refusal every few seconds, forever); once it changes again it is."""
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    agent = started(settings_for(tmp_path, live))
    version = agent.forecaster.version
    live.write_text("{", encoding="utf-8")  # a truncated serving file
    deadline = time.monotonic() + 10
    while agent.models.refusals == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.models.refusals == 1
    time.sleep(0.5)  # ten polls
    assert agent.models.refusals == 1, "the same broken file was loaded again"
    assert agent.forecaster.version == version
    derived_ridge(tmp_path / "models", "ridge", "retrained")  # fixed: written again
    deadline = time.monotonic() + 10
    while agent.forecaster.version == version and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.forecaster.version != version


def test_a_shadow_the_tick_dropped_is_never_promoted(
    tmp_path: Path, started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shadow that fails to forecast is dropped by the tick; promoting it afterwards is
    refused (it would fail every tick as the served model), and shadowing it again loads it."""
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    copy_model(LSTM, tmp_path / "models", "lstm")
    agent = started(settings_for(tmp_path, live))
    served = agent.forecaster.version
    agent.models.handle_command("t", command_payload("shadow", "lstm.json", at=1.0))
    assert agent.models.wait_idle() and agent.models.shadow is not None

    def fail(windows: np.ndarray) -> np.ndarray:
        raise MemoryError("out of device memory")

    monkeypatch.setattr(agent.ticker.shadow, "forecast", fail)
    run(agent, 0, 25)
    assert agent.ticker.shadow is None
    agent.models.handle_command("t", command_payload("promote", None, at=2.0))
    assert agent.models.wait_idle()
    assert agent.forecaster.version == served
    assert failures(agent, "command") == 1
    assert agent.metrics.registry.get_sample_value("forewarn_shadow_active") == 0
    agent.models.handle_command("t", command_payload("shadow", "lstm.json", at=3.0))
    assert agent.models.wait_idle()
    assert agent.ticker.shadow is not None, "shadowing it again did not load it"


def test_shadow_forecasts_the_same_windows_and_promotion_serves_it(tmp_path: Path, started) -> None:
    """The shadow never alerts; both models' 1-step errors are taken on the same readings;
    promote makes the shadow the served model and leaves no shadow."""
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    copy_model(LSTM, tmp_path / "models", "lstm")
    agent = started(settings_for(tmp_path, live))
    agent.models.handle_command("t", orjson.dumps({"shadow": "lstm.json"}))
    assert agent.models.wait_idle()
    shadow_version = agent.models.shadow.version
    run(agent, 0, 30)
    sample = agent.metrics.registry.get_sample_value
    compared = sample("forewarn_shadow_compared_readings_total")
    # windows fill at seq 19: forecasts from seq 19 on, each closed by the next reading
    assert compared == len(MACHINES) * 10
    live_rmse = sample("forewarn_shadow_rmse_celsius", {"model": "live"})
    shadow_rmse = sample("forewarn_shadow_rmse_celsius", {"model": "shadow"})
    assert np.isfinite([live_rmse, shadow_rmse]).all() and live_rmse != shadow_rmse
    assert sample("forewarn_shadow_active") == 1.0
    agent.models.handle_command("t", orjson.dumps({"promote": "shadow"}))
    assert agent.models.wait_idle()
    assert agent.forecaster.version == shadow_version and agent.models.shadow is None
    assert sample("forewarn_shadow_active") == 0.0


def test_a_recorded_promotion_wins_at_restart_unless_the_settings_changed(
    tmp_path: Path, started
) -> None:
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    copy_model(LSTM, tmp_path / "models", "lstm")
    agent = started(settings_for(tmp_path, live))
    payload = orjson.dumps({"live": "lstm.json"})
    agent.models.handle_command("t", payload)
    assert agent.models.wait_idle()
    promoted = agent.forecaster.version
    restarted = started(settings_for(tmp_path, live))
    assert restarted.forecaster.version == promoted
    restarted.models.handle_command("t", payload)  # the retained command, read again
    assert restarted.models.wait_idle() and restarted.models.swaps == 0
    other = copy_model(RIDGE, tmp_path / "models", "ridge2")
    reconfigured = started(settings_for(tmp_path, other))
    assert reconfigured.forecaster.kind == "ridge"


def test_metrics_of_a_fresh_agent_name_every_refusal_reason(tmp_path: Path) -> None:
    from agent.metrics import RELOAD_REASONS, AgentMetrics

    metrics = AgentMetrics(CollectorRegistry())
    for reason in RELOAD_REASONS:
        assert (
            metrics.registry.get_sample_value(
                "forewarn_model_reload_failures_total", {"reason": reason}
            )
            == 0.0
        )


def test_the_shadow_score_takes_both_errors_on_the_same_next_readings() -> None:
    """Each model's 1-step forecast of a machine is compared with that machine's next reading
    (its next seq) only; a reading after a skipped seq closes nothing."""
    from agent.metrics import AgentMetrics
    from agent.shadow import ShadowScore
    from agent.tick import TickForecasts

    score = ShadowScore(AgentMetrics(CollectorRegistry()), memory=1e12)
    slots = np.array([0, 1])

    def tick(seq: list[int], temperatures: list[float], live: float, shadow: float) -> None:
        windows = np.zeros((2, 20, 4), dtype=np.float32)
        windows[:, -1, 0] = temperatures
        forecasts = {
            "live": np.full((2, 15), live, dtype=np.float32),
            "shadow": np.full((2, 15), shadow, dtype=np.float32),
        }
        score(TickForecasts(slots, windows, np.array(seq), forecasts, ["a", "b"], 0.0))

    tick([5, 9], [60.0, 70.0], live=61.0, shadow=60.5)
    assert np.isnan(score.rmse()).all()
    tick([6, 11], [62.0, 71.0], live=0.0, shadow=0.0)  # b skipped seq 10: not compared
    live, shadow = score.rmse()
    assert live == pytest.approx(1.0) and shadow == pytest.approx(1.5)


def test_a_swap_restarts_the_drift_watch_on_the_new_reference_and_leaves_the_recording_be(
    tmp_path: Path, started
) -> None:
    """A refused model (other feature order) touches neither the drift watch nor the
    recording; an accepted one starts every machine's drift afresh against its own test skill,
    and the recording goes on in the same file with the same features (a swap cannot change
    them)."""
    live = copy_model(RIDGE, tmp_path / "models", "ridge")
    copy_model(LSTM, tmp_path / "models", "lstm")
    derived_ridge(tmp_path / "models", "order", "order")
    settings = settings_for(tmp_path, live)
    settings.drift = settings.drift.model_copy(update={"warm_up_readings": 5})
    settings.recording = settings.recording.model_copy(
        update={"enabled": True, "directory": tmp_path / "rec"}
    )
    agent = started(settings)
    recorder, drift = agent.recorder, agent.drift
    assert recorder is not None and drift is not None
    recorder.start()
    features = recorder.features
    value = agent.metrics.registry.get_sample_value
    ridge_skill = value("forewarn_model_test_skill")
    run(agent, 0, 30)
    compared = drift.count[: len(MACHINES)].copy()
    assert (compared >= 5).all()

    agent.models.handle_command("t", orjson.dumps({"live": "order.json"}))
    assert agent.models.wait_idle() and failures(agent, "features") == 1.0
    assert np.array_equal(drift.count[: len(MACHINES)], compared)
    assert recorder.features == features and value("forewarn_model_test_skill") == ridge_skill

    agent.models.handle_command("t", orjson.dumps({"live": "lstm.json"}))
    assert agent.models.wait_idle() and agent.forecaster.kind == "lstm"
    reference = skill_reference(agent.forecaster)
    assert reference is not None and drift.reference == reference
    assert value("forewarn_model_test_skill") == pytest.approx(reference.skill) != ridge_skill
    assert (drift.count == 0).all()
    run(agent, 30, 10)
    assert (drift.count[: len(MACHINES)] == 9).all()  # the first reading closes no forecast
    recorder.stop()
    assert recorder.features == features
    assert len(recording_files(tmp_path / "rec")) == 1
    assert read_recording(tmp_path / "rec").readings == 40 * len(MACHINES)


def test_a_command_sent_again_is_a_new_command_and_its_retained_copy_is_not(
    tmp_path: Path,
) -> None:
    """The agent skips a command whose digest it applied last (the retained copy, read again
    at a reconnect); `forewarn model` stamps each command, so an operator's same command sent
    again (a model fixed after it failed to load) is a new one."""
    folder = tmp_path / "models"
    copy_model(LSTM, folder, "lstm")
    assert isinstance(orjson.loads(command_payload("promote", None))["at"], float)
    first = command_payload("serve", "lstm.json", at=1_800_000_000.0)
    again = command_payload("serve", "lstm.json", at=1_800_000_060.0)
    a, b = parse_command(first, folder), parse_command(again, folder)
    assert a is not None and b is not None
    assert a.live == b.live == (folder / "lstm.json").resolve()
    assert a.digest != b.digest
    retained = parse_command(first, folder)
    assert retained is not None and retained.digest == a.digest
    with pytest.raises(Refused):
        parse_command(b'{"at": 5}', folder)  # a stamp alone is no command
    with pytest.raises(Refused):
        parse_command(b'{"live": "lstm.json", "at": "now"}', folder)


def test_an_evicted_machine_leaves_no_pending_shadow_forecast_to_its_slot() -> None:
    """Fleets count seq alike: a new machine in an evicted machine's slot whose seq follows
    the old one's last must not be scored against the old machine's forecast."""
    from agent.metrics import AgentMetrics
    from agent.shadow import ShadowScore
    from agent.tick import TickForecasts

    score = ShadowScore(AgentMetrics(CollectorRegistry()), memory=1e12)
    slots = np.array([0])

    def tick(seq: int, temperature: float, forecast: float) -> None:
        windows = np.zeros((1, 20, 4), dtype=np.float32)
        windows[:, -1, 0] = temperature
        forecasts = {m: np.full((1, 15), forecast, dtype=np.float32) for m in ("live", "shadow")}
        score(TickForecasts(slots, windows, np.array([seq]), forecasts, ["m"], 0.0))

    tick(41, 60.0, forecast=61.0)
    score.forget(np.array([0, 7]))  # slot 7 was never seen: nothing to forget there
    tick(42, 95.0, forecast=95.0)  # another machine, its own seq 42 in slot 0
    assert np.isnan(score.rmse()).all()
    tick(43, 95.5, forecast=0.0)
    assert score.rmse() == pytest.approx((0.5, 0.5))


def test_the_agent_forgets_an_evicted_machines_shadow_forecasts() -> None:
    from agent.app import Agent
    from config.settings import load_settings
    from wire.reading import Reading

    config = load_settings(_env_file=None)
    config.metrics = config.metrics.model_copy(update={"host": "127.0.0.1", "port": 0})
    config.agent = config.agent.model_copy(update={"max_machines": 1})
    agent = Agent(config)
    forgotten: list[list[int]] = []
    agent.ticker.eviction_listeners.append(lambda slots: forgotten.append(slots.tolist()))
    assert agent.models.score.forget in agent.ticker.eviction_listeners
    values = np.array([60.0, 80.0, 75.0, 1500.0], dtype=np.float32)
    for machine_id in ("a", "b"):
        agent.hand_off(Reading(machine_id, 1_700_000_000.0, 1, values))
        agent.tick()
    assert forgotten == [[0]]
