"""The benchmarks' verdicts: memory growth per machine, the end-to-end targets."""

from __future__ import annotations

from bench.decode import measure, one_by_one, tick_of, together
from bench.e2e import targets
from bench.memory import growth
from bench.recording import targets as recording_targets


def test_growth_is_the_slope_between_the_two_largest_fleets():
    results = {
        "1000": {"rss_mb": 350.0, "baseline_mb": 330.0},
        "10000": {"rss_mb": 380.0, "baseline_mb": 330.0},
        "100000": {"rss_mb": 470.0, "baseline_mb": 330.0},
    }
    report = growth(results)
    assert report["per_machine_kb"] == round(90 * 1024 / 90_000, 2)
    assert report["per_1k_machines_mb"] == 1.0
    assert report["baseline_mb"] == 330.0


def test_targets_need_the_ratio_and_no_loss():
    summary = {"ratio": 0.3, "ingest_only_ratio": 0.6, "lost": 0, "ingest_only_lost": 0}
    summary |= {"rejected": {}}
    report = {
        "qos0": summary,
        "qos1": summary | {"rejected": {"overload": 2}},
        "latency_ms": {"p50": 300.0, "p99": 640.0},
        "tick_interval_s": 0.5,
        "rss_mb": {"10000": 401.0},
        "details": {"latency": {"machines": 5000, "readings_per_s": 4990}},
    }
    verdict = targets(report)
    assert verdict["qos0_ingest"]["met"] is True
    assert verdict["qos1_ingest"]["met"] is False
    assert verdict["latency_p99"]["met"] is True
    assert verdict["rss_10k"]["met"] is False
    report["details"]["latency"]["readings_per_s"] = 3000  # the agent fell behind
    assert targets(report)["latency_p99"]["met"] is False


def test_the_decode_bench_times_both_ways_on_the_same_verdicts():
    arrivals = tick_of(300, malformed_every=10)
    assert sum(payload[:1] != b"{" or b"ts" not in payload for _, payload, _ in arrivals) == 30
    row = measure(300, repeats=2, malformed_every=10)
    assert row["readings"] == 300
    assert row["kept"] == 270  # both ways gave the same verdicts, or measure() raises
    assert row["rejected"] == {"bad_json": 20, "machine_mismatch": 10}
    assert row["together_us"] > 0 and row["one_by_one_us"] > 0
    assert abs(row["speedup"] - row["one_by_one_us"] / row["together_us"]) < 0.02


def test_the_decode_bench_compares_verdicts_arrival_by_arrival():
    from config.readings import ReadingLimits
    from wire.reading import ReadingDecoder

    decoder = ReadingDecoder(ReadingLimits())
    arrivals = tick_of(50, malformed_every=7)
    kept, reasons = together(decoder, arrivals)
    assert (kept, reasons) == one_by_one(decoder, arrivals)
    assert kept.count(False) == 7 and sum(reasons.values()) == 7


def test_recording_cpu_target_counts_only_at_the_full_rate():
    round_ = {"on_readings_per_s": 4990, "off_readings_per_s": 4985}
    report = {
        "machines": 5000,
        "rate_hz": 1.0,
        "rounds": [round_, round_],
        "extra_cpu_percent": 4.0,
        "extra_cpu_per_reading_percent": 6.0,
        "folder_within_cap": True,
    }
    verdict = recording_targets(report)
    assert verdict["at_full_rate"]["met"] is True
    assert verdict["cpu"] == {"extra_percent": 6.0, "target_percent": 10.0, "met": True}
    assert verdict["cap"]["met"] is True
    report["extra_cpu_per_reading_percent"] = 12.0
    assert recording_targets(report)["cpu"]["met"] is False
    report["extra_cpu_per_reading_percent"] = 1.0
    report["rounds"] = [{"on_readings_per_s": 1500, "off_readings_per_s": 4990}]
    assert recording_targets(report)["cpu"]["met"] is False  # not measured at the full rate
