#!/usr/bin/env python3
"""Fleet simulator: the real tracker decisions, a model of the peers, links as fluids, simulated time.

A discrete-event simulation (benchmarks/fleetsim/) of one file fetched by R racks of P peers (optionally in
S sites) through a capped origin, each rack behind a capped uplink (both ways), each site behind one too,
every host behind its NIC. The tracker's side is Shoal's own core: ``decide_announce`` (origin leases, hash
reports, the hand-out) and ``decide_crossings`` (scope leases) on every announce (fleetsim/tracker.py). The
peers follow the download engine's rules, with the core's picker and lease functions (fleetsim/peer.py).
Concurrent transfers share each link max-min fairly (fleetsim/network.py). Nothing is tuned per shape: the
timing parameters (start-up, round trips, have-stream latency, framing) are one set (fleetsim.sim.Model).

Printed per run: the last peer's time and that over the lower bound (max of size / origin rate, size / rack
uplink, size / site uplink), origin bytes / size, bytes into each rack and site / size (min-max), tracker
announces (decisions) and hash look-ups, announces per simulated second, and the simulator's own wall time
(and how much of it the tracker's decisions took).

    python3 benchmarks/fleet_sim.py --validate                  # the namespace labs' shapes, beside their figures
    python3 benchmarks/fleet_sim.py --shape 2x4 --size 256M --uplink-rate 1x
    python3 benchmarks/fleet_sim.py --shape 50x200 --size 256M --uplink-rate 2x   # 10,000 peers
    python3 benchmarks/fleet_sim.py --shape 100x200 --sites 4 --site-rate 2x --uplink-rate 2x
    python3 benchmarks/fleet_sim.py --shape 8 ...               # a flat switch of 8 peers (no labels)

Rates in Mbit/s, or ``Nx`` N times the origin rate. Run it from the repository with ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleetsim.sim import MBIT, Model, Result, Shape, Simulation
from netlab import parse_size
from shoal.core.manifest import piece_length_for

MIB = 1 << 20
RECORDED = {
    # benchmarks/RESULTS.md, "the racks lab with scope leases": (shape, MiB, uplink x) -> (last done s, origin)
    # 256 MiB after 4c98c4e (crossings asked up to 64 at a time: the code simulated here).
    ("2x4", 256, 1): (13.94, 1.021),
    ("2x4", 256, 2): (13.54, 1.006),
    ("3x3", 256, 1): (15.49, 1.038),
    ("3x3", 256, 2): (14.15, 1.002),
    ("4x2", 256, 1): (15.86, 1.033),
    ("4x2", 256, 2): (13.08, 1.002),
    # 128 MiB at de56f60, before it: crossings asked as many at a time as origin leases (lease_bytes, 2 MiB:
    # 4 pieces of 512 KiB), replayed with max_crossings 4.
    ("2x4", 128, 1): (8.01, 1.003),
    ("2x4", 128, 2): (7.18, 1.003),
    ("3x3", 128, 1): (8.55, 1.030),
    ("3x3", 128, 2): (7.83, 1.002),
    ("4x2", 128, 1): (9.13, 1.017),
    ("4x2", 128, 2): (8.27, 1.002),
}
RECORDED_BEFORE = {
    # The same table's 256 MiB "before" column (7a06b6d): 2 MiB of crossings a poll, 2 pieces of 1 MiB.
    ("2x4", 256, 1): (13.87, 1.017),
    ("2x4", 256, 2): (12.79, 1.002),
    ("3x3", 256, 1): (15.54, 1.038),
    ("3x3", 256, 2): (13.24, 1.003),
    ("4x2", 256, 1): (20.85, 1.009),
    ("4x2", 256, 2): (23.25, 1.014),
}
SWARM_LAB = (12.2, 13.9)
"""The swarm lab (8 peers on one switch, 256 MiB, 200 Mbit/s): last peer done, range over recent sets."""


def parse_rate(text: str, origin: float) -> float:
    """Mbit/s, or ``Nx`` N times the origin's rate; returned in Mbit/s."""
    try:
        value = float(text[:-1]) * origin if text.endswith("x") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate must be Mbit/s or Nx, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"rate must be positive, got {text!r}")
    return value


def parse_flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def parse_shape(text: str) -> tuple[int, int]:
    """``RxP`` racks of peers, or ``P`` one flat switch; returns (racks, peers), racks 0 for flat."""
    try:
        if "x" in text:
            racks, peers = (int(part) for part in text.split("x"))
        else:
            racks, peers = 0, int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be RxP or P, got {text!r}") from None
    if peers < 1 or racks < 0 or (racks == 0 and "x" in text):
        raise argparse.ArgumentTypeError(f"shape needs at least one rack of one peer, got {text!r}")
    return racks, peers


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


def line(result: Result, label: str) -> str:
    s = result.shape
    seconds = result.last_done
    return (
        f"{label:<26} last {seconds:7.2f} s ({result.ratio:.3f}x of {result.bound:.2f} s)  "
        f"origin {result.origin_bytes / s.size:.3f}  racks {spread(result.into_racks)}  "
        f"sites {spread(result.into_sites)}  announces {result.announces} ({result.announces / seconds:.0f}/s)  "
        f"look-ups {result.hash_lookups}  wall {result.wall:.1f} s (decisions {result.decision_wall:.1f} s)"
    )


def simulate(shape: Shape, model: Model, seed: int, exact_limit: int, progress: bool = False) -> Result:
    sim = Simulation(shape, model, seed=seed, exact_limit=exact_limit)
    sim.progress = progress
    return sim.run()


def before_4c98c4e(model: Model, size: int) -> Model:
    """The model replaying the code before 4c98c4e: crossings asked lease_bytes' worth at a time."""
    return replace(model, max_crossings=max(1, (2 * MIB) // piece_length_for(size)))


def validate(model: Model, seeds: int, exact_limit: int) -> list[dict[str, object]]:
    """The labs' shapes beside their recorded figures; returns the rows (also printed)."""
    rows: list[dict[str, object]] = []
    origin = 200.0

    def row(name: str, shape: Shape, used: Model, recorded: tuple[float, float] | tuple[float, ...]) -> None:
        results = [simulate(shape, used, seed, exact_limit) for seed in range(1, seeds + 1)]
        last = sorted(r.last_done for r in results)
        mid = last[len(last) // 2]
        origin_ratio = max(r.origin_bytes for r in results) / shape.size
        if len(recorded) == 2 and recorded[1] < 2:
            lab, lab_origin = recorded
            error = mid / lab - 1
            bound = shape.bound()
            print(
                f"{name:<28} sim {last[0]:6.2f}-{last[-1]:6.2f} s ({mid / bound:.2f}x)  lab {lab:6.2f} s "
                f"({lab / bound:.2f}x)  sim/lab {mid / lab:.3f}  origin sim {origin_ratio:.3f} lab {lab_origin:.3f}"
            )
        else:
            low, high = recorded
            lab, error = (low + high) / 2, (mid / high - 1 if mid > high else (mid / low - 1 if mid < low else 0.0))
            print(f"{name:<28} sim {last[0]:6.2f}-{last[-1]:6.2f} s  lab {low}-{high} s  beyond it by {error:+.3f}")
        rows.append({"name": name, "sim": last, "lab": lab, "error": error, "origin": origin_ratio})

    flat = Shape(0, 8, 256 * MIB, origin * MBIT, None)
    row("swarm lab 8 peers 256M", flat, model, SWARM_LAB)
    for (name, mib, times), recorded in RECORDED.items():
        racks, peers = parse_shape(name)
        shape = Shape(racks, peers, mib * MIB, origin * MBIT, times * origin * MBIT)
        used = model if mib == 256 else before_4c98c4e(model, shape.size)
        row(f"racks {name} {mib}M {times}x" + ("" if mib == 256 else " old"), shape, used, recorded)
    for (name, mib, times), recorded in RECORDED_BEFORE.items():
        racks, peers = parse_shape(name)
        shape = Shape(racks, peers, mib * MIB, origin * MBIT, times * origin * MBIT)
        row(f"racks {name} {mib}M {times}x old", shape, before_4c98c4e(model, shape.size), recorded)
    errors = [abs(float(r["error"])) for r in rows]  # type: ignore[arg-type]
    print(
        f"|sim/lab - 1| over {len(rows)} setups: median {sorted(errors)[len(errors) // 2]:.3f}, max {max(errors):.3f}"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="2x4", help="RxP racks of peers (comma-separated list), or P (flat)")
    parser.add_argument("--sites", type=int, default=0, help="split the racks over this many sites")
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--origin-rate", type=float, default=200.0, help="Mbit/s")
    parser.add_argument("--uplink-rate", default="1x", help="Mbit/s or Nx (comma-separated list); 0: uncapped")
    parser.add_argument("--site-rate", default="0", help="Mbit/s or Nx; 0: uncapped")
    parser.add_argument("--nic-rate", default="1000", help="each host's NIC, Mbit/s or Nx")
    parser.add_argument("--seeds", type=int, default=1, help="runs per setup, each with its own random seed")
    parser.add_argument(
        "--exact-limit", type=int, default=256, help="swarms up to this many peers get the whole state per decision"
    )
    parser.add_argument("--validate", action="store_true", help="the labs' shapes beside their recorded figures")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of text")
    parser.add_argument("--progress", action="store_true", help="a line to stderr every 200,000 events")
    for name, default in asdict(Model()).items():
        kind = parse_flag if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help="model: see Model")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.sites < 0:
        parser.error("--seeds must be at least 1 and --sites not negative")
    model = Model(**{name: getattr(args, name) for name in asdict(Model())})
    if args.validate:
        rows = validate(model, args.seeds, args.exact_limit)
        if args.json:
            print(json.dumps(rows))
        return 0
    origin = args.origin_rate
    site_rate = parse_rate(args.site_rate, origin) if args.site_rate != "0" else None
    nic = parse_rate(args.nic_rate, origin)
    for text in args.shape.split(","):
        racks, peers = parse_shape(text)
        for uplink in args.uplink_rate.split(","):
            up = parse_rate(uplink, origin) if uplink != "0" else None
            shape = Shape(
                racks, peers, args.size, origin * MBIT, up * MBIT if up else None, args.sites,
                site_rate * MBIT if site_rate else None, nic * MBIT,
            )  # fmt: skip
            for seed in range(1, args.seeds + 1):
                result = simulate(shape, model, seed, args.exact_limit, args.progress)
                label = f"{text} ({shape.count} peers) up {uplink}"
                if args.json:
                    report = {k: v for k, v in asdict(result).items() if k != "done_times"}
                    print(json.dumps({"label": label, "seed": seed, "ratio": result.ratio, **report}))
                else:
                    print(line(result, label), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
