"""Broken payloads, as a misconfigured gateway or a failing sensor sends them."""

from __future__ import annotations

import numpy as np

from wire.payload import encode_reading

BAD_KINDS: tuple[str, ...] = (
    "malformed_json",
    "wrong_type",
    "nan",
    "infinity",
    "missing_field",
    "out_of_range",
    "duplicate_seq",
    "out_of_order_seq",
)


def bad_payloads(
    machine_id: str, ts: float, seq: int, values: np.ndarray, rng: np.random.Generator
) -> list[bytes]:
    """What a broken gateway sends instead of one good reading (one or two messages).

    Duplicates and out-of-order sequence numbers come with the good reading, as a redelivery
    or a late message would; the other kinds replace it.
    """
    good = encode_reading(machine_id, ts, seq, values)
    kind = BAD_KINDS[int(rng.integers(len(BAD_KINDS)))]
    if kind == "malformed_json":
        return [good[: int(rng.integers(1, len(good) - 1))]]
    if kind == "wrong_type":
        return [good.replace(b'"temperature_c":', b'"temperature_c":"hot","x":', 1)]
    if kind == "nan":
        return [good.replace(b'"rpm":', b'"rpm":NaN,"x":', 1)]
    if kind == "infinity":
        return [good.replace(b'"pressure_psi":', b'"pressure_psi":1e999,"x":', 1)]
    if kind == "missing_field":
        return [encode_reading(machine_id, ts, seq, values).replace(b'"seq"', b'"sequence"', 1)]
    if kind == "out_of_range":
        broken = values.copy()
        broken[0] = -1e9
        return [encode_reading(machine_id, ts, seq, broken)]
    if kind == "duplicate_seq":
        return [good, good]
    return [good, encode_reading(machine_id, ts, max(0, seq - 5), values)]
