"""Fleet credentials with real processes: a fleet token (request credentials and tickets, core.tickets), TLS and
mutual TLS with certificates from a test CA (trustme), and the warning of a service started without any.

The outsider of these tests reaches every port but holds no token (or a ticket for another task, or no
client certificate): the tracker answers it 401, the piece servers 403 (or the TLS handshake fails), and it
gets nothing of the file while the fleet's peers download it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import blake3
import pytest
import trustme
from fastbencode import bdecode

from shoal.core.ids import task_id_for_url
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.ownership import TrackerMember
from shoal.core.ownership import owner as owner_of
from shoal.core.ranges import range_header
from shoal.core.tickets import FLEET_HEADER, TICKET_HEADER, FleetKey
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_daemon, start_seeder, start_tracker, write_random
from shoal.testing.sockets import listening_ports
from shoal.testing.wire_probe import bound_opener, handshake_answered
from tests.integration.conftest import Origin, cache_cli, cluster_settled, run_get
from tests.integration.test_bt_tracker_http import announce_fields, compact_peers, encode_query
from tests.integration.test_swarm import parse_summary
from tests.store.conftest import SERVERS, _probe, drop_schema

TOKEN = b"the fleet's token: 0123456789abcdef"
SIZE = 3 << 20


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.token"
    path.write_bytes(TOKEN + b"\n")
    path.chmod(0o600)
    return path


def request(
    url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """One request; its status and body, whatever the status."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fleet_headers() -> dict[str, str]:
    return {FLEET_HEADER: FleetKey.from_token(TOKEN).credential(time.time())}


def cluster(t: Service, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """The cluster as tracker ``t`` sees it (``GET /v1/cluster``, with the fleet's credential)."""
    status, body = request(f"{t.url}/v1/cluster", headers=fleet_headers(), context=context)
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def members_once_live(trackers: list[Service], context: ssl.SSLContext | None = None) -> list[TrackerMember]:
    """Wait until each of ``trackers`` (sharing a database) sees them all live; the members, as the first sees
    them."""

    for t in trackers:
        wait_until(
            lambda t=t: cluster_settled(cluster(t, context), len(trackers)), f"{len(trackers)} live members", timeout=30
        )
    rows = cluster(trackers[0], context)["members"]
    return [TrackerMember(m["tracker_id"], m["url"], m["active_from"], m["expires"]) for m in rows]


def serving_peer(tracker: Service, task_id: str, context: ssl.SSLContext | None = None) -> tuple[int, int]:
    """The (port, generation) of the one peer the tracker knows for the task (asked with the fleet's token)."""
    status, body = request(f"{tracker.url}/v1/tasks/{task_id}", headers=fleet_headers(), context=context)
    assert status == 200, body
    summary = json.loads(body)
    assert len(summary["peers"]) == 1, summary
    return summary["peers"][0]["port"], summary["generation"]


def wait_serving(proc: subprocess.Popen[str]) -> None:
    """Wait for a `shoal get` to place its file and begin serving it (its line on stderr says so)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving it to peers" in line:
            return
    raise AssertionError(f"the first peer ended: {proc.wait()}")


def spawn_seeding_get(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        shoal_argv("get", *args, "--upload-time", "120"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    procs.append(proc)
    wait_serving(proc)
    return proc


def accepted(tracker: Service, token: bytes) -> bool:
    """Whether ``tracker`` takes a request credential of ``token`` (any answer but its 401)."""
    credential = {FLEET_HEADER: FleetKey.from_token(token).credential(time.time())}
    return request(f"{tracker.url}/v1/tasks/{'a' * 64}", headers=credential)[0] != 401


FleetTracker = Callable[..., Service]


@pytest.fixture
def fleet_tracker(tmp_path: Path, services: list[Service], token_file: Path) -> FleetTracker:
    """Start a tracker on SQLite that needs the fleet's credential, from ``tokens`` (default: the token file)."""

    def start(tokens: Path | None = None) -> Service:
        tracker = start_tracker(
            f"sqlite:///{tmp_path / 't.db'}", extra=("--fleet-token-file", str(tokens or token_file))
        )
        services.append(tracker)
        return tracker

    return start


@dataclass(frozen=True)
class Seeding:
    """A fleet's file on an origin, and a `shoal get` of it that serves it to peers for two minutes."""

    src: Origin
    url: str
    data: bytes
    tracker: Service
    get: subprocess.Popen[str]


@pytest.fixture
def seeding_get(
    tmp_path: Path,
    origin: Callable[..., Origin],
    make_file: Any,
    fleet_tracker: FleetTracker,
    procs: list[subprocess.Popen[str]],
    token_file: Path,
) -> Callable[..., Seeding]:
    """Put SIZE random bytes at ``name`` on an origin, start a fleet tracker (taking ``tracker_tokens``), and a
    seeding `shoal get` of the file into first.bin with the token file (and ``extra`` arguments)."""

    def seed(name: str, *extra: str, tracker_tokens: Path | None = None) -> Seeding:
        src = origin()
        data = make_file(src.root / name, SIZE)
        url = src.url(name)
        tracker = fleet_tracker(tracker_tokens)
        argv = ("-o", str(tmp_path / "first.bin"), "--tracker", tracker.url, "--fleet-token-file", str(token_file))
        return Seeding(src, url, data, tracker, spawn_seeding_get(procs, url, *argv, *extra))

    return seed


def test_the_token_keeps_an_outsider_out_while_the_fleet_downloads(
    tmp_path: Path, seeding_get: Callable[..., Seeding], token_file: Path
) -> None:
    seeding = seeding_get("secret.bin")
    src, url, data, tracker = seeding.src, seeding.url, seeding.data, seeding.tracker
    token = ("--fleet-token-file", str(token_file))
    task_id = task_id_for_url(url)

    # The outsider cannot announce, nor learn the task's peers, without the fleet's credential.
    announce = json.dumps({"peer_id": "mallory", "url": url, "port": 9}).encode()
    status, body = request(f"{tracker.url}/v1/tasks/{task_id}/announce", body=announce)
    assert status == 401 and json.loads(body)["credential"] == "fleet", body
    assert "needs a fleet credential" in json.loads(body)["error"]
    stranger = FleetKey.from_token(b"not the fleet's token, long enough")
    stale = {FLEET_HEADER: stranger.credential(time.time())}
    assert request(f"{tracker.url}/v1/tasks/{task_id}", headers=stale)[0] == 401
    assert request(f"{tracker.url}/v1/health")[0] == 200  # monitoring stays open

    # Knowing the first peer's port (scanned, say), it asks for the file and its have stream: 403, no bytes.
    port, generation = serving_peer(tracker, task_id)
    manifest = Manifest.for_identity(OriginIdentity(SIZE))
    whole = {"Range": range_header(*manifest.span(0, manifest.piece_count))}
    data_url = f"http://127.0.0.1:{port}/v1/tasks/{task_id}/data?gen={generation}"
    haves_url = f"http://127.0.0.1:{port}/v1/tasks/{task_id}/haves?gen={generation}"
    key = FleetKey.from_token(TOKEN)
    other_task = key.ticket("c" * 64, "mallory", int(time.time()) + 60)  # admitted elsewhere
    expired = key.ticket(task_id, "mallory", int(time.time()) - 3600)
    forged = stranger.ticket(task_id, "mallory", int(time.time()) + 60)
    for ticket in (None, other_task, expired, forged, "garbage"):
        headers = {**whole, **({TICKET_HEADER: ticket} if ticket else {})}
        status, body = request(data_url, headers=headers)
        assert status == 403 and data[:4096] not in body, (ticket, status)
        status, body = request(haves_url, headers={TICKET_HEADER: ticket} if ticket else {})
        assert status == 403 and b"bitfield" not in body, (ticket, status)
    # A ticket the tracker's key made for this task opens it (so the refusals above were the tickets').
    admitted = {**whole, TICKET_HEADER: key.ticket(task_id, "peer", int(time.time()) + 60)}
    assert request(data_url, headers=admitted) == (206, data)

    # A peer of the fleet downloads from the first one; one without the token is refused by the tracker.
    second = run_get(url, "-o", str(tmp_path / "second.bin"), "--tracker", tracker.url, "--upload-time", "0", *token)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "second.bin").read_bytes() == data
    assert parse_summary(second.stderr)[1] >= SIZE  # every byte from the first peer
    outsider = run_get(url, "-o", str(tmp_path / "outsider.bin"), "--tracker", tracker.url, "--upload-time", "0")
    assert outsider.returncode == 3, outsider.stderr
    assert "refused the fleet credential: this tracker needs a fleet credential" in outsider.stderr
    assert not (tmp_path / "outsider.bin").exists()
    assert src.bytes_sent() <= SIZE * 1.05


def test_a_swarm_with_the_token_shares_the_file(
    tmp_path: Path, origin: Any, make_file: Any, fleet_tracker: FleetTracker, token_file: Path
) -> None:
    src = origin("--rate", "4M")
    data = make_file(src.root / "release.bin", SIZE)
    tracker = fleet_tracker()
    env_token = {**os.environ, "SHOAL_FLEET_TOKEN_FILE": str(token_file)}  # the environment variable works too
    peers = [
        subprocess.Popen(
            shoal_argv("get", src.url("release.bin"), "-o", str(tmp_path / f"p{i}.bin"), "--tracker", tracker.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_token,
        )
        for i in range(3)
    ]
    from_peers = 0.0
    try:
        for proc in peers:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert "no fleet credential" not in err
            from_peers += parse_summary(err)[1]
    finally:
        for proc in peers:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for i in range(3):
        assert (tmp_path / f"p{i}.bin").read_bytes() == data
    assert src.bytes_sent() <= SIZE * 1.05
    assert from_peers >= SIZE


def test_a_token_file_others_can_read_is_refused(tmp_path: Path, token_file: Path) -> None:
    token_file.chmod(0o644)
    result = subprocess.run(
        shoal_argv(
            "tracker", "--port", "0", "--db", f"sqlite:///{tmp_path / 't.db'}", "--fleet-token-file", str(token_file)
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "open to other users" in result.stderr and "chmod 600" in result.stderr


def test_a_service_without_a_credential_says_so(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        shoal_argv("tracker", "--host", "127.0.0.1", "--port", "0", "--db", f"sqlite:///{tmp_path / 't.db'}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert "listening on http://" in proc.stdout.readline()  # the warning is written just before this line
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert re.search(r"WARNING: no fleet credential: anyone who can reach 127\.0\.0\.1:\d+ may announce", err), err


# -- TLS and mutual TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


class Pki:
    def __init__(self, ca: trustme.CA, directory: Path) -> None:
        self.ca = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        self.certs: dict[str, tuple[Path, Path]] = {}
        for name in ("tracker", "peer1", "peer2", "seeder"):
            issued = ca.issue_cert("127.0.0.1", f"{name}.fleet.test")
            cert, key = directory / f"{name}.pem", directory / f"{name}.key"
            issued.cert_chain_pems[0].write_to_path(str(cert))
            issued.private_key_pem.write_to_path(str(key))
            self.certs[name] = cert, key

    def server(self, name: str, *, mutual: bool) -> tuple[str, ...]:
        cert, key = self.certs[name]
        return ("--tls-cert", str(cert), "--tls-key", str(key), *(("--tls-client-ca", str(self.ca)) if mutual else ()))

    def context(self, name: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if name is not None:
            context.load_cert_chain(*map(str, self.certs[name]))
        return context


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return Pki(ca, directory)


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tracker_and_peers_over_tls(
    tmp_path: Path,
    origin: Any,
    make_file: Any,
    services: list[Service],
    procs: list[subprocess.Popen[str]],
    pki: Pki,
    mutual: bool,
) -> None:
    src = origin()
    data = make_file(src.root / "tls.bin", SIZE)
    url = src.url("tls.bin")
    tracker = start_tracker(f"sqlite:///{tmp_path / 't.db'}", extra=pki.server("tracker", mutual=mutual))
    services.append(tracker)
    assert tracker.url.startswith("https://127.0.0.1:")

    def peer(name: str) -> tuple[str, ...]:
        return ("--tracker", tracker.url, "--ca", str(pki.ca), *pki.server(name, mutual=mutual))

    spawn_seeding_get(procs, url, "-o", str(tmp_path / "first.bin"), *peer("peer1"))
    second = run_get(url, "-o", str(tmp_path / "second.bin"), "--upload-time", "0", *peer("peer2"))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "second.bin").read_bytes() == data
    assert parse_summary(second.stderr)[1] >= SIZE  # from the first peer, over https
    assert ("no fleet credential" in second.stderr) is not mutual  # mutual TLS is a credential; TLS alone is not

    task_id = task_id_for_url(url)
    port, generation = serving_peer(tracker, task_id, pki.context("peer2"))
    piece_url = f"https://127.0.0.1:{port}/v1/tasks/{task_id}/haves?gen={generation}"
    tracker_url = f"{tracker.url}/v1/tasks/{task_id}"
    if not mutual:
        return
    # Without a client certificate the handshake fails, at the tracker and at a peer's piece server.
    for target in (tracker_url, piece_url):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            request(target, context=pki.context())
    # A `shoal get` without one cannot reach the tracker (exit code 3), and places nothing.
    outsider = run_get(url, "-o", str(tmp_path / "outsider.bin"), "--tracker", tracker.url, "--ca", str(pki.ca))
    assert outsider.returncode == 3, outsider.stderr
    assert not (tmp_path / "outsider.bin").exists()


def test_a_seeder_over_mutual_tls_publishes_to_a_tracker_over_mutual_tls(
    tmp_path: Path, services: list[Service], pki: Pki
) -> None:
    tracker = start_tracker(f"sqlite:///{tmp_path / 't.db'}", extra=pki.server("tracker", mutual=True))
    services.append(tracker)
    watched = tmp_path / "pub"
    watched.mkdir()
    fleet = ("--tracker", tracker.url, "--ca", str(pki.ca), *pki.server("seeder", mutual=True))
    seeder = start_seeder(watched, state_dir=tmp_path / "state", extra=fleet)
    services.append(seeder)
    assert seeder.url.startswith("https://127.0.0.1:")
    write_random(watched / "a.bin", SIZE)
    member = pki.context("peer1")

    def published() -> dict[str, Any] | None:
        status, body = request(f"{seeder.url}/v1/files", context=member)
        assert status == 200, body
        return next((f for f in json.loads(body)["files"] if f["path"] == "pub/a.bin"), None)

    listed = wait_until(published, "pub/a.bin to be published")

    def registered() -> bool:
        # The registrar reached the tracker: the fleet's CA verified it, and it presented its certificate.
        status, body = request(f"{tracker.url}/v1/tasks/{listed['task_id']}", context=member)
        return status == 200 and json.loads(body)["hashed_pieces"] > 0

    wait_until(registered, "the seeder to register its content task over mutual TLS")
    scrape = f"{tracker.url}/scrape?info_hash={quote_from_bytes(bytes.fromhex(listed['info_hash']), safe='')}"
    wait_until(lambda: b"8:completei1e" in request(scrape, context=member)[1], "the seeder's BitTorrent announce")
    # Without a client certificate the seeder's handshake fails, as the tracker's does.
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        request(f"{seeder.url}/serve?pub/a.bin", context=pki.context())


def test_a_seeder_over_tls_with_its_embedded_tracker_serves_the_fleet(
    tmp_path: Path, services: list[Service], pki: Pki
) -> None:
    watched = tmp_path / "pub"
    watched.mkdir()
    seeder = start_seeder(
        watched, state_dir=tmp_path / "state", extra=("--ca", str(pki.ca), *pki.server("seeder", mutual=False))
    )
    services.append(seeder)
    data = write_random(watched / "a.bin", SIZE)

    def published() -> bool:
        listing = json.loads(request(f"{seeder.url}/v1/files", context=pki.context())[1])
        return any(f["path"] == "pub/a.bin" for f in listing["files"])

    wait_until(published, "pub/a.bin to be published")
    # The getter verifies the tracker with --ca, the seeder's files as an origin with the system's CAs
    # (SSL_CERT_FILE here); its pieces come from the origin under the seeder's own hashes.
    argv = shoal_argv("get", f"{seeder.url}/files/pub/a.bin", "-o", str(tmp_path / "a.bin"), "--tracker", seeder.url)
    got = subprocess.run(
        [*argv, "--ca", str(pki.ca), "--upload-time", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SSL_CERT_FILE": str(pki.ca)},
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a.bin").read_bytes() == data


def test_seed_takes_the_fleets_tls_options_and_checks_them(tmp_path: Path, pki: Pki) -> None:
    cert = pki.certs["seeder"][0]
    for args, message in [
        (("--tls-cert", str(cert)), "--tls-cert and --tls-key go together"),
        (("--tls-client-ca", str(pki.ca)), "--tls-client-ca needs --tls-cert"),
        (("--tls-cert", str(cert), "--tls-key", str(cert)), "cannot use the TLS certificate"),
        (("--ca", str(tmp_path / "missing.pem")), "cannot use the CA certificates"),
    ]:
        argv = shoal_argv("seed", str(tmp_path), "--port", "0", "--bt-port", "0", "--state-dir", str(tmp_path / "s"))
        result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1


def test_a_daemon_with_the_token_seeds_to_the_fleet_only(
    tmp_path: Path, origin: Any, make_file: Any, services: list[Service], fleet_tracker: FleetTracker, token_file: Path
) -> None:
    src = origin()
    data = make_file(src.root / "cached.bin", SIZE)
    url = src.url("cached.bin")
    token = ("--fleet-token-file", str(token_file))
    tracker = fleet_tracker()
    node = start_daemon(tmp_path / "cache", tmp_path / "daemon.sock", tracker=tracker.url, extra=token)
    services.append(node)
    through = run_get(url, "-o", str(tmp_path / "first.bin"), "--socket", str(tmp_path / "daemon.sock"))
    assert through.returncode == 0, through.stderr
    assert (tmp_path / "first.bin").read_bytes() == data

    # The daemon seeds it: a peer of the fleet takes it from the daemon, not from the origin.
    sent = src.bytes_sent()
    second = run_get(url, "-o", str(tmp_path / "second.bin"), "--no-daemon", "--tracker", tracker.url, *token)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "second.bin").read_bytes() == data
    assert parse_summary(second.stderr)[1] >= SIZE and src.bytes_sent() - sent < SIZE / 4
    # And its piece server refuses a request without a ticket.
    task_id = task_id_for_url(url)
    port = int(node.url.rpartition(":")[2])
    status, body = request(f"http://127.0.0.1:{port}/v1/tasks/{task_id}/haves?gen=1")
    assert status == 403 and b"bitfield" not in body


def test_a_daemons_content_route_serves_the_fleet_only(
    tmp_path: Path, origin: Any, make_file: Any, services: list[Service], token_file: Path
) -> None:
    src = origin()
    data = make_file(src.root / "synced.bin", SIZE)
    token = ("--fleet-token-file", str(token_file))

    def node(name: str, *extra: str) -> Path:
        """A daemon (without a tracker: the content route needs none); its control socket."""
        sock = tmp_path / name / "daemon.sock"
        services.append(start_daemon(tmp_path / name / "cache", sock, extra=extra))
        return sock

    def cache(sock: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = shoal_argv("cache", "--socket", str(sock), *args)
        return subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=120)

    first = node("first", *token)
    assert run_get(src.url("synced.bin"), "-o", str(tmp_path / "first.bin"), "--socket", str(first)).returncode == 0
    digest = blake3.blake3(data).hexdigest()
    first_url = services[-1].url
    content = f"{first_url}/v1/content/{digest}"

    # An outsider who knows the file's BLAKE3 (it is no secret) gets a 403 and no bytes; so does one with
    # another fleet's credential, or a ticket (a ticket admits to a task, not to the cache).
    stranger = {FLEET_HEADER: FleetKey.from_token(b"not the fleet's token, long enough").credential(time.time())}
    ticket = {TICKET_HEADER: FleetKey.from_token(TOKEN).ticket(digest, "mallory", int(time.time()) + 60)}
    for headers in ({}, stranger, ticket):
        status, body = request(content, headers=headers)
        assert status == 403 and data[:4096] not in body, (headers, status)
    assert request(f"{first_url}/v1/content/{'0' * 64}")[0] == 403  # not even whether it is cached
    assert request(content, headers=fleet_headers()) == (200, data)

    # Another node of the fleet syncs the file from the first one's export, the origin gone: its daemon
    # asks the first one's content route with the fleet's credential.
    exported = cache_cli(tmp_path / "first" / "cache", "export").stdout
    (src.root / "synced.bin").unlink()
    second = node("second", *token)
    assert cache(second, "import", "-", stdin=exported).returncode == 0
    warmed = cache(second, "warm", digest)
    assert warmed.returncode == 0 and warmed.stdout.strip() == digest, warmed.stderr
    assert cache(second, "get", digest, "-o", str(tmp_path / "second.bin")).returncode == 0
    assert (tmp_path / "second.bin").read_bytes() == data
    # A node without the token cannot.
    outsider = node("outsider")
    assert cache(outsider, "import", "-", stdin=exported).returncode == 0
    refused = cache(outsider, "warm", digest)
    assert refused.returncode == 4 and "HTTP 403" in refused.stderr, refused.stderr
    assert cache_cli(tmp_path / "outsider" / "cache", "exists", digest).returncode == 1


def test_the_pools_routes_need_the_token_too(fleet_tracker: FleetTracker, token_file: Path) -> None:
    tracker = fleet_tracker()

    def pool(*args: str) -> subprocess.CompletedProcess[str]:
        argv = shoal_argv("pool", "--tracker", tracker.url, *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    refused = pool("create", "builds")
    assert refused.returncode == 3 and "this tracker needs a fleet credential" in refused.stderr, refused.stderr
    created = pool("--fleet-token-file", str(token_file), "create", "builds")
    assert created.returncode == 0, created.stderr
    listed = pool("--fleet-token-file", str(token_file), "members", "builds", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout


def test_a_seeder_with_the_token_registers_its_files_and_its_tracker_needs_it(
    tmp_path: Path, services: list[Service], token_file: Path
) -> None:
    watched = tmp_path / "releases"
    watched.mkdir()
    token = ("--fleet-token-file", str(token_file))
    seeder = start_seeder(watched, state_dir=tmp_path / "state", extra=token)
    services.append(seeder)
    data = write_random(watched / "a.bin", SIZE)

    def published() -> dict[str, Any] | None:
        status, body = request(f"{seeder.url}/v1/files", headers=fleet_headers())
        assert status == 200, body
        return next((f for f in json.loads(body)["files"] if f["path"] == "releases/a.bin"), None)

    content_task = wait_until(published, "releases/a.bin to be published")["task_id"]

    def registered() -> bool:
        # Its registrar's announces carry the credential: the embedded tracker takes the content task.
        status, body = request(f"{seeder.url}/v1/tasks/{content_task}", headers=fleet_headers())
        assert status in (200, 404), body
        return status == 200 and json.loads(body)["hashed_pieces"] > 0

    wait_until(registered, "the seeder to register its content task")
    assert request(f"{seeder.url}/v1/files")[0] == 401  # the embedded tracker's JSON routes need it too
    url = f"{seeder.url}/files/releases/a.bin"
    got = run_get(url, "-o", str(tmp_path / "a.bin"), "--tracker", seeder.url, "--upload-time", "0", *token)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a.bin").read_bytes() == data
    outsider = run_get(url, "-o", str(tmp_path / "b.bin"), "--tracker", seeder.url, "--upload-time", "0")
    assert outsider.returncode == 3 and not (tmp_path / "b.bin").exists(), outsider.stderr


def test_a_seeders_files_need_the_fleets_credential_or_a_passkey(
    tmp_path: Path, services: list[Service], token_file: Path
) -> None:
    watched = tmp_path / "releases"
    watched.mkdir()
    seeder = start_seeder(watched, state_dir=tmp_path / "state", extra=("--fleet-token-file", str(token_file)))
    services.append(seeder)
    data = write_random(watched / "a.bin", SIZE)
    key = FleetKey.from_token(TOKEN)

    def published() -> dict[str, Any] | None:
        status, body = request(f"{seeder.url}/v1/files", headers=fleet_headers())
        assert status == 200, body
        return next((f for f in json.loads(body)["files"] if f["path"] == "releases/a.bin"), None)

    listed = wait_until(published, "releases/a.bin to be published")
    # The listing (the fleet's) names the file and its torrent with a passkey made for the requester.
    passkey = key.passkey("127.0.0.1")
    assert listed["url"] == f"{seeder.url}/files/{passkey}/releases/a.bin"
    assert listed["torrent"] == f"{seeder.url}/serve/{passkey}?releases/a.bin"
    plain = f"{seeder.url}/files/releases/a.bin"
    stranger = FleetKey.from_token(b"not the fleet's token, long enough")
    forged = f"{seeder.url}/files/{stranger.passkey('127.0.0.1')}/releases/a.bin"
    for url, headers in (
        (plain, {}),
        (plain, {FLEET_HEADER: stranger.credential(time.time())}),
        (forged, {}),
        (f"{seeder.url}/files/{passkey}", {}),  # a passkey alone names no file
    ):
        status, body = request(url, headers=headers)
        assert status == 403 and data[:4096] not in body, (url, status, body)
    assert b"/files/PASSKEY/REL" in request(plain)[1]  # the refusal says how to ask
    assert request(plain, headers=fleet_headers()) == (200, data)
    assert request(listed["url"]) == (200, data)
    # A private torrent's web seed carries the passkey of the torrent it is in.
    torrent = bdecode(request(listed["torrent"])[1])
    assert torrent[b"url-list"] == [listed["url"].encode()]

    # `shoal get` straight from the seeder (no tracker): the passkey URL works as it is; the bare one is refused.
    got = run_get(listed["url"], "-o", str(tmp_path / "a.bin"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a.bin").read_bytes() == data
    refused = run_get(plain, "-o", str(tmp_path / "b.bin"), "--fleet-token-file", str(token_file))
    assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
    assert not (tmp_path / "b.bin").exists()


@pytest.fixture
def pg_url() -> str:
    """An empty PostgreSQL database of this test process (as test_tracker_cluster's)."""
    found = asyncio.run(_probe("postgresql"))
    if isinstance(found, BaseException):
        pytest.fail(f"PostgreSQL unreachable at {SERVERS['postgresql']}: {found!r}")
    asyncio.run(drop_schema(found))
    return found


def test_trackers_sharing_a_database_relay_the_peers_credential(
    tmp_path: Path, tracker: Any, origin: Any, make_file: Any, pg_url: str, token_file: Path
) -> None:
    src = origin()
    data = make_file(src.root / "shared.bin", SIZE)
    url = src.url("shared.bin")
    token = ("--fleet-token-file", str(token_file))
    trackers = [tracker(db=pg_url, extra=token) for _ in range(2)]
    owner = owner_of(task_id_for_url(url), members_once_live(trackers), time.time())
    assert owner is not None
    other = next(t for t in trackers if cluster(t)["tracker_id"] != owner.tracker_id)
    # Every announce goes to the tracker that does not own the task, which forwards it, credential and all.
    got = run_get(url, "-o", str(tmp_path / "shared.bin"), "--tracker", other.url, "--upload-time", "0", *token)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "shared.bin").read_bytes() == data
    assert request(f"{other.url}/v1/tasks/{task_id_for_url(url)}")[0] == 401


def test_trackers_over_mutual_tls_forward_to_each_other_with_the_fleets_credentials(
    tmp_path: Path, tracker: Any, origin: Any, make_file: Any, pg_url: str, token_file: Path, pki: Pki
) -> None:
    src = origin()
    data = make_file(src.root / "shared.bin", SIZE)
    url = src.url("shared.bin")
    token = ("--fleet-token-file", str(token_file))
    mutual = ("--ca", str(pki.ca), *pki.server("tracker", mutual=True))
    trackers = [tracker(db=pg_url, extra=(*token, *mutual)) for _ in range(2)]
    member = pki.context("peer1")
    assert all(t.url.startswith("https://") for t in trackers)
    views = members_once_live(trackers, member)
    assert all(m.url.startswith("https://127.0.0.1:") for m in views)  # advertised as they serve

    def not_owned_by(t: Service, key: str) -> bool:
        found = owner_of(key, views, time.time())
        return found is not None and found.tracker_id != cluster(t, member)["tracker_id"]

    other = next(t for t in trackers if not_owned_by(t, task_id_for_url(url)))
    # Every announce goes to the tracker that does not own the task: it forwards over mutual TLS.
    peer = ("--ca", str(pki.ca), *pki.server("peer1", mutual=True), *token)
    got = run_get(url, "-o", str(tmp_path / "shared.bin"), "--tracker", other.url, "--upload-time", "0", *peer)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "shared.bin").read_bytes() == data

    # A BitTorrent announce and scrape through the other tracker reach the swarm's owner with the passkey.
    info_hash = next(h for h in (bytes([i]) * 20 for i in range(256)) if not_owned_by(other, h.hex()))
    passkey = FleetKey.from_token(TOKEN).passkey("client-1")
    query = f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={'-LT0001-' + '0' * 12}&port=6881&left=10"
    status, body = request(f"{other.url}/announce/{passkey}?{query}", context=member)
    assert status == 200 and b"failure reason" not in body, body
    scrape = f"{other.url}/scrape/{passkey}?info_hash={quote_from_bytes(info_hash, safe='')}"
    assert b"10:incompletei1e" in request(scrape, context=member)[1]
    assert b"failure reason" in request(f"{other.url}/announce?{query}", context=member)[1]


NEXT_TOKEN = b"the fleet's next token: fedcba9876543210"


def test_a_forwarding_tracker_checks_the_passkey_before_it_forwards(
    tmp_path: Path, tracker: Any, pg_url: str, token_file: Path
) -> None:
    # The owner holds the next token beside the fleet's (a roll in progress), the forwarder only the fleet's:
    # a passkey of the next token is one the owner takes and the forwarder cannot check, so its refusal
    # through the forwarder is the forwarder's own, made before it forwards.
    both = tmp_path / "both.token"
    write_tokens(both, TOKEN, NEXT_TOKEN)
    forwarder = tracker(db=pg_url, extra=("--fleet-token-file", str(token_file)))
    owner = tracker(db=pg_url, extra=("--fleet-token-file", str(both)))
    views = members_once_live([owner, forwarder])
    owner_id = cluster(owner)["tracker_id"]

    def owned(info_hash: bytes) -> bool:
        found = owner_of(info_hash.hex(), views, time.time())
        return found is not None and found.tracker_id == owner_id

    info_hash = next(h for h in (bytes([i]) * 20 for i in range(256)) if owned(h))

    def announce(via: Service, n: int, passkey: str | None) -> dict[bytes, Any]:
        fields = {**announce_fields(n, info_hash=info_hash), "compact": 1}
        path = f"/announce/{passkey}" if passkey else "/announce"
        status, body = request(f"{via.url}{path}?{encode_query(fields)}")
        assert status == 200, body
        reply = bdecode(body)
        assert isinstance(reply, dict)
        return reply

    next_passkey = FleetKey.from_token(NEXT_TOKEN).passkey("client-1")
    assert b"failure reason" not in announce(owner, 1, next_passkey)  # the owner takes the next token's passkey
    # The fleet's passkey through the forwarder reaches the owner's swarm: the client is handed the first one.
    through = announce(forwarder, 2, FleetKey.from_token(TOKEN).passkey("client-2"))
    assert compact_peers(through[b"peers"]) == {("127.0.0.1", 6881)}, through
    # The forwarder refuses what it cannot check, and a client without a passkey, before forwarding.
    refused = announce(forwarder, 3, next_passkey)
    assert refused[b"failure reason"] == b"the passkey is not this fleet's", refused
    assert b"this tracker is private" in announce(forwarder, 4, None)[b"failure reason"]
    # Nothing reached the owner: its swarm still holds only the two clients it admitted.
    scrape = f"{owner.url}/scrape/{next_passkey}?info_hash={quote_from_bytes(info_hash, safe='')}"
    assert b"10:incompletei2e" in request(scrape)[1]


def write_tokens(path: Path, *tokens: bytes) -> None:
    """Replace a token file whole, as an operator's tools should (a rename: no half-written file is read)."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(b"".join(t + b"\n" for t in tokens))
    staged.chmod(0o600)
    os.replace(staged, path)


def test_rolling_the_token_keeps_a_peer_with_the_old_one_working_until_it_is_removed(
    tmp_path: Path, origin: Any, make_file: Any, fleet_tracker: FleetTracker, token_file: Path
) -> None:
    src = origin()
    data = make_file(src.root / "rolled.bin", SIZE)
    url = src.url("rolled.bin")
    tracker_tokens = tmp_path / "tracker.token"
    write_tokens(tracker_tokens, TOKEN)
    tracker = fleet_tracker(tracker_tokens)
    next_file = tmp_path / "next.token"
    write_tokens(next_file, NEXT_TOKEN)

    def get(name: str, tokens: Path) -> subprocess.CompletedProcess[str]:
        argv = ("-o", str(tmp_path / name), "--tracker", tracker.url, "--upload-time", "0")
        return run_get(url, *argv, "--fleet-token-file", str(tokens))

    assert accepted(tracker, TOKEN) and not accepted(tracker, NEXT_TOKEN)
    # The overlap: the next token added beside the old one, then made first. Peers with either work.
    write_tokens(tracker_tokens, TOKEN, NEXT_TOKEN)
    wait_until(lambda: accepted(tracker, NEXT_TOKEN), "the tracker to take the next token")
    write_tokens(tracker_tokens, NEXT_TOKEN, TOKEN)
    for name, tokens in (("old.bin", token_file), ("next.bin", next_file)):
        got = get(name, tokens)
        assert got.returncode == 0, got.stderr
        assert (tmp_path / name).read_bytes() == data
    # The old token removed: a peer that still holds only it is refused, and places nothing.
    write_tokens(tracker_tokens, NEXT_TOKEN)
    wait_until(lambda: not accepted(tracker, TOKEN), "the tracker to drop the old token")
    refused = get("late.bin", token_file)
    assert refused.returncode == 3 and "not this fleet's" in refused.stderr, refused.stderr
    assert not (tmp_path / "late.bin").exists()
    assert get("after.bin", next_file).returncode == 0


def test_a_seeding_get_takes_a_rolled_token_file_and_serves_a_peer_holding_only_the_next_token(
    tmp_path: Path, seeding_get: Callable[..., Seeding], token_file: Path
) -> None:
    tracker_tokens = tmp_path / "tracker.token"
    write_tokens(tracker_tokens, TOKEN)
    seeding = seeding_get("long.bin", "-v", tracker_tokens=tracker_tokens)
    url, data, tracker, first = seeding.url, seeding.data, seeding.tracker, seeding.get

    # While it seeds, the fleet rolls on: the next token signs on the tracker, then on the seeding get.
    write_tokens(tracker_tokens, NEXT_TOKEN, TOKEN)
    wait_until(lambda: accepted(tracker, NEXT_TOKEN), "the tracker to take the next token")
    write_tokens(token_file, NEXT_TOKEN, TOKEN)
    assert first.stderr is not None
    for line in first.stderr:
        if "fleet token file" in line and "reloaded: 2 tokens" in line:
            break
    else:
        raise AssertionError(f"the seeding get ended without reloading its token file: {first.wait()}")
    # A new peer holding only the next token: its ticket is the next token's, which the seeding get checks
    # now, so it takes every byte from it rather than from the origin.
    next_file = tmp_path / "next.token"
    write_tokens(next_file, NEXT_TOKEN)
    second = run_get(
        url,
        "-o",
        str(tmp_path / "second.bin"),
        "--tracker",
        tracker.url,
        "--upload-time",
        "0",
        "--fleet-token-file",
        str(next_file),
    )
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "second.bin").read_bytes() == data
    assert parse_summary(second.stderr)[1] >= SIZE, second.stderr


def test_shoal_cache_takes_the_fleets_credentials(
    tmp_path: Path, seeding_get: Callable[..., Seeding], token_file: Path
) -> None:
    import shoal
    from shoal.core.errors import UsageError

    seeding = seeding_get("cached.bin")
    src, url, data, tracker = seeding.src, seeding.url, seeding.data, seeding.tracker
    first = src.bytes_sent()
    assert first >= SIZE

    # A file that cannot be a token is named, as the daemon's option would be, before anything is fetched.
    empty = tmp_path / "empty.token"
    empty.write_bytes(b"")
    empty.chmod(0o600)
    refused = shoal.Cache(tmp_path / "e.sqlite", tmp_path / "e", "10M", tracker=tracker.url, fleet_token_file=empty)
    with pytest.raises(UsageError, match="no fleet token"):
        refused.warm_up(url)
    refused.close()
    # With the token the cache joins the swarm and takes the file from the seeding peer (its ticket admits it).
    with shoal.Cache(
        tmp_path / "c.sqlite", tmp_path / "c", "10M", tracker=tracker.url, fleet_token_file=token_file
    ) as cache:
        assert cache.download(cache.warm_up(url)).read_bytes() == data
    assert src.bytes_sent() - first < SIZE // 10  # a probe of the origin, no more
    # Without it the tracker refuses the cache, which falls back to the origin (as a daemon does): the swarm
    # gave it nothing.
    with shoal.Cache(tmp_path / "o.sqlite", tmp_path / "o", "10M", tracker=tracker.url) as outsider:
        assert outsider.download(outsider.warm_up(url)).read_bytes() == data
    assert src.bytes_sent() - first >= SIZE


def test_a_wire_seeder_asks_a_tracker_cluster_elsewhere_whom_it_may_serve(
    tmp_path: Path, tracker: Any, pg_url: str, token_file: Path
) -> None:
    """A seeder with --tracker (two trackers on one database, the swarm owned by the one it does not ask):
    it answers a private torrent's handshake only from a host that announced the swarm with the fleet's
    passkey, asking the tracker's authenticated route, which the asked tracker forwards to the owner."""
    token = ("--fleet-token-file", str(token_file))
    trackers = [tracker(db=pg_url, extra=token) for _ in range(2)]
    views = members_once_live(trackers)
    watched = tmp_path / "pub"
    watched.mkdir()
    write_random(watched / "a.bin", SIZE)
    key = FleetKey.from_token(TOKEN)

    def published() -> dict[str, Any] | None:
        status, body = request(f"{seeder.url}/v1/files", headers=fleet_headers())
        assert status == 200, body
        return next((f for f in json.loads(body)["files"] if f["path"] == "pub/a.bin"), None)

    # The seeder asks the tracker that does not own the file's swarm (found once its info-hash is known).
    seeder = start_seeder(watched, state_dir=tmp_path / "state", extra=(*token, "--tracker", trackers[0].url))
    try:
        info_hash = bytes.fromhex(wait_until(published, "pub/a.bin to be published")["info_hash"])
        found = owner_of(info_hash.hex(), views, time.time())
        assert found is not None
        asked = next(t for t in trackers if cluster(t)["tracker_id"] != found.tracker_id)
        if asked is not trackers[0]:
            seeder.stop()
            seeder = start_seeder(watched, state_dir=tmp_path / "state", extra=(*token, "--tracker", asked.url))
            wait_until(published, "pub/a.bin to be published again")
        http_port = int(seeder.url.rsplit(":", 1)[1])
        [bt_port] = listening_ports(seeder.proc.pid) - {http_port}

        # The route is the fleet's: without the credential, a 401.
        route = f"{asked.url}/v1/swarms/{info_hash.hex()}/admitted?address=127.0.0.8"
        assert request(route)[0] == 401
        # Forwarded to the owner, which names itself (core.owner_hint): the seeder asks it directly next.
        no = {"admitted": False, "until": None, "owner": found.url}
        assert json.loads(request(route, headers=fleet_headers())[1]) == no
        assert not handshake_answered("127.0.0.9", bt_port, info_hash)
        passkey = key.passkey("client-8")
        query = f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-ID0000-000000000008&port=6888&left=1"
        with bound_opener("127.0.0.8").open(f"{asked.url}/announce/{passkey}?{query}", timeout=30) as reply:
            assert b"failure reason" not in reply.read()
        assert json.loads(request(route, headers=fleet_headers())[1])["admitted"] is True
        assert handshake_answered("127.0.0.8", bt_port, info_hash)
        assert not handshake_answered("127.0.0.9", bt_port, info_hash)
    finally:
        seeder.stop()
