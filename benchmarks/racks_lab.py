#!/usr/bin/env python3
"""Racks lab: R racks of P peers, each rack behind one capped uplink, fetch one file from a capped origin.

What it builds (root required; every namespace is named ``rk-*`` and deleted again at the end)::

        rk-origin (10.78.0.1)      rk-tracker (10.78.0.2)
        eth0: tbf --origin-rate    eth0: uncapped
              |                          |
        ------+------- bridge "core" ----+----------------------------+-----
                         |  r1-dn: tbf (into rack 1)                  |  r2-dn ...
                         |  r1-up: tbf (out of rack 1)                |  r2-up ...
        ------------- bridge "rack1" ----------------        ---- bridge "rack2" ----
              |                 |                                  |
        rk-r1p1 (10.78.0.11)  rk-r1p2 ..                     rk-r2p1 ..

All bridges live in one namespace, ``rk-br``. A rack's uplink is a veth pair between its bridge and the core
(or its site's bridge): ``rN-up`` is the rack's end, ``rN-dn`` the core's. Both ends are shaped with
``tc qdisc ... tbf`` to ``--uplink-rate``, so traffic into a rack and out of it each has the uplink's rate;
``rN-dn``'s TX byte counter is what entered rack N (TCP/IP headers and tracker traffic included), ``rN-up``'s
what left it. With ``--sites S`` the racks are split over S site bridges in order (as evenly as they go),
each site behind an uplink pair ``sM-up``/``sM-dn`` to the core, shaped to ``--site-rate`` when given and
counted either way. The origin and the tracker are on the core as in benchmarks/swarm_lab.py (the origin's
link shaped to ``--origin-rate``, its TX counter the origin's cost; the tracker's link uncapped).

Methods, as in swarm_lab.py (benchmarks/labrun.py runs them): ``shoal`` (``shoal get`` in every peer with
``--rack rN`` and, with sites, ``--site sM``), ``daemon`` (a ``shoal daemon`` with those labels in every
peer, listening before the clock starts, and each peer's ``shoal get`` handed to it), ``pool`` (the same
daemons, members of one pool before the clock starts, and one ``shoal pool push`` when it starts: done when
every member's cache holds the file), ``aria2`` (an aria2c BitTorrent swarm with the origin as BEP 19 web
seed and benchmarks/bt_tracker.py as tracker: it knows no racks), ``curl`` (every peer from the origin).

The lower bound of a run is the slowest link every rack's copy must cross, nothing else:
``max(size / origin rate, size / rack uplink rate[, size / site uplink rate])``. Printed per run: shape,
uplink rate, method, the last peer's time and that over the bound, origin bytes / size, the bytes that
entered each rack / size (min-max, then each), the same per site, files verified, and the CPU used
meanwhile by processes outside the lab ("other": more than a few seconds means the run shared the
machine's two cores and its times are suspect). Then, per setup and method, a summary, and for shoal the
locality issue's targets: bytes into each rack <= 1.10x the file, into each site <= 1.05x, origin bytes
<= 1.02x, last peer done within 1.20x the lower bound.

Run it (as root, from the repository; the defaults are the locality issue's baseline)::

    python3 benchmarks/racks_lab.py                      # 2x4, 3x3, 4x2; 128 MiB; 200 Mbit/s; uplinks 1x, 2x
    python3 benchmarks/racks_lab.py --shape 4x2 --sites 2 --site-rate 1x --uplink-rate 2x --methods shoal
    python3 benchmarks/racks_lab.py --shape 2x2 --size 16M --methods shoal -vv --keep     # debugging

Each run's log line also gives the origin's bytes by its own HTTP count and the TCP segments it sent and
retransmitted (its namespace's /proc/net/snmp). With ``-v`` the origin logs every request once it has ended
(``request CLIENT START-END STATUS complete|aborted T0 T1``, shoal.testing.origin), so the pieces that left
it more than once can be counted.

Rates are in Mbit/s; an uplink or site rate may also be ``Nx``, N times the origin rate. The work directory
(``--workdir``, default /tmp) is removed at the end unless ``--keep`` is given, a run failed or the lab was
interrupted; then its logs stay and their path is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import Context, RunResult, lab_context, measured_software, run_logged, write_payload
from netlab import (
    Lab,
    Node,
    Session,
    add_bridge,
    add_bridge_port,
    add_namespace,
    check_tools,
    human,
    link_tx_bytes,
    log,
    parse_size,
    qdisc_drops,
    sh,
    shape_egress,
)
from shoal.testing.processes import compile_bytecode

PREFIX = "rk-"
METHODS = ("shoal", "daemon", "pool", "aria2", "curl")
# The locality issue's targets for shoal (bytes over the file size; time over the lower bound).
TARGETS = {"rack_in": 1.10, "site_in": 1.05, "origin": 1.02, "time_over_bound": 1.20}


@dataclass(frozen=True)
class Shape:
    racks: int
    peers_per_rack: int

    def __str__(self) -> str:
        return f"{self.racks}x{self.peers_per_rack}"


class RacksLab(Lab):
    """Racks (and sites) of peers behind uplinks shaped in both directions; see the module docstring."""

    prefix = PREFIX

    def __init__(self, shape: Shape, sites: int, subnet: str, origin_mbit: float) -> None:
        super().__init__(0, subnet, origin_mbit)
        self.shape = shape
        self.sites = sites
        self.rack_of: list[int] = []
        for r in range(1, shape.racks + 1):
            for p in range(1, shape.peers_per_rack + 1):
                ip = f"{subnet}.{11 + len(self.peers)}"
                self.peers.append(Node(f"{self.prefix}r{r}p{p}", ip, f"r{r}p{p}"))
                self.rack_of.append(r)
        self.uplink_mbit: float | None = None
        self.site_mbit: float | None = None

    def site_of(self, rack: int) -> int:
        """The site (from 1) of ``rack`` (from 1): racks fill the sites in order, as evenly as they go."""
        return (rack - 1) * self.sites // self.shape.racks + 1

    def _build(self) -> None:
        for ns in self.namespaces:
            add_namespace(ns)
        add_bridge(self.switch_ns, "core")
        for s in range(1, self.sites + 1):
            add_bridge(self.switch_ns, f"site{s}")
            self._uplink(f"s{s}", f"site{s}", "core")
        for r in range(1, self.shape.racks + 1):
            add_bridge(self.switch_ns, f"rack{r}")
            self._uplink(f"r{r}", f"rack{r}", f"site{self.site_of(r)}" if self.sites else "core")
        self.attach(self.origin, "core")
        self.attach(self.tracker, "core")
        for node, rack in zip(self.peers, self.rack_of, strict=True):
            self.attach(node, f"rack{rack}")
        shape_egress(self.origin.ns, "eth0", self.origin_mbit)

    def _uplink(self, name: str, bridge: str, parent: str) -> None:
        """A veth pair from ``bridge`` (its end ``NAME-up``) to ``parent`` (its end ``NAME-dn``)."""
        sh("ip", "-n", self.switch_ns, "link", "add", f"{name}-up", "type", "veth", "peer", "name", f"{name}-dn")
        add_bridge_port(self.switch_ns, f"{name}-up", bridge)
        add_bridge_port(self.switch_ns, f"{name}-dn", parent)

    def cap_uplinks(self, uplink_mbit: float, site_mbit: float | None) -> None:
        """Shape both ends of every rack uplink (and of every site uplink, given a rate)."""
        for r in range(1, self.shape.racks + 1):
            for end in ("up", "dn"):
                shape_egress(self.switch_ns, f"r{r}-{end}", uplink_mbit)
        if site_mbit:
            for s in range(1, self.sites + 1):
                for end in ("up", "dn"):
                    shape_egress(self.switch_ns, f"s{s}-{end}", site_mbit)
        self.uplink_mbit, self.site_mbit = uplink_mbit, site_mbit

    def lower_bound_s(self, size: int) -> float:
        assert self.uplink_mbit is not None, "cap_uplinks first"
        rates = [self.origin_mbit, self.uplink_mbit] + ([self.site_mbit] if self.site_mbit else [])
        return size * 8 / (min(rates) * 1e6)

    def peer_labels(self, index: int) -> list[str]:
        rack = self.rack_of[index]
        return ["--rack", f"r{rack}"] + (["--site", f"s{self.site_of(rack)}"] if self.sites else [])

    def uplink_bytes(self) -> dict[str, int]:
        """TX bytes of every link in the switch namespace: ``rN-dn`` into rack N, ``rN-up`` out of it."""
        return link_tx_bytes(self.switch_ns)

    def uplink_drops(self) -> dict[str, int]:
        """Packets the cap of every link in the switch namespace dropped (``rN-dn``: on the way into rack N)."""
        return qdisc_drops(self.switch_ns)


@dataclass
class RacksRun:
    """One run in the racks lab: the run's own figures and the bytes that crossed each uplink."""

    shape: str
    sites: int
    uplink_mbit: float
    site_mbit: float | None
    result: RunResult
    rack_in: list[int]
    rack_out: list[int]
    site_in: list[int]
    site_out: list[int]
    rack_in_drops: list[int]
    """Packets dropped on the way into each rack by its uplink's cap, origin segments among them: what made
    the origin send bytes again (RunResult.origin_retransmits)."""

    @property
    def ok(self) -> bool:
        return self.result.ok

    def ratios(self, counts: list[int]) -> list[float]:
        return [n / self.result.size for n in counts]

    def targets(self) -> dict[str, bool]:
        """Which of the locality issue's targets this run met."""
        r = self.result
        return {
            "rack_in": max(self.ratios(self.rack_in)) <= TARGETS["rack_in"],
            "site_in": not self.site_in or max(self.ratios(self.site_in)) <= TARGETS["site_in"],
            "origin": r.origin_wire_bytes / r.size <= TARGETS["origin"],
            "time_over_bound": r.over_bound is not None and r.over_bound <= TARGETS["time_over_bound"],
        }

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["result"] = self.result.to_json()
        data.update(
            rack_in_ratio=self.ratios(self.rack_in),
            site_in_ratio=self.ratios(self.site_in),
            targets_met=self.targets(),
        )
        return data


def run_racks(ctx: Context, method: str, run: int) -> RacksRun:
    """One run of ``method``, with the uplinks' counters read before the run's services start and after
    they stopped (all of the run's traffic lies between)."""
    lab = ctx.lab
    assert isinstance(lab, RacksLab) and lab.uplink_mbit is not None
    before, drops_before = lab.uplink_bytes(), lab.uplink_drops()
    label = f"{lab.shape}-up{lab.uplink_mbit:g}-"
    result = run_logged(ctx, method, run, label)
    after, drops = lab.uplink_bytes(), lab.uplink_drops()

    def crossed(names: list[str]) -> list[int]:
        return [after[name] - before[name] for name in names]

    racks, sites = range(1, lab.shape.racks + 1), range(1, lab.sites + 1)
    drops_in = [drops.get(f"r{r}-dn", 0) - drops_before.get(f"r{r}-dn", 0) for r in racks]
    log(f"{label}run {run}: {method}: packets dropped on the way into each rack: {' '.join(map(str, drops_in))}")
    return RacksRun(
        str(lab.shape),
        lab.sites,
        lab.uplink_mbit,
        lab.site_mbit,
        result,
        rack_in=crossed([f"r{r}-dn" for r in racks]),
        rack_out=crossed([f"r{r}-up" for r in racks]),
        site_in=crossed([f"s{s}-dn" for s in sites]),
        site_out=crossed([f"s{s}-up" for s in sites]),
        rack_in_drops=drops_in,
    )


# -- report ----------------------------------------------------------------------------------------------


def spread(ratios: list[float]) -> str:
    """``min-max: each`` of a list of ratios, or ``-`` for none."""
    if not ratios:
        return "-"
    return f"{min(ratios):.2f}-{max(ratios):.2f}: " + " ".join(f"{x:.2f}" for x in ratios)


def format_table(runs: list[RacksRun], args: argparse.Namespace, setup: dict[str, object]) -> str:
    sites = f"{args.sites} sites" + (f" behind {args.site_rate} uplinks" if args.site_rate else " (uplinks uncapped)")
    lines = [
        f"racks lab: {human(args.size)} file, origin link capped at {args.origin_rate:g} Mbit/s, rack uplinks "
        f"capped both ways; {sites if args.sites else 'no sites'}",
        f"shoal {setup['shoal']}; {setup['aria2']}; load average at start {setup['loadavg']}",
        "",
        f"{'shape':<5} {'uplink':>6} {'method':<6} {'run':>3} {'last done':>10} {'x bound':>7} {'bound':>6} "
        f"{'origin/size':>11} {'into each rack / size':<34} {'into each site / size':<22} {'sha256 ok':>9} "
        f"{'CPU s: other':>12} {'irq':>5} {'steal':>5}",
    ]
    for run in runs:
        r = run.result
        last = f"{r.last_done_s:.2f} s" if r.last_done_s is not None else f"{r.completed}/{r.peers} done"
        over = f"{r.over_bound:.2f}" if r.over_bound is not None else "-"
        lines.append(
            f"{run.shape:<5} {run.uplink_mbit:>6g} {r.method:<6} {r.run:>3} {last:>10} {over:>7} "
            f"{r.lower_bound_s:>6.2f} {r.origin_wire_bytes / r.size:>11.3f} {spread(run.ratios(run.rack_in)):<34} "
            f"{spread(run.ratios(run.site_in)):<22} {f'{r.verified}/{r.peers}':>9} {r.cpu_s_outside:>12.1f} "
            f"{r.cpu_s_irq:>5.1f} {r.cpu_s_steal:>5.1f}"
        )
    lines += [
        "",
        "uplink: the rack uplinks' rate (Mbit/s, each direction); last done: from launching the first peer to",
        "the last peer done; x bound: that / bound, the lower bound max(size / origin rate, size / uplink rate",
        "[, size / site rate]) in seconds; origin/size: TX bytes of the origin's capped link / file size; into",
        "each rack (site): TX bytes of the core's end of its uplink / file size, TCP/IP headers and tracker",
        "traffic included; CPU s: CPU seconds used while the peers ran by processes outside the lab (other:",
        "more than a few means the run shared the machine's cores), interrupts and softirqs (the veths'",
        "packets), and time the host took from this VM's cores (steal).",
        "",
        *summary_lines(runs),
    ]
    for run in runs:
        for failure in run.result.failures:
            lines.append(
                f"FAILED {run.shape} uplink {run.uplink_mbit:g} {run.result.method} run {run.result.run}: {failure}"
            )
    return "\n".join(lines)


def summary_lines(runs: list[RacksRun]) -> list[str]:
    """Per setup and method: medians over the runs; for shoal, each run against the locality targets."""
    lines = [
        f"summary (medians over runs); shoal's targets: into each rack <= {TARGETS['rack_in']}x, into each site "
        f"<= {TARGETS['site_in']}x, origin <= {TARGETS['origin']}x, last done <= {TARGETS['time_over_bound']}x bound"
    ]
    setups = sorted({(run.shape, run.uplink_mbit, run.result.method) for run in runs}, key=str)
    for shape, uplink, method in setups:
        group = [run for run in runs if (run.shape, run.uplink_mbit, run.result.method) == (shape, uplink, method)]
        overs = [run.result.over_bound for run in group if run.result.over_bound is not None]
        worst_rack = statistics.median(max(run.ratios(run.rack_in)) for run in group)
        origin = statistics.median(run.result.origin_wire_bytes / run.result.size for run in group)
        time_text = f"{statistics.median(overs):.2f}x bound" if overs else "no complete run"
        line = (
            f"  {shape:<5} uplink {uplink:g} {method:<6} {len(overs)}/{len(group)} complete: last done {time_text}, "
            f"origin {origin:.3f}x, fullest rack {worst_rack:.2f}x"
        )
        if group[0].site_in:
            line += f", fullest site {statistics.median(max(run.ratios(run.site_in)) for run in group):.2f}x"
        if method in ("shoal", "daemon", "pool"):
            missed = sorted({name for run in group for name, met in run.targets().items() if not met})
            line += "; targets met" if not missed else f"; targets MISSED: {', '.join(missed)}"
        lines.append(line)
    return lines


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Racks lab: racks of peers behind capped uplinks fetch one file from a capped origin "
        "(shoal vs aria2c). Run as root.",
    )
    parser.add_argument(
        "--shape", default="2x4,3x3,4x2", help="RxP racks x peers, comma-separated (default 2x4,3x3,4x2)"
    )
    parser.add_argument("--sites", type=int, default=0, help="split the racks over this many sites (default none)")
    parser.add_argument("--size", type=parse_size, default=128 << 20, help="file size, e.g. 128M, 1G (default 128M)")
    parser.add_argument("--origin-rate", type=float, default=200.0, help="origin link cap, Mbit/s (default 200)")
    parser.add_argument(
        "--uplink-rate",
        default="1x,2x",
        help="rack uplink caps, comma-separated, each Mbit/s or Nx the origin rate (default 1x,2x)",
    )
    parser.add_argument("--site-rate", default=None, help="site uplink cap, Mbit/s or Nx (default uncapped)")
    parser.add_argument("--methods", default="shoal,aria2", help=f"from {','.join(METHODS)} (default shoal,aria2)")
    parser.add_argument("--repeat", type=int, default=1, help="run each setup's methods this many times")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run (default 12x bound + 30)")
    parser.add_argument("--bt-piece-kib", type=int, default=None, help="torrent piece length in KiB")
    parser.add_argument("--subnet", default="10.78.0", help="first three octets of the lab's /24 (default 10.78.0)")
    parser.add_argument("--workdir", default="/tmp", help="parent of the run's directory (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (files and logs)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="passed on to shoal; aria2c logs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (the table goes to stderr)")
    args = parser.parse_args(argv)
    try:
        args.shapes = [parse_shape(text) for text in args.shape.split(",")]
        args.uplink_mbits = [
            parse_rate(text, args.origin_rate, "--uplink-rate") for text in args.uplink_rate.split(",")
        ]
        args.site_mbit = parse_rate(args.site_rate, args.origin_rate, "--site-rate") if args.site_rate else None
    except ValueError as exc:
        parser.error(str(exc))
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if args.size <= 0 or args.origin_rate <= 0 or args.repeat < 1:
        parser.error("--size, --origin-rate and --repeat must be positive")
    if args.sites < 0 or any(args.sites > shape.racks for shape in args.shapes):
        parser.error(f"--sites {args.sites}: each site needs a rack, and shape {args.shape} has fewer racks")
    if args.site_rate and not args.sites:
        parser.error("--site-rate needs --sites")
    if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", args.subnet):
        parser.error("--subnet takes three octets, e.g. 10.78.0")
    return args


def parse_shape(text: str) -> Shape:
    """``RxP``: R racks of P peers; at most 200 peers (one /24 holds them)."""
    match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"--shape {text!r}: expected RxP with R racks and P peers per rack, e.g. 2x4")
    shape = Shape(int(match[1]), int(match[2]))
    if shape.racks * shape.peers_per_rack > 200:
        raise ValueError(f"--shape {text!r}: {shape.racks * shape.peers_per_rack} peers; at most 200")
    return shape


def parse_rate(text: str, origin_mbit: float, option: str) -> float:
    """Mbit/s from ``400`` (Mbit/s) or ``2x`` (twice the origin rate)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(x?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise ValueError(
            f"{option} {text!r}: expected a positive rate in Mbit/s (400) or a multiple of the origin's (2x)"
        )
    return float(match[1]) * origin_mbit if match[2] else float(match[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools("racks_lab.py", args.methods)
    slowest = min([args.origin_rate, *args.uplink_mbits] + ([args.site_mbit] if args.site_mbit else []))
    timeout = args.timeout or 12 * args.size * 8 / (slowest * 1e6) + 30
    compile_bytecode()  # the peers start as an installed shoal does, from bytecode
    with Session[RacksRun](args.workdir, "racks-lab-", PREFIX, args.keep) as session:
        setup: dict[str, object] = {
            "shapes": [str(shape) for shape in args.shapes],
            "sites": args.sites,
            "size": args.size,
            "origin_mbit": args.origin_rate,
            "uplink_mbit": args.uplink_mbits,
            "site_mbit": args.site_mbit,
            "methods": args.methods,
            "repeat": args.repeat,
            "workdir": str(session.workdir),
            "targets": TARGETS,
            **measured_software(),
        }
        payload, sha256 = write_payload(session.workdir, args.size)
        for shape in args.shapes:
            with RacksLab(shape, args.sites, args.subnet, args.origin_rate) as lab:
                log(f"lab up: {shape}, {len(lab.namespaces)} namespaces, origin at {args.origin_rate:g} Mbit/s")
                ctx = lab_context(lab, session.workdir, payload, sha256, args, timeout, f"origin-{shape}.log")
                for uplink_mbit in args.uplink_mbits:
                    lab.cap_uplinks(uplink_mbit, args.site_mbit)
                    for run in range(1, args.repeat + 1):
                        for method in args.methods:
                            session.results.append(run_racks(ctx, method, run))
    if args.json:
        print(json.dumps({"setup": setup, "runs": [run.to_json() for run in session.results]}, indent=2))
    if session.results:
        print(format_table(session.results, args, setup), file=sys.stderr if args.json else sys.stdout)
    return session.exit_code


if __name__ == "__main__":
    sys.exit(main())
