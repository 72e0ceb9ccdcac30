#!/usr/bin/env python3
"""BitTorrent wire seeding throughput: Shoal's WireSeeder to one libtorrent client on loopback.

1. A random file of ``--size`` bytes (default 1 GiB) is written under ``--workdir`` (a disk directory, not
   a tmpfs), and libtorrent makes its v1 torrent (``--piece-size``; 0 lets libtorrent choose, 512 KiB for
   1 GiB), so the measurement does not depend on Shoal's metainfo encoder.
2. The seeder runs in a process of its own (this script with ``--serve``): a ``WireSeeder`` with its
   default config on 127.0.0.1, serving that one file. The page cache is not dropped: after the first run
   the file is read from memory, which is what a seeder of a popular file sees.
3. Per repetition, a fresh libtorrent session in this process (plain TCP, no DHT, uTP or encryption) adds
   the torrent, connects to the seeder, and downloads into a fresh directory; ``sync`` runs before each.

Printed per repetition: the transfer time (from the first payload byte libtorrent reports to the moment
it has every piece verified; status polled every 10 ms) and the time from ``connect_peer`` (libtorrent
connects on its next half-second tick), the rate in MB/s (1e6) and MiB/s, the CPU seconds of the seeder
process (user + system, its reader threads included) and of the client process during the transfer, and
whether the copy's SHA-256 matches. Target: at least 150 MB/s.

Run it (from the repository; no root needed)::

    python3 benchmarks/bt_wire.py                        # 1 GiB
    python3 benchmarks/bt_wire.py --size 256M --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt

from shoal.core import units
from shoal.core.errors import ShoalError
from shoal.seeder.wire import WireSeeder, WireTorrent
from shoal.testing.cpu import own_cpu_seconds, process_cpu_seconds
from shoal.testing.files import sha256_file, write_random_file
from shoal.testing.libtorrent_client import SESSION_SETTINGS

TARGET = 150e6  # bytes per second
FILE_NAME = "payload.bin"


def log(message: str) -> None:
    print(f"[bt-wire {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """argparse type for sizes like ``256M``: shoal's own parser (1024-based units)."""
    try:
        return units.parse_size(text)
    except ShoalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- the seeder process --------------------------------------------------------------------------------


class OneTorrent:
    def __init__(self, torrent: WireTorrent) -> None:
        self.torrent = torrent

    def wire_torrent(self, info_hash: bytes) -> WireTorrent | None:
        return self.torrent if info_hash == self.torrent.info_hash else None


async def serve(torrent: WireTorrent) -> None:
    seeder = WireSeeder(OneTorrent(torrent))
    port = await seeder.start("127.0.0.1", 0)
    print(f"bt wire seeder listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await seeder.stop()


# -- the measurement -----------------------------------------------------------------------------------


@dataclass
class Run:
    run: int
    transfer_s: float
    connect_s: float
    seeder_cpu_s: float
    client_cpu_s: float
    ok: bool


def download(info: lt.torrent_info, port: int, save: Path, seeder_pid: int, timeout: float) -> tuple[float, ...]:
    """One libtorrent download from the seeder: (transfer s, from-connect s, seeder CPU s, client CPU s)."""
    session = lt.session(SESSION_SETTINGS)
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(save)
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = session.add_torrent(params)
    seeder0, client0 = process_cpu_seconds(seeder_pid), own_cpu_seconds()
    connected = time.monotonic()
    handle.connect_peer(("127.0.0.1", port))
    first = None
    while not (status := handle.status()).is_seeding:
        now = time.monotonic()
        if first is None and status.total_wanted_done > 0:
            first = now
        if now - connected > timeout:
            raise RuntimeError(f"not complete within {timeout:.0f}s: {status.progress:.1%}")
        time.sleep(0.01)
    done = time.monotonic()
    seeder_cpu, client_cpu = process_cpu_seconds(seeder_pid) - seeder0, own_cpu_seconds() - client0
    handle.flush_cache()  # the last writes may still be queued; the SHA-256 check reads the file
    deadline = time.monotonic() + 60
    while not any(isinstance(a, lt.cache_flushed_alert) for a in session.pop_alerts()):
        if time.monotonic() > deadline:
            raise RuntimeError("libtorrent did not flush its cache")
        time.sleep(0.01)
    del session
    return done - (first or connected), done - connected, seeder_cpu, client_cpu


def run(args: argparse.Namespace, workdir: Path) -> list[Run]:
    source = workdir / "source"
    source.mkdir()
    payload = source / FILE_NAME
    log(f"writing {args.size / 2**20:.0f} MiB of random data to {payload}")
    sha256 = write_random_file(payload, args.size)
    creator = lt.create_torrent(lt.list_files(str(payload)), args.piece_size, lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(source))
    info = lt.torrent_info(lt.bencode(creator.generate()))
    info_hash = info.info_hashes().v1.to_bytes()
    log(f"torrent: {info.num_pieces()} pieces of {info.piece_length() >> 10} KiB, info-hash {info_hash.hex()}")

    seeder_log = workdir / "seeder.log"
    argv = [sys.executable, __file__, "--serve", str(payload), info_hash.hex(), str(info.piece_length())]
    with open(seeder_log, "wb") as out:
        seeder = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"listening on 127\.0\.0\.1:(\d+)", seeder_log.read_text())):
            if seeder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the seeder did not start:\n{seeder_log.read_text()}")
            time.sleep(0.05)
        port = int(match[1])
        log(f"seeder pid {seeder.pid} on port {port}")
        runs = []
        for rep in range(1, args.repeat + 1):
            save = workdir / f"client{rep}"
            save.mkdir()
            subprocess.run(["sync"], check=False)
            transfer, from_connect, seeder_cpu, client_cpu = download(info, port, save, seeder.pid, args.timeout)
            ok = sha256_file(save / FILE_NAME) == sha256
            shutil.rmtree(save)
            runs.append(Run(rep, transfer, from_connect, seeder_cpu, client_cpu, ok))
            log(f"run {rep}: {transfer:.2f} s, {args.size / transfer / 1e6:.0f} MB/s, sha256 {'ok' if ok else 'BAD'}")
        return runs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(seeder.pid, signal.SIGTERM)
        try:
            seeder.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(seeder.pid, signal.SIGKILL)
            seeder.wait()


def report(runs: list[Run], size: int) -> str:
    lines = [
        f"BitTorrent wire seeding on loopback: WireSeeder -> libtorrent {lt.__version__}, {size / 2**20:.0f} MiB",
        "",
        f"{'run':>3} {'transfer s':>10} {'MB/s':>7} {'MiB/s':>7} {'from connect s':>14} {'seeder CPU s':>12} "
        f"{'client CPU s':>12} {'sha256':>6}",
    ]
    for r in runs:
        lines.append(
            f"{r.run:>3} {r.transfer_s:>10.2f} {size / r.transfer_s / 1e6:>7.0f} {size / r.transfer_s / 2**20:>7.0f} "
            f"{r.connect_s:>14.2f} {r.seeder_cpu_s:>12.2f} {r.client_cpu_s:>12.2f} {'ok' if r.ok else 'BAD':>6}"
        )
    median = statistics.median(size / r.transfer_s for r in runs)
    verdict = "met" if median >= TARGET else "MISSED"
    lines += [
        "",
        "transfer s: first payload byte to every piece verified; from connect s: from connect_peer (libtorrent",
        "connects on its next half-second tick); CPU s: user + system during the transfer, of the seeder process",
        "(reader threads included) and of this process (the libtorrent client).",
        f"target >= {TARGET / 1e6:.0f} MB/s -> median {median / 1e6:.0f} MB/s {verdict}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WireSeeder to one libtorrent client on loopback: throughput.")
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="file size, e.g. 1G, 256M (default 1G)")
    parser.add_argument("--repeat", type=int, default=1, help="downloads to time (default 1)")
    parser.add_argument("--piece-size", type=parse_size, default=0, help="piece length (default: libtorrent's)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for one download")
    parser.add_argument("--workdir", default="/tmp", help="parent of the run's directory (default /tmp)")
    parser.add_argument("--serve", nargs=3, metavar=("FILE", "INFO_HASH", "PIECE_LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        path, info_hash, piece_length = Path(args.serve[0]), bytes.fromhex(args.serve[1]), int(args.serve[2])
        asyncio.run(serve(WireTorrent(info_hash, path, path.stat().st_size, piece_length)))
        return 0
    if args.size <= 0 or args.repeat < 1:
        parser.error("--size and --repeat must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bt-wire-", dir=args.workdir))
    try:
        runs = run(args, workdir)
    except (KeyboardInterrupt, RuntimeError) as exc:
        log(f"stopped: {exc or type(exc).__name__}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(runs, args.size))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
