"""A Prometheus histogram observed a whole array at a time.

``prometheus_client.Histogram.observe`` takes one value under a lock: fine per tick, too slow
per reading (a tick may carry tens of thousands). This one bins an array with numpy — one
``searchsorted`` and one ``bincount`` — and exposes the usual ``_bucket``, ``_count`` and
``_sum`` series, so dashboards and ``histogram_quantile`` treat it as any histogram.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class BulkHistogram(Collector):
    """Cumulative buckets of every value observed, with their count and sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        upper = np.asarray(buckets, dtype=np.float64)
        if not len(upper) or np.any(np.diff(upper) <= 0) or not np.isfinite(upper).all():
            raise ValueError("buckets must be finite and strictly increasing")
        self.name = name
        self.documentation = documentation
        self._upper = upper
        self._labels = [floatToGoString(bound) for bound in upper] + ["+Inf"]
        self._counts = np.zeros(len(upper) + 1, dtype=np.int64)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: NDArray[np.floating]) -> None:
        """Count every value (NaN is ignored) into its bucket: ``le`` is an upper bound."""
        values = values[~np.isnan(values)]
        if not len(values):
            return
        counts = np.bincount(
            np.searchsorted(self._upper, values, side="left"), minlength=len(self._counts)
        )
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(self._labels, cumulative, strict=True)),
            sum_value=total,
        )
