"""A second, different domain built only with mlstream's public API: industrial sensors whose
power draw is predicted by a regression model."""

from __future__ import annotations

import numpy as np

from stream import Domain, FeatureSet, Field, Numeric, OneHot, Rolling, Schema

SCHEMA = Schema(
    name="sensor_reading",
    fields=(
        Field("reading_id", "string"),
        Field("sensor_id", "string"),
        Field("site", "category"),
        Field("temperature_c", "number", min=-50, max=150),
        Field("vibration_mm_s", "number", min=0, max=100),
        Field("load_pct", "number", min=0, max=100),
        Field("time", "timestamp", min=0),
    ),
    id_field="reading_id",
    entity_field="sensor_id",
    time_field="time",
)

DOMAIN = Domain(
    name="sensors",
    schema=SCHEMA,
    features=FeatureSet(
        time_field="time",
        numeric=(
            Numeric("temperature_c", lambda c: c["temperature_c"]),
            Numeric("load_pct", lambda c: c["load_pct"]),
            Numeric("log_vibration", lambda c: np.log1p(c["vibration_mm_s"])),
        ),
        one_hot=(OneHot("site", ("north", "south")),),
        rolling=(Rolling("temperature_c", windows={"10m": 600.0}, since_last=False),),
    ),
    task="regression",
    label_field="power_kw",
)


def readings(n: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Seeded readings of 20 sensors and the power each drew (the regression target)."""
    rng = np.random.default_rng(seed)
    sensors = rng.integers(0, 20, n)
    load = rng.uniform(10, 95, n)
    temp = 20 + 0.4 * load + rng.normal(0, 3, n)
    vib = np.abs(rng.normal(2 + 0.05 * load, 1, n))
    power = 5 + 0.8 * load + 0.2 * temp + rng.normal(0, 2, n)
    events = [{
        "reading_id": f"r{seed}-{i}", "sensor_id": f"s{sensors[i]}",
        "site": "north" if sensors[i] < 10 else "south",
        "temperature_c": round(float(temp[i]), 3), "vibration_mm_s": round(float(vib[i]), 3),
        "load_pct": round(float(load[i]), 3), "time": 1_700_000_000.0 + 10.0 * i,
    } for i in range(n)]
    return events, power
