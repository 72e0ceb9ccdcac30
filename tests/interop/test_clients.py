"""Real BitTorrent clients against ``shoal seed``: aria2c, ctorrent and libtorrent, byte for byte.

Each client gets the seeder's ``/serve`` torrent and nothing else; what it can use differs:

- aria2c: the tracker and the BEP 19 web seed (``url-list``);
- ctorrent: only the tracker and the seeder's BitTorrent wire protocol (it has no web seed support);
- libtorrent: the tracker, which must hand two clients to each other so they trade pieces.

Loopback quirks (DESIGN.md): ctorrent drops peers with its own IP, so it is told it is 127.0.0.2; aria2c
has DHT on unless told otherwise; libtorrent needs ``allow_multiple_connections_per_ip``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import libtorrent as lt
import pytest
from fastbencode import bdecode, bencode

from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.seeder.wire import WireConfig
from shoal.testing.libtorrent_client import SESSION_SETTINGS, add_torrent
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, run_aria2c, shoal_argv, start_seeder, start_tracker
from shoal.testing.sockets import listening_ports
from shoal.testing.wire_probe import bound_opener, handshake_answered

pytestmark = pytest.mark.skipif(
    shutil.which("aria2c") is None or shutil.which("ctorrent") is None,
    reason="scripts/test installs aria2 and ctorrent",
)


def fetch(url: str, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


def wait_published(seeder: Service, rel: str, headers: dict[str, str] | None = None) -> None:
    wait_until(
        lambda: any(f["path"] == rel for f in json.loads(fetch(f"{seeder.url}/v1/files", headers))["files"]),
        f"{rel} to be published",
    )


def scrape(tracker: str, info_hash: bytes) -> dict[bytes, int]:
    from urllib.parse import quote_from_bytes

    reply = lt.bdecode(fetch(f"{tracker}/scrape?info_hash={quote_from_bytes(info_hash)}"))
    return reply[b"files"].get(info_hash, {})  # type: ignore[no-any-return]


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, bytes]:
    watched = tmp_path / "pub"
    watched.mkdir()
    data = os.urandom(5 * 1024 * 1024 + 12345)  # a short last piece
    (watched / "payload.bin").write_bytes(data)
    return watched, data


@pytest.fixture
def seeder(tmp_path: Path, payload: tuple[Path, bytes]) -> Iterator[Service]:
    service = start_seeder(payload[0], state_dir=tmp_path / "state")
    try:
        wait_published(service, "pub/payload.bin")
        yield service
    finally:
        service.stop()


def test_aria2c_downloads_from_the_served_torrent(seeder: Service, payload: tuple[Path, bytes], tmp_path: Path) -> None:
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(fetch(f"{seeder.url}/serve?pub/payload.bin"))
    out = tmp_path / "aria2"
    result = run_aria2c(str(torrent), out, "--check-integrity=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "payload.bin").read_bytes() == payload[1]


def test_ctorrent_downloads_over_the_wire_protocol_alone(
    seeder: Service, payload: tuple[Path, bytes], tmp_path: Path
) -> None:
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(fetch(f"{seeder.url}/serve?pub/payload.bin"))
    out = tmp_path / "ctorrent.bin"
    log = tmp_path / "ctorrent.log"
    # ctorrent says "Download complete." once every piece passed its SHA-1 check and then waits out the
    # tracker's min interval to send its `stopped` announce; the test stops it after the first part.
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            # No -p: ctorrent binds the first free port from 2706 down to 2106 (below the kernel's ephemeral
            # ports), so two runs at once never race for one.
            ["ctorrent", "-e", "0", "-I", "127.0.0.2", "-s", str(out), str(torrent)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:

            def complete() -> bool:
                assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
                return "Download complete." in log.read_text(errors="replace")

            wait_until(complete, "ctorrent to complete", timeout=90, interval=0.1)
        finally:
            proc.terminate()
            proc.wait(10)
    assert out.read_bytes() == payload[1]


def test_ctorrent_gets_the_file_while_idle_handshakes_hold_every_connection(
    seeder: Service, payload: tuple[Path, bytes], tmp_path: Path
) -> None:
    """The info-hash is public: 200 strangers (the seeder's connection limit) handshake and then say nothing.
    The idlest are closed as connections run short, and ctorrent, which can only use the wire, gets the file."""
    [listed] = json.loads(fetch(f"{seeder.url}/v1/files"))["files"]
    http_port = int(seeder.url.rsplit(":", 1)[1])
    [bt_port] = listening_ports(seeder.proc.pid) - {http_port}
    handshake = bytes([19]) + b"BitTorrent protocol" + bytes(8) + bytes.fromhex(listed["info_hash"])
    idle = []
    try:
        for n in range(200):
            sock = socket.create_connection(("127.0.0.1", bt_port), timeout=30)
            idle.append(sock)
            sock.sendall(handshake + f"-ID0000-{n:012d}".encode())
            assert len(sock.recv(68, socket.MSG_WAITALL)) == 68  # accepted: our handshake came back
        started = time.monotonic()
        # A precondition, not an assertion: the strangers have been idle as long as the seeder tolerates
        # when connections are short (WireConfig.crowded_idle).
        wait_until(lambda: time.monotonic() - started > WireConfig.crowded_idle, "the strangers to be idle")
        test_ctorrent_downloads_over_the_wire_protocol_alone(seeder, payload, tmp_path)
        closed = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                while sock.recv(1 << 16):
                    continue  # our bitfield, and what came after it
            except BlockingIOError:
                continue  # still open
            except ConnectionResetError:
                pass  # closed with an abort
            closed += 1
        assert closed > 0
    finally:
        for sock in idle:
            sock.close()


def _lt_session() -> lt.session:
    return lt.session(SESSION_SETTINGS)


def _add(session: lt.session, torrent: bytes, save: Path) -> lt.torrent_handle:
    handle = add_torrent(session, lt.torrent_info(lt.bdecode(torrent)), str(save))
    # The test is about the tracker and the wire protocol: no web seed, so pieces come from peers only.
    for url in list(handle.url_seeds()):
        handle.remove_url_seed(url)
    return handle


def _wait_complete(session: lt.session, handle: lt.torrent_handle, timeout: float = 90.0) -> None:
    """Seeding (every piece passed libtorrent's hash check) and every write flushed to the file."""
    wait_until(lambda: handle.status().is_seeding, "libtorrent to seed", timeout=timeout)
    handle.flush_cache()
    wait_until(
        lambda: any(isinstance(alert, lt.cache_flushed_alert) for alert in session.pop_alerts()),
        "libtorrent to flush its cache",
    )


def test_two_libtorrent_clients_find_each_other_through_the_tracker(
    tmp_path: Path, payload: tuple[Path, bytes]
) -> None:
    """A fetches everything from the seeder; the seeder goes away; B can then only be served by A, which
    the tracker must have handed to it."""
    tracker = start_tracker(f"sqlite:///{tmp_path / 'tracker.db'}")
    seeder = start_seeder(payload[0], state_dir=tmp_path / "state", extra=("--tracker", tracker.url))
    sessions: list[lt.session] = []
    try:
        wait_published(seeder, "pub/payload.bin")
        torrent = fetch(f"{seeder.url}/serve?pub/payload.bin")
        info_hash = lt.torrent_info(lt.bdecode(torrent)).info_hashes().v1.to_bytes()
        assert lt.bdecode(torrent)[b"announce"] == f"{tracker.url}/announce".encode()

        first = _lt_session()
        sessions.append(first)
        a = _add(first, torrent, tmp_path / "a")
        _wait_complete(first, a)
        a.force_reannounce()  # tell the tracker A is complete now, not at its next interval
        wait_until(lambda: scrape(tracker.url, info_hash).get(b"complete", 0) >= 2, "the seeder and A complete")
        seeder.stop()

        second = _lt_session()
        sessions.append(second)
        b = _add(second, torrent, tmp_path / "b")
        _wait_complete(second, b)
        assert b.status().total_payload_download >= len(payload[1])
        assert a.status().total_payload_upload >= len(payload[1])
        for name in ("a", "b"):
            assert (tmp_path / name / "payload.bin").read_bytes() == payload[1]
    finally:
        for session in sessions:
            session.pause()
        seeder.stop()
        tracker.stop()


FLEET_TOKEN = b"the fleet's BitTorrent token, 0123456789"


def test_a_fleets_tracker_is_private_clients_announce_with_their_passkey(
    tmp_path: Path, payload: tuple[Path, bytes]
) -> None:
    """With a fleet token the seeder's torrents are private (BEP 27) and announce with a passkey: libtorrent
    given the torrent of ``/serve/PASSKEY`` gets the file from the seeder's wire (no web seed: the tracker
    must hand the seeder out), aria2c too from that URL alone; the same torrent without the passkey is
    refused at the tracker with a failure reason, and a stranger gets no torrent at all."""
    token_file = tmp_path / "fleet.token"
    token_file.write_bytes(FLEET_TOKEN)
    token_file.chmod(0o600)
    seeder = start_seeder(payload[0], state_dir=tmp_path / "state", extra=("--fleet-token-file", str(token_file)))
    sessions: list[lt.session] = []
    try:
        key = FleetKey.from_token(FLEET_TOKEN)
        wait_published(seeder, "pub/payload.bin", {FLEET_HEADER: key.credential(time.time())})
        made = subprocess.run(
            shoal_argv("passkey", "client-1", "--fleet-token-file", str(token_file)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        passkey = made.stdout.strip()
        assert passkey == key.passkey("client-1")

        # A stranger gets no torrent: no passkey, or one another fleet made.
        for url in (f"{seeder.url}/serve?pub/payload.bin", f"{seeder.url}/serve/client-1.forged?pub/payload.bin"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                fetch(url)
            assert refused.value.code == 403
            refused.value.close()
        torrent = fetch(f"{seeder.url}/serve/{passkey}?pub/payload.bin")
        meta = bdecode(torrent)
        assert meta[b"info"][b"private"] == 1
        assert meta[b"announce"] == f"{seeder.url}/announce/{passkey}".encode()
        # The fleet's own peers ask with their credential, and get a passkey made for their address.
        own = bdecode(fetch(f"{seeder.url}/serve?pub/payload.bin", {FLEET_HEADER: key.credential(time.time())}))
        assert own[b"announce"] == f"{seeder.url}/announce/{key.passkey('127.0.0.1')}".encode()

        with_key = _lt_session()
        sessions.append(with_key)
        handle = _add(with_key, torrent, tmp_path / "with")
        assert handle.torrent_file().priv()
        _wait_complete(with_key, handle)
        assert (tmp_path / "with" / "payload.bin").read_bytes() == payload[1]

        # The torrent without its passkey: same info-hash, refused at the tracker with its failure reason.
        bare = bencode({**meta, b"announce": f"{seeder.url}/announce".encode()})
        without = lt.session({**SESSION_SETTINGS, "alert_mask": int(lt.alert.category_t.tracker_notification)})
        sessions.append(without)
        _add(without, bare, tmp_path / "without")
        errors: list[str] = []

        def refused_announce() -> bool:
            errors.extend(a.failure_reason() for a in without.pop_alerts() if isinstance(a, lt.tracker_error_alert))
            return bool(errors)

        wait_until(refused_announce, "the tracker to refuse the announce without a passkey")
        assert "private" in errors[0] and "passkey" in errors[0], errors

        out = tmp_path / "aria2"
        result = run_aria2c(f"{seeder.url}/serve/{passkey}?pub/payload.bin", out, "--follow-torrent=mem")
        assert result.returncode == 0, result.stdout + result.stderr
        assert (out / "payload.bin").read_bytes() == payload[1]
    finally:
        for session in sessions:
            session.pause()
        seeder.stop()


def _aria2c_web_seed_only(torrent: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """aria2c on ``torrent`` with its trackers excluded, so its one source is the BEP 19 web seed."""
    return run_aria2c(str(torrent), out, "--bt-exclude-tracker=*", "--check-integrity=true", *extra, log_level="notice")


def test_a_private_torrents_web_seed_takes_its_passkey_and_refuses_a_client_without(
    tmp_path: Path, payload: tuple[Path, bytes]
) -> None:
    """With a fleet token the seeder's files need the fleet's passkey (or credential): a private torrent's
    ``url-list`` is ``/files/PASSKEY/REL``, which aria2c follows with no tracker at all; the same torrent with
    the bare ``/files/REL`` web seed gets aria2c nothing."""
    token_file = tmp_path / "fleet.token"
    token_file.write_bytes(FLEET_TOKEN)
    token_file.chmod(0o600)
    seeder = start_seeder(payload[0], state_dir=tmp_path / "state", extra=("--fleet-token-file", str(token_file)))
    try:
        key = FleetKey.from_token(FLEET_TOKEN)
        wait_published(seeder, "pub/payload.bin", {FLEET_HEADER: key.credential(time.time())})
        passkey = key.passkey("client-1")
        meta = bdecode(fetch(f"{seeder.url}/serve/{passkey}?pub/payload.bin"))
        assert meta[b"url-list"] == [f"{seeder.url}/files/{passkey}/pub/payload.bin".encode()]
        with_key = tmp_path / "with.torrent"
        with_key.write_bytes(bencode(meta))
        result = _aria2c_web_seed_only(with_key, tmp_path / "with")
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "with" / "payload.bin").read_bytes() == payload[1]

        bare = tmp_path / "bare.torrent"
        bare.write_bytes(bencode({**meta, b"url-list": [f"{seeder.url}/files/pub/payload.bin".encode()]}))
        # Its only source refuses it; --bt-stop-timeout ends the client that is left waiting for peers.
        result = _aria2c_web_seed_only(bare, tmp_path / "bare", "--bt-stop-timeout=5")
        assert result.returncode != 0, result.stdout
        assert "status=403" in result.stdout, result.stdout
        left = tmp_path / "bare" / "payload.bin"
        assert not left.exists() or payload[1][:16384] not in left.read_bytes()
    finally:
        seeder.stop()


def _wire_refused(seeder: Service) -> float:
    """The seeder's count of handshakes refused for want of the tracker's admission (its metrics)."""
    text = fetch(f"{seeder.url}/metrics").decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("shoal_seeder_wire_refused"))


def test_a_private_torrents_wire_seeder_serves_only_hosts_the_tracker_admitted(
    tmp_path: Path, payload: tuple[Path, bytes]
) -> None:
    """The info-hash of a private torrent is no secret, but the wire seeder answers a handshake for it only
    from a host that announced the swarm with the fleet's passkey (core.bt_admission): libtorrent with its
    passkey downloads; libtorrent on another address, without one, is refused at the handshake, as is any
    host that never announced, while one that announced with a passkey is answered."""
    token_file = tmp_path / "fleet.token"
    token_file.write_bytes(FLEET_TOKEN)
    token_file.chmod(0o600)
    seeder = start_seeder(payload[0], state_dir=tmp_path / "state", extra=("--fleet-token-file", str(token_file)))
    sessions: list[lt.session] = []
    try:
        key = FleetKey.from_token(FLEET_TOKEN)
        wait_published(seeder, "pub/payload.bin", {FLEET_HEADER: key.credential(time.time())})
        passkey = key.passkey("client-1")
        torrent = fetch(f"{seeder.url}/serve/{passkey}?pub/payload.bin")
        info_hash = lt.torrent_info(lt.bdecode(torrent)).info_hashes().v1.to_bytes()
        http_port = int(seeder.url.rsplit(":", 1)[1])
        [bt_port] = listening_ports(seeder.proc.pid) - {http_port}

        # A host that never announced: closed before a byte, and counted.
        assert not handshake_answered("127.0.0.9", bt_port, info_hash)
        assert _wire_refused(seeder) == 1
        # A host that announced the swarm with the fleet's passkey is answered.
        query = f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-ID0000-000000000008&port=6888&left=1"
        with bound_opener("127.0.0.8").open(f"{seeder.url}/announce/{passkey}?{query}", timeout=30) as reply:
            assert b"failure reason" not in reply.read()
        assert handshake_answered("127.0.0.8", bt_port, info_hash)

        # libtorrent with the passkey's torrent announces from 127.0.0.1, is admitted and downloads.
        with_key = _lt_session()
        sessions.append(with_key)
        handle = _add(with_key, torrent, tmp_path / "with")
        _wait_complete(with_key, handle)
        assert (tmp_path / "with" / "payload.bin").read_bytes() == payload[1]

        # libtorrent on 127.0.0.10 with the torrent stripped of its passkey: the tracker refuses its announce,
        # and the seeder, given to it directly, refuses its handshake.
        bare = bencode({**bdecode(torrent), b"announce": f"{seeder.url}/announce".encode()})
        stranger = lt.session(
            {**SESSION_SETTINGS, "listen_interfaces": "127.0.0.10:0", "outgoing_interfaces": "127.0.0.10"}
        )
        sessions.append(stranger)
        refused = _add(stranger, bare, tmp_path / "stranger")
        refused.connect_peer(("127.0.0.1", bt_port))
        wait_until(lambda: _wire_refused(seeder) >= 2, "the seeder to refuse the stranger's handshake")
        assert refused.status().total_payload_download == 0
    finally:
        for session in sessions:
            session.pause()
        seeder.stop()
