"""A seeded simulator of a fleet of centrifugal pumps: the raw CSV of Clockwork's second example data set.

`simulate(rows=, seed=)` returns the CSV as bytes: the same bytes for the same arguments (numpy's PCG64
stream, fixed decimals, "\\n" line ends, no clock or locale read). `write(path, ...)` writes it atomically
(shared.atomic: temp file, fsync, rename), so a crash leaves the previous file or none, never half of one.
CLI: `python -m examples.pump_fleet.simulate --out PATH [--rows N] [--seed S]`; no network.

What the file holds (examples/pump_fleet/config.yaml describes every column, its unit and range):
- readings of 30 pumps of 5 models, one pump per row, in time order: `Timestamp` is ISO 8601 UTC, strictly
  increasing, 1 to 5 minutes apart; `Pump ID` identifies the pump (never a feature);
- wear grows with the hours since service: the bearing heats, the worn impeller draws more current per m³/h;
- `Failure within 24h` ("yes"/"no") follows from the written reading itself, so one reading suffices, through
  a derived feature: bearing temperature minus ambient above BEARING_RISE_LIMIT (bearing overheating), motor
  current per m³/h above AMPS_PER_FLOW_LIMIT (impeller wear; small models, drawing more per m³/h, reach it
  sooner), hydraulic power flow x pressure / 36 above OVERLOAD_LIMIT times the model's rating (motor overload;
  rare, and learnable only per model); plus rare seal failures that no reading announces. A pump is serviced
  (hours back to 0) 24 h after its first failing reading, or when its service interval is reached;
- `Failure cause` names the mechanism on failure rows and is empty otherwise: the label in disguise;
- chronological drift: the ambient temperature warms through the period and demand (flow) rises a little,
  so the later rows hold more overloads; the failure rules do not change.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from shared.atomic import atomic_write_bytes

DEFAULT_ROWS = 24_000
DEFAULT_SEED = 20240
MIN_ROWS = 100
START = datetime(2024, 1, 8, tzinfo=UTC)
PUMPS_PER_MODEL = 6
BEARING_RISE_LIMIT = 45.0  # °C above ambient
AMPS_PER_FLOW_LIMIT = 0.60  # A per m³/h, any model: a worn impeller moves less water per amp
OVERLOAD_LIMIT = 1.17  # x the model's rated hydraulic power
SEAL_FAILURE_P = 0.0015  # per reading, announced by nothing
SERVICE_EVERY_H = (700.0, 1800.0)  # a pump's service interval, hours
BEARING_LIFE_H = (250.0, 750.0)  # hours to nominal bearing wear; drawn again for each new bearing
IMPELLER_LIFE_H = (250.0, 750.0)

HEADER = [
    "Timestamp",
    "Pump ID",
    "Pump model",
    "Flow [m3/h]",
    "Discharge pressure [bar]",
    "Motor current [A]",
    "Ambient temp [°C]",
    "Bearing temp [°C]",
    "Vibration RMS [mm/s]",
    "Hours since service [h]",
    "Failure within 24h",
    "Failure cause",
]


@dataclass(frozen=True)
class PumpModel:
    name: str
    flow: float  # nominal flow, m³/h
    pressure: float  # nominal discharge pressure, bar
    amps_per_flow: float  # nominal motor current per m³/h, A/(m³/h)
    bearing_rise: float  # bearing temperature above ambient when new, °C

    @property
    def rated_kw(self) -> float:
        return self.flow * self.pressure / 36.0


MODELS = (
    PumpModel("CP-100", 40.0, 6.0, 0.50, 18.0),
    PumpModel("CP-200", 80.0, 7.0, 0.47, 20.0),
    PumpModel("CP-350", 140.0, 8.0, 0.45, 22.0),
    PumpModel("CP-500", 220.0, 9.0, 0.43, 24.0),
    PumpModel("CP-800", 350.0, 10.0, 0.41, 26.0),
)


@dataclass
class Pump:
    pid: str
    model: PumpModel
    hours: float  # since service
    service_every: float  # hours
    bearing_life: float  # hours at which the bearing reaches its nominal wear
    impeller_life: float
    last_seen: datetime = START
    failing_since: datetime | None = None


def _fleet(rng: np.random.Generator) -> list[Pump]:
    pumps = []
    for i in range(len(MODELS) * PUMPS_PER_MODEL):
        pumps.append(
            Pump(
                pid=f"PF-{i + 1:03d}",
                model=MODELS[i % len(MODELS)],
                hours=float(rng.uniform(0.0, 600.0)),
                service_every=float(rng.uniform(*SERVICE_EVERY_H)),
                bearing_life=float(rng.uniform(*BEARING_LIFE_H)),
                impeller_life=float(rng.uniform(*IMPELLER_LIFE_H)),
            )
        )
    return pumps


def _cause(m: PumpModel, row: dict[str, float], seal: bool) -> str:
    """The failure mechanism the written (rounded) reading shows, or "" for none."""
    if row["bearing"] - row["ambient"] > BEARING_RISE_LIMIT:
        return "bearing overheating"
    if row["current"] / row["flow"] > AMPS_PER_FLOW_LIMIT:
        return "impeller wear"
    if row["flow"] * row["pressure"] / 36.0 > OVERLOAD_LIMIT * m.rated_kw:
        return "motor overload"
    return "seal failure" if seal else ""


def simulate(*, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> bytes:
    """The raw CSV as bytes; deterministic for (rows, seed)."""
    if rows < MIN_ROWS:
        raise ValueError(f"rows must be at least {MIN_ROWS}, got {rows}")
    rng = np.random.default_rng(seed)
    pumps = _fleet(rng)
    # Every random draw is made up front, in a fixed order, so the stream never depends on branches.
    steps = rng.integers(60, 301, size=rows)  # seconds between readings
    which = rng.integers(0, len(pumps), size=rows)
    noise = rng.standard_normal(size=(rows, 7))
    seal = rng.random(size=rows) < SEAL_FAILURE_P
    renew = rng.random(size=(rows, 2))  # the new parts' lives, used when the row's pump is repaired

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    t = START
    for i in range(rows):
        t += timedelta(seconds=int(steps[i]))
        frac = i / rows  # position in the period: drives the drift
        p = pumps[int(which[i])]
        m = p.model
        p.hours += (t - p.last_seen).total_seconds() / 3600.0
        p.last_seen = t
        bw = (p.hours / p.bearing_life) ** 2
        iw = p.hours / p.impeller_life
        z = noise[i]
        load = min(max(1.0 + 0.05 * frac + 0.12 * z[0], 0.45), 1.45)
        resistance = 1.0 + 0.05 * z[1]
        hour = t.hour + t.minute / 60.0
        raw = {
            "flow": max(m.flow * load * (1.0 - 0.08 * iw), 5.0),
            "pressure": max(m.pressure * (1.25 - 0.25 * load**2) * resistance * (1.0 - 0.04 * iw), 0.2),
            "ambient": 4.0 + 16.0 * frac + 4.0 * math.sin(2 * math.pi * (hour - 9.0) / 24.0) + 1.5 * z[2],
        }
        raw["current"] = m.amps_per_flow * raw["flow"] * (1.0 + 0.3 * iw**1.5) * (1.0 + 0.02 * z[3])
        rise = m.bearing_rise + 20.0 * bw + 8.0 * (load - 1.0) + 1.0 * z[4]
        raw["bearing"] = raw["ambient"] + rise
        raw["vibration"] = max(1.8 + 2.5 * iw + 3.0 * bw + 2.0 * max(0.0, 0.7 - load) + 0.3 * z[5], 0.3)
        row = {
            "flow": round(raw["flow"], 1),
            "pressure": round(raw["pressure"], 2),
            "current": round(raw["current"], 1),
            "ambient": round(raw["ambient"], 1),
            "bearing": round(raw["bearing"], 1),
            "vibration": round(raw["vibration"], 2),
            "hours": round(p.hours, 1),
        }
        cause = _cause(m, row, bool(seal[i]))
        writer.writerow(
            [
                t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                p.pid,
                m.name,
                f"{row['flow']:.1f}",
                f"{row['pressure']:.2f}",
                f"{row['current']:.1f}",
                f"{row['ambient']:.1f}",
                f"{row['bearing']:.1f}",
                f"{row['vibration']:.2f}",
                f"{row['hours']:.1f}",
                "yes" if cause else "no",
                cause,
            ]
        )
        # Maintenance: a failing pump is repaired 24 h after its first failing reading; a healthy one at its interval.
        if cause and p.failing_since is None:
            p.failing_since = t
        repaired = p.failing_since is not None and t - p.failing_since >= timedelta(hours=24)
        if repaired or (p.failing_since is None and p.hours >= p.service_every):
            p.hours, p.failing_since = 0.0, None
            p.bearing_life = BEARING_LIFE_H[0] + float(renew[i, 0]) * (BEARING_LIFE_H[1] - BEARING_LIFE_H[0])
            p.impeller_life = IMPELLER_LIFE_H[0] + float(renew[i, 1]) * (IMPELLER_LIFE_H[1] - IMPELLER_LIFE_H[0])
    return out.getvalue().encode("utf-8")


def write(path: str | Path, *, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> Path:
    """Simulate and write the CSV atomically (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, simulate(rows=rows, seed=seed))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.pump_fleet.simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the CSV to write (atomically)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"readings (default {DEFAULT_ROWS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    args = parser.parse_args(argv)
    try:
        path = write(args.out, rows=args.rows, seed=args.seed)
    except (ValueError, OSError) as e:
        sys.stderr.write(f"simulate: {e}\n")
        return 2
    from shared.atomic import sha256_file

    sys.stdout.write(f"{path}  rows={args.rows} seed={args.seed} sha256={sha256_file(path)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
