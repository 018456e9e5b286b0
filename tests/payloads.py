"""What the decoder's fuzz tests share: their Hypothesis settings, arbitrary JSON values, and a
decoder whose limits are the widest a float holds (so range checks never decide)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from config.readings import ReadingLimits
from wire.reading import ReadingDecoder

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
"""The fuzz tests' budget. Whether runs are derandomised and where failing examples are kept
is the profile's (tests/conftest.py): kept in .hypothesis/ for developers, derandomised in CI."""

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=5,
)

WIDE_DECODER = ReadingDecoder(
    ReadingLimits(
        temperature_c=(-1e308, 1e308),
        vibration_hz=(-1e308, 1e308),
        pressure_psi=(-1e308, 1e308),
        rpm=(-1e308, 1e308),
    )
)
