"""The streaming anomaly score and the noise ratio the alert policy uses, on known series."""

from __future__ import annotations

import numpy as np

from agent.anomaly import AnomalyScorer


def stream(series: np.ndarray, horizon: int = 5) -> tuple[list[float], list[float]]:
    """Feed one machine's readings with persistence forecasts; (scores, noise ratios) per step."""
    scorer = AnomalyScorer(horizon, capacity=1)
    slots = np.zeros(1, dtype=np.int64)
    scores, ratios = [], []
    for seq, value in enumerate(series):
        forecast = np.full((1, horizon), value, dtype=np.float32)
        scores.append(float(scorer.update(slots, np.array([value]), np.array([seq]), forecast)[0]))
        ratios.append(float(scorer.noise_ratio(slots)[0]))
    return scores, ratios


def test_a_steady_machine_scores_low_and_its_noise_ratio_stays_near_one() -> None:
    rng = np.random.default_rng(1)
    scores, ratios = stream(80.0 + rng.normal(0.0, 2.0, 1500))
    assert max(scores[200:]) < 0.9
    assert min(ratios[200:]) > 0.6 and np.percentile(ratios[200:], 99) < 1.45


def test_a_sensor_turned_noisy_has_a_high_noise_ratio_and_a_high_score() -> None:
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, 2.0, 1500)
    noise[1000:1300] *= 3.0
    scores, ratios = stream(80.0 + noise)
    assert np.percentile(ratios[800:1000], 99) < 1.45
    # What the policy's warning_noise_ratio_max (1.5) looks for, most of the noisy stretch:
    assert np.mean(np.array(ratios[1050:1300]) > 1.5) > 0.8
    assert max(scores[1000:1300]) > 0.8


def test_an_overheat_ramp_keeps_its_noise_ratio_usual() -> None:
    """A forecaster that lags a ramp misses by a steady amount: not noise, so warnings stand."""
    rng = np.random.default_rng(3)
    t = np.arange(1500, dtype=np.float64)
    ramp = np.where(t > 1000, 0.0004 * (t - 1000) ** 2, 0.0)
    _, ratios = stream(70.0 + ramp + rng.normal(0.0, 2.0, 1500))
    assert max(ratios[1000:1250]) < 1.5


def test_a_drop_scores_as_well_as_a_rise() -> None:
    rng = np.random.default_rng(4)
    base = 80.0 + rng.normal(0.0, 1.0, 1200)
    up, down = base.copy(), base.copy()
    up[1000:] += 8.0
    down[1000:] -= 8.0
    score_up, _ = stream(up)
    score_down, _ = stream(down)
    assert max(score_up[1000:1010]) > 0.5 and max(score_down[1000:1010]) > 0.5
