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
(and how much of it the tracker's decisions took: announces decided per second of it, the core's pace on
this machine, the scope leases' bounded snapshot included past ``--exact-limit``).

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
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleetsim.sim import MBIT, Model, Result, Shape, Simulation
from fleetsim.trace import Tracer
from netlab import parse_size

MIB = 1 << 20
RECORDED = {
    # benchmarks/RESULTS.md, "2026-12-06 evening: the racks lab with the origin's share per rack (b72b84c)",
    # origin 200 Mbit/s, one run each: (shape, MiB, uplink x) -> (last peer done s, origin HTTP bytes / size,
    # the origin's first byte s after launch).
    ("2x4", 128, 1): (7.41, 1.000, 1.19),
    ("2x4", 128, 2): (7.05, 1.004, 1.32),
    ("3x3", 128, 1): (7.79, 1.012, 1.45),
    ("3x3", 128, 2): (7.37, 1.004, 1.46),
    ("4x2", 128, 1): (7.75, 1.008, 1.27),
    ("4x2", 128, 2): (7.10, 1.000, 1.17),
    ("2x4", 256, 1): (13.44, 1.000, 1.43),
    ("2x4", 256, 2): (12.75, 1.000, 1.18),
    ("3x3", 256, 1): (13.80, 1.000, 1.15),
    ("3x3", 256, 2): (13.25, 1.000, 1.73),
    ("4x2", 256, 1): (14.05, 1.000, 1.06),
    ("4x2", 256, 2): (12.66, 1.000, 1.02),
}
RECORDED_SITES = (7.71, 1.005)
"""The same evening: 4x2 in 2 sites, 128 MiB, rack uplinks 2x, site links 1x: last done s, origin wire bytes
(the HTTP bytes were not recorded; the wire adds about 0.3-0.5% of headers)."""
RECORDED_NIGHT = {
    # "2026-12-06 night: the merged head (2d9ce02)": the same lab at 128 MiB, last done over the bound only.
    ("2x4", 128, 1): 1.34,
    ("2x4", 128, 2): 1.31,
    ("3x3", 128, 1): 1.42,
    ("3x3", 128, 2): 1.33,
    ("4x2", 128, 1): 1.43,
    ("4x2", 128, 2): 1.46,
}
SWARM_LAB = (12.30, 12.47)
"""The swarm lab at 2d9ce02 (8 peers on one switch, 256 MiB, 200 Mbit/s): last peer done, two sets."""


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
        f"look-ups {result.hash_lookups}  wall {result.wall:.1f} s (decisions {result.decision_wall:.1f} s, "
        f"{result.announces / max(result.decision_wall, 1e-9):.0f}/s)"
        + (f"  hashed last {result.hashed_last:.2f} s" if result.hashed_last == result.hashed_last else "")
    )


def simulate(
    shape: Shape, model: Model, seed: int, exact_limit: int, progress: bool = False, trace: bool = False
) -> Result:
    sim = Simulation(shape, model, seed=seed, exact_limit=exact_limit)
    sim.progress = progress
    if trace:
        sim.tracer = Tracer(sim)
    result = sim.run()
    if sim.tracer is not None:
        result.phases = sim.tracer.phases(result)
    return result


def validate(model: Model, seeds: int, exact_limit: int) -> list[dict[str, object]]:
    """The labs' shapes beside their recorded figures; returns the rows (also printed). Sim: the seeds' upper
    median of the last peer done; error: sim / lab - 1 (0 within a range the lab gave)."""
    rows: list[dict[str, object]] = []
    origin = 200.0

    def row(name: str, shape: Shape, low: float, high: float, lab_origin: float | None, first: float | None) -> None:
        results = [simulate(shape, model, seed, exact_limit) for seed in range(1, seeds + 1)]
        last = sorted(r.last_done for r in results)
        mid = last[len(last) // 2]
        origin_ratio = max(r.origin_bytes for r in results) / shape.size
        sim_first = sorted(r.first_origin for r in results)[len(results) // 2]
        bound = shape.bound()
        error = mid / high - 1 if mid > high else (mid / low - 1 if mid < low else 0.0)
        lab = f"{low:6.2f} s" if low == high else f"{low:.2f}-{high:.2f} s"
        text = (
            f"{name:<24} sim {last[0]:6.2f}-{last[-1]:6.2f} s ({mid / bound:.2f}x)  lab {lab} ({high / bound:.2f}x)"
            f"  error {error:+.3f}  origin sim {origin_ratio:.3f}"
        )
        if lab_origin is not None:
            text += f" lab {lab_origin:.3f}"
        if first is not None:
            # From the origin's first byte on: what the model says once start-up is out of the comparison.
            after = f"sim {(mid - sim_first) / bound:.2f}x lab {(high - first) / bound:.2f}x"
            text += f"  first origin byte sim {sim_first:.2f} s lab {first:.2f} s, from it to the last done {after}"
        print(text, flush=True)
        rows.append({"name": name, "sim": last, "lab": [low, high], "error": error, "origin": origin_ratio})

    row("swarm lab 8 peers 256M", Shape(0, 8, 256 * MIB, origin * MBIT, None), *SWARM_LAB, None, None)
    for (name, mib, times), (lab, lab_origin, first) in RECORDED.items():
        racks, peers = parse_shape(name)
        shape = Shape(racks, peers, mib * MIB, origin * MBIT, times * origin * MBIT)
        row(f"racks {name} {mib}M {times}x", shape, lab, lab, lab_origin, first)
    sites = Shape(4, 2, 128 * MIB, origin * MBIT, 2 * origin * MBIT, 2, origin * MBIT)
    row("racks 4x2 128M 2x sites 2", sites, RECORDED_SITES[0], RECORDED_SITES[0], RECORDED_SITES[1], None)
    for (name, mib, times), ratio in RECORDED_NIGHT.items():
        racks, peers = parse_shape(name)
        shape = Shape(racks, peers, mib * MIB, origin * MBIT, times * origin * MBIT)
        # The ratio was recorded to two decimals: the lab's time is within half a hundredth of the bound.
        bound = shape.bound()
        low, high = (ratio - 0.005) * bound, (ratio + 0.005) * bound
        row(f"racks {name} {mib}M {times}x 2d9ce02", shape, low, high, None, None)
    errors = sorted(abs(float(r["error"])) for r in rows)  # type: ignore[arg-type]
    within = sum(1 for e in errors if e <= 0.10)
    print(
        f"|sim/lab - 1| over {len(rows)} setups: median {errors[len(errors) // 2]:.3f}, max {errors[-1]:.3f}; "
        f"{within} within 10%"
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
    parser.add_argument(
        "--trace", action="store_true", help="where the time goes: the origin's and rack downlinks' idle time by phase"
    )
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
                result = simulate(shape, model, seed, args.exact_limit, args.progress, args.trace)
                label = f"{text} ({shape.count} peers) up {uplink}"
                if args.json:
                    report = {k: v for k, v in asdict(result).items() if k not in ("done_times", "phases")}
                    if result.phases is not None:
                        report["phases"] = {k: v for k, v in asdict(result.phases).items() if k != "done"}
                    print(json.dumps({"label": label, "seed": seed, "ratio": result.ratio, **report}))
                else:
                    print(line(result, label), flush=True)
                    if result.phases is not None:
                        share = result.origin_bytes / shape.size
                        print("\n".join(result.phases.lines(result.bound, model.framing, share)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
