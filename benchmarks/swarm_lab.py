#!/usr/bin/env python3
"""Swarm lab: how fast N machines get one file through a capped origin link, and how much of it the origin sends.

What it builds (root required; everything lives in network namespaces it creates and deletes again)::

        swl-origin (10.77.0.1)        swl-tracker (10.77.0.2)     swl-p1 .. swl-pN (10.77.0.11 ..)
        eth0: tbf --origin-mbit       eth0: uncapped              eth0: uncapped
              |                             |                          |
        ------+-------- br0 in namespace swl-br (a bridge, no address) -+------

* ``swl-origin`` runs ``python -m shoal.testing.origin DIR --host 0.0.0.0 --port 8000`` serving a random
  file of ``--size`` bytes. Its ``eth0`` egress (toward the bridge) is shaped by ``tc qdisc ... tbf`` to
  ``--origin-mbit`` Mbit/s; everything the origin sends crosses that link and nothing else does, so the
  link's TX byte counter (``ip -s -j link``) is the origin's cost. The origin's own ``GET /_stats`` payload
  counter is read as well (HTTP body bytes, without TCP/IP headers).
* ``swl-tracker`` is on its own uncapped link, so tracker traffic never competes with the origin's. It runs
  ``shoal tracker`` (fresh SQLite database per run) or, for aria2, ``benchmarks/bt_tracker.py`` (a minimal
  BEP 3/23 tracker, independent of the code under test).
* Each ``swl-pK`` is one peer. Every namespace gets ``/etc/netns/NAME/resolv.conf`` (``nameserver
  127.0.0.1``) so that nothing waits on DNS.

Methods (all N peers start at once; the clock starts before the first process is launched, so process
start-up is included, and stops when the last peer is done):

* ``shoal``: ``shoal get URL -o FILE --tracker http://10.77.0.2:6969 --upload-time T`` in every peer, T long
  enough that every peer serves until all are done. A peer is done when its output file exists with the
  full size (shoal renames into place only when the file is complete and verified). Run without ``-q`` so
  that each peer's closing summary (bytes from origin and from peers) lands in its log.
* ``curl``: ``curl -sS -o FILE URL`` in every peer, straight from the origin; done when curl exits 0.
* ``aria2``: a v1 .torrent (SHA-1 pieces, ``url-list`` = the origin URL as a BEP 19 web seed, ``announce``
  = the lab's BitTorrent tracker), then ``aria2c`` in every peer with DHT and LPD off, PEX on, seeding on
  for longer than the run; done when its ``--on-bt-download-complete`` hook has touched ``FILE.done``
  (called when the download is complete, before seeding).
* ``single`` (not in the default list): ONE peer with curl; the practical lower bound of the capped link
  (TCP/IP headers make it a few percent slower than the nominal ``size / rate``).

After every run all peer processes (and the run's tracker) are stopped, origin counters are read, and every
peer's file is compared with the origin's by SHA-256. Figures printed per run: time until the last peer was
done, that time over the nominal lower bound ``size * 8 / (origin_mbit * 1e6)``, first and median peer
times, when the origin link started and stopped sending (so start-up and the swarm's tail show), origin
bytes over the file size (link TX counter and HTTP payload counter), files verified, the largest peak RSS
of a peer still running at the end (shoal and aria2; curl exits), and the CPU seconds used while the peers
ran by the peers, the tracker, the origin and everything else on the machine (a check that nothing else
competed for the two cores). With ``--repeat`` a median per method follows; then the DESIGN.md reference.

Run it (as root, from the repository; the defaults are the DESIGN.md lab)::

    python3 benchmarks/swarm_lab.py                                  # 8 peers, 256 MiB, 200 Mbit/s
    python3 benchmarks/swarm_lab.py --peers 4 --size 32M --methods shoal,aria2
    python3 benchmarks/swarm_lab.py --methods single,shoal,curl,aria2 --repeat 2 --json > lab.json

Files live in a fresh directory under ``--workdir`` (default /tmp, a regular disk directory; not a tmpfs).
It is removed at the end unless ``--keep`` is given or a run failed, in which case the logs (one per peer
and service; ``-v``/``-vv`` are passed on to shoal) stay and their path is printed. Namespaces named
``swl-*`` left by a killed earlier run are removed before the lab is built; none are left after it ends,
also on an error or Ctrl-C. To measure a pinned commit while src/ changes, run with ``PYTHONPATH=DIR/src``
where DIR holds ``git archive COMMIT src``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import WIRE_PAYLOAD, RunResult, lab_context, measured_software, run_logged, write_payload
from netlab import PREFIX, Lab, Session, check_tools, human, log, parse_size
from shoal.testing.processes import compile_bytecode

ALL_METHODS = ("single", "shoal", "curl", "aria2")

# DESIGN.md, "Reference figures from this kind of machine" (origin capped at 200 Mbit/s, 8 peers, 256 MiB).
REFERENCE = {
    "setup": {"peers": 8, "size": 256 << 20, "origin_mbit": 200},
    "rows": [
        {"how": "lower bound: one file over the capped link", "seconds": "10.7", "origin_ratio": "1.00"},
        {"how": "each peer straight from the origin (curl)", "seconds": "89.9", "origin_ratio": "8.02"},
        {"how": "aria2c BitTorrent swarm, origin as web seed", "seconds": "17.9-18.7", "origin_ratio": "1.59-1.66"},
    ],
    "shoal_target": {"time_over_bound": 1.15, "origin_ratio": 1.02},
}


# -- report ----------------------------------------------------------------------------------------------


def format_table(results: list[RunResult], args: argparse.Namespace, setup: dict[str, object]) -> str:
    lower_bound = float(setup["lower_bound_s"])  # type: ignore[arg-type]
    lines = [
        f"swarm lab: {args.peers} peers, {human(args.size)} file, origin link capped at {args.origin_mbit:g} Mbit/s "
        f"(tbf); lower bound size/rate = {lower_bound:.2f} s "
        f"({lower_bound / WIRE_PAYLOAD:.2f} s of frames on the wire)",
        f"shoal {setup['shoal']}; {setup['aria2']}; {setup['curl']}; load average at start {setup['loadavg']}",
        "",
        f"{'method':<7} {'run':>3} {'peers':>5} {'last done':>10} {'x bound':>8} {'first':>7} {'median':>7} "
        f"{'origin sent':>12} {'slack':>5} "
        f"{'origin/size':>11} {'http/size':>9} {'sha256 ok':>9} {'peak RSS':>9} "
        f"{'CPU s: peers':>12} {'tracker':>7} {'origin':>6} {'other':>6} {'irq':>5} {'idle':>5} {'steal':>5}",
    ]
    for r in results:
        finished = sorted(d for d in r.done_s if d is not None)
        last = f"{r.last_done_s:.2f} s" if r.last_done_s is not None else f"{r.completed}/{r.peers} done"
        over = f"{r.over_bound:.2f}" if r.over_bound is not None else "-"
        first = f"{finished[0]:.2f}" if finished else "-"
        median = f"{statistics.median(finished):.2f}" if finished else "-"
        rss = f"{r.max_peer_rss / 2**20:.0f} MiB" if r.max_peer_rss else "-"
        sending = (
            f"{r.origin_first_s:.1f}-{r.origin_last_s:.1f}"
            if r.origin_first_s is not None and r.origin_last_s is not None
            else "-"
        )
        lines.append(
            f"{r.method:<7} {r.run:>3} {r.peers:>5} {last:>10} {over:>8} {first:>7} {median:>7} {sending:>12} "
            f"{'-' if r.origin_slack_s is None else f'{r.origin_slack_s:.2f}':>5} "
            f"{r.origin_wire_bytes / r.size:>11.3f} {r.origin_http_bytes / r.size:>9.3f} "
            f"{f'{r.verified}/{r.peers}':>9} {rss:>9} {r.cpu_s_peers:>12.1f} {r.cpu_s_tracker:>7.1f} "
            f"{r.cpu_s_origin:>6.1f} {r.cpu_s_outside:>6.1f} {r.cpu_s_irq:>5.1f} {r.cpu_s_idle:>5.1f} "
            f"{r.cpu_s_steal:>5.1f}"
        )
    if args.repeat > 1:
        lines.append("")
        for method in args.methods:
            runs = [r for r in results if r.method == method]
            times = [r.last_done_s for r in runs if r.last_done_s is not None]
            ratios = [r.origin_wire_bytes / r.size for r in runs]
            if times:
                lines.append(
                    f"{method:<7} median of {len(times)}/{len(runs)} complete runs: last done "
                    f"{statistics.median(times):.2f} s ({statistics.median(times) / lower_bound:.2f}x bound, "
                    f"range {min(times):.2f}-{max(times):.2f} s), origin/size {statistics.median(ratios):.3f}"
                )
            else:
                lines.append(f"{method:<7} no complete run out of {len(runs)}")
    lines += [
        "",
        "last done: from launching the first peer to the last peer done; x bound: that / lower bound; first,",
        "median: peer done times; origin sent: from when the origin link had sent its first 64 KiB to when it",
        "last sent (seconds after launch; before it is start-up, after it the swarm's tail); slack: that span",
        "less the time its bytes need at the cap with TCP/IP/Ethernet framing (seconds the link sat idle);",
        "origin/size: TX bytes of the origin's capped veth (TCP/IP headers included) / file size;",
        "http/size: the origin's own body-byte counter (GET /_stats) / file size (it misses aborted responses);",
        "peak RSS: largest VmHWM of a peer still running at the end; CPU s: CPU seconds used while the peers ran",
        "(2 cores give 2 per second) by the peers, the run's tracker, the origin, and everything else on the",
        "machine, kernel threads included (other: more than a few means the run shared the cores); irq: interrupt",
        "and softirq time (the veths' packets, charged to no process); idle: cores with nothing to run (near 0:",
        "the run was bound by the CPU); steal: time the host took from this VM's cores (the run stretches by it).",
    ]
    for r in results:
        if r.peer_reports:
            origin = sum(p["from_origin"] for p in r.peer_reports) / r.size
            peers = sum(p["from_peers"] for p in r.peer_reports) / r.size
            per_peer = ", ".join(f"{p['from_origin'] / 2**20:.0f}" for p in r.peer_reports)
            lines.append(
                f"shoal run {r.run}: the peers' own counts: origin {origin:.3f}x, peers {peers:.3f}x the file; "
                f"MiB from origin per peer: {per_peer}"
            )
    for r in results:
        for failure in r.failures:
            lines.append(f"FAILED {r.method} run {r.run}: {failure}")
    setup = REFERENCE["setup"]
    same = (args.peers, args.size, args.origin_mbit) == (setup["peers"], setup["size"], setup["origin_mbit"])
    lines += [
        "",
        "reference figures (DESIGN.md; origin capped at 200 Mbit/s, 8 peers, 256 MiB)"
        + ("" if same else " -- NOT this run's setup, compare with care")
        + ":",
    ]
    for row in REFERENCE["rows"]:
        lines.append(f"  {row['how']:<46} {row['seconds']:>10} s   origin bytes / size {row['origin_ratio']}")
    target = REFERENCE["shoal_target"]
    lines.append(
        f"  shoal target: last done <= {target['time_over_bound']}x the lower bound "
        f"({target['time_over_bound'] * lower_bound:.1f} s here), origin bytes <= {target['origin_ratio']}x"
    )
    for r in results:
        if r.method == "shoal":
            time_ok = r.over_bound is not None and r.over_bound <= target["time_over_bound"]
            bytes_ok = r.origin_wire_bytes / r.size <= target["origin_ratio"]
            lines.append(
                f"  shoal run {r.run}: time target {'met' if time_ok else 'MISSED'}, "
                f"origin-bytes target {'met' if bytes_ok else 'MISSED'} (by the link counter)"
            )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Swarm lab: N peers in network namespaces fetch one file from a capped origin "
        "(shoal vs curl vs aria2c). Run as root.",
    )
    parser.add_argument("--peers", type=int, default=8, help="number of peer namespaces (default 8)")
    parser.add_argument("--size", type=parse_size, default=256 << 20, help="file size, e.g. 256M, 1G (default 256M)")
    parser.add_argument("--origin-mbit", type=float, default=200.0, help="origin uplink cap in Mbit/s (default 200)")
    parser.add_argument(
        "--methods",
        default="shoal,curl,aria2",
        help=f"comma-separated, in run order, from {','.join(ALL_METHODS)} (default shoal,curl,aria2)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the list of methods this many times")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before a run is declared failed (default 12x the lower bound + 30)",
    )
    parser.add_argument(
        "--bt-piece-kib",
        type=int,
        default=None,
        help="torrent piece length in KiB (default: power of two from 256 KiB, at most 2048 pieces)",
    )
    parser.add_argument("--subnet", default="10.77.0", help="first three octets of the lab's /24 (default 10.77.0)")
    parser.add_argument("--workdir", default="/tmp", help="parent of the run's directory (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (files and logs)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="run shoal with -v (-vv with -vv) and aria2c with an info log",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        parser.error(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL_METHODS)}")
    args.methods = methods
    if not 1 <= args.peers <= 200:
        parser.error("--peers must be between 1 and 200")
    if args.size <= 0 or args.origin_mbit <= 0 or args.repeat < 1:
        parser.error("--size, --origin-mbit and --repeat must be positive")
    if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", args.subnet):
        parser.error("--subnet takes three octets, e.g. 10.77.0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools("swarm_lab.py", args.methods)
    lower_bound = args.size * 8 / (args.origin_mbit * 1e6)
    timeout = args.timeout or 12 * lower_bound + 30
    compile_bytecode()  # the peers start as an installed shoal does, from bytecode
    with Session[RunResult](args.workdir, "swarm-lab-", PREFIX, args.keep) as session:
        setup: dict[str, object] = {
            "peers": args.peers,
            "size": args.size,
            "origin_mbit": args.origin_mbit,
            "methods": args.methods,
            "repeat": args.repeat,
            "workdir": str(session.workdir),
            "lower_bound_s": lower_bound,
            **measured_software(),
        }
        payload, sha256 = write_payload(session.workdir, args.size)
        with Lab(args.peers, args.subnet, args.origin_mbit) as lab:
            log(f"lab up: {len(lab.namespaces)} namespaces, origin {lab.origin.ip} at {args.origin_mbit:g} Mbit/s")
            ctx = lab_context(lab, session.workdir, payload, sha256, args, timeout, "origin.log")
            for run in range(1, args.repeat + 1):
                for method in args.methods:
                    session.results.append(run_logged(ctx, method, run))
    results = session.results
    if args.json:
        print(json.dumps({"setup": setup, "runs": [r.to_json() for r in results], "reference": REFERENCE}, indent=2))
    elif results:
        print(format_table(results, args, setup))
    return session.exit_code


if __name__ == "__main__":
    sys.exit(main())
