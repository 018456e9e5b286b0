"""bench.anomaly's pinned anchor and rates, on the Tennessee Eastman data beside the project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.anomaly import _pca_flags, _tep_rates, _tep_runs, alert_fires

TEP = Path(__file__).resolve().parents[3] / "shared" / "data" / "tep"


def test_rates_leave_out_faults_3_9_15_and_count_normal_samples_of_every_run() -> None:
    flags = {n: np.zeros(960, dtype=bool) for n in range(22)}
    flags[0][:96] = True  # 10 % of the normal run
    flags[3][160:] = True  # a left-out fault, fully detected: not in the mean
    flags[1][160:560] = True  # half of fault 1
    rates = _tep_rates(flags)
    assert rates["detection_rate"] == pytest.approx(0.5 / 18, abs=1e-4)
    assert rates["false_alarm_rate"] == pytest.approx(96 / (960 + 21 * 160), abs=1e-4)


@pytest.mark.skipif(not TEP.exists(), reason="the Tennessee Eastman data is not beside the project")
def test_the_pca_anchor_reproduces_its_pinned_figures() -> None:
    train, runs = _tep_runs()
    rates = _tep_rates(_pca_flags(train, runs))
    assert rates["detection_rate"] == pytest.approx(0.826, abs=0.001)
    assert rates["false_alarm_rate"] == pytest.approx(0.083, abs=0.001)


def test_an_alert_counts_as_one_event_on_the_row_it_fires() -> None:
    firing = np.array([True, True, False, False, True, True, True, False, True])
    fires = alert_fires(firing)
    assert fires.tolist() == [True, False, False, False, True, False, False, False, True]
