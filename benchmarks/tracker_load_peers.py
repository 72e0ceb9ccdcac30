"""The simulated fleet of ``tracker_load.py``: tasks, and peers that speak the tracker's JSON announce protocol.

Not run on its own. A peer's announces follow what a real one sends (``peer/join.py``, ``peer/announcer.py``,
``core/download.py``'s ``ask``; ``daemon/seeding.py`` for a seed), one announce per turn the load generator
gives it:

    downloader: started (generation 0) -> started (origin identity) -> update ... -> completed -> seed
    seed:       update (full bitfield) ... then, if it began as a downloader: stopped -> a new downloader
    initial seed (a host that held the file before the run): completed, then updates, never stops

A downloader's update carries its bitfield, ``done`` with a hash for every piece the tracker leased it in the
last reply it got (a real peer fetches its leases from the origin within an interval), and asks for ``want``
leases while it lacks pieces. Between turns it gains pieces from its swarm: up to ``pieces / download_turns``
that the tracker holds a hash of, the lowest first, as a swarm that starts together fills a file front to
back. A piece's hash is the BLAKE3 of the task's id and the index, the same for every peer, so reports agree
(and the tracker's spot checks close: core.audit). Peers are spread over ``--hosts`` loopback source
addresses, which the tracker sees as hosts. Addresses handed out and the tasks' URLs are loopback addresses:
nothing ever connects to them.

A downloader names no piece in ``fetching``, as a real peer would not at that moment: a real peer names there
the pieces of its origin runs still to come (core.download's ``ask``), and a piece that has arrived goes in
``done`` instead until the tracker takes it. Here a lease's pieces arrive before the peer's next turn, and
every announce after the reply that leased them is that turn or a later one (or one sent again after a 503,
which repeats a turn), so each of them reports those pieces done. The tracker takes ``done`` of a task it took
over during its grace as it takes ``fetching`` (core.announce: from a peer holding no lease there, a report is
a claim then), so the two tell a new owner the same.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass, field

import blake3
import msgspec

from shoal.core.bitfield import Bitfield
from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import MAX_PIECE_LENGTH, MIN_PIECE_LENGTH, OriginIdentity, piece_length_for
from shoal.core.messages import AnnounceRequest

DEFAULT_MIX = "2000x1,50x80,10x400"
"""The fleet of issue 27: one task of 2,000 peers, 80 of 50, 400 of 10 (10,000 peers)."""
MAX_CROSSINGS = 64


class Reply(msgspec.Struct):
    """The fields of core.messages.AnnounceResponse a simulated peer acts on (the others are skipped)."""

    generation: int = 0
    restart: bool = False
    leases: list[int] = []
    rejected: list[int] = []
    interval: float = 5.0
    owner: str = ""


def parse_mix(text: str) -> list[tuple[int, int]]:
    """``SIZExCOUNT,...`` -> [(peers per task, tasks)]."""
    mix = []
    for part in text.split(","):
        size, sep, count = part.strip().partition("x")
        if not sep or not size.isdigit() or not count.isdigit() or int(size) < 1 or int(count) < 1:
            raise ValueError(f"--mix takes SIZExCOUNT items like 50x80, not {part!r}")
        mix.append((int(size), int(count)))
    return mix


def task_sizes(mix: list[tuple[int, int]], peers: int) -> list[int]:
    """Swarm sizes for ``peers`` peers: the mix's task counts scaled by peers / the mix's own total (at least
    one task of each size), largest swarms first."""
    total = sum(size * count for size, count in mix)
    scale = peers / total
    sizes = []
    for size, count in sorted(mix, reverse=True):
        sizes += [size] * max(1, round(count * scale))
    return sizes


def parse_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    if not low.isdigit() or not (high or low).isdigit() or not 1 <= int(low) <= int(high or low) <= 65_536:
        raise ValueError(f"--pieces takes a count or LOW-HIGH within 1-65536, not {text!r}")
    return int(low), int(high or low)


def length_of(pieces: int) -> int:
    """A file length that the piece rule (core/manifest.py) cuts into exactly ``pieces`` pieces."""
    piece = MIN_PIECE_LENGTH
    while piece <= MAX_PIECE_LENGTH:
        if piece_length_for(pieces * piece) == piece:
            return pieces * piece
        piece *= 2
    raise ValueError(f"no file length has {pieces} pieces under the piece rule")


@dataclass(eq=False)
class SimTask:
    task_id: str
    url: str
    pieces: int
    identity: OriginIdentity
    path: str
    full: str
    """The whole bitfield, encoded once: what every seed sends."""
    hashed: int = 0
    """Pieces whose hash the tracker took (reports it did not reject)."""
    generation: int = 1
    _digests: dict[int, str] = field(default_factory=dict)

    @classmethod
    def make(cls, run: str, number: int, pieces: int) -> SimTask:
        url = f"http://127.0.0.1:9/load/{run}/{number}.bin"
        task_id = task_id_for_url(url)
        identity = OriginIdentity(length_of(pieces), etag=f'"{task_id[:16]}"')
        full = Bitfield.full(pieces).encode()
        return cls(task_id, url, pieces, identity, f"/v1/tasks/{task_id}/announce", full)

    def digest(self, index: int) -> str:
        found = self._digests.get(index)
        if found is None:
            found = self._digests[index] = blake3.blake3(f"{self.task_id}:{index}".encode()).hexdigest()
        return found


@dataclass(frozen=True)
class Workload:
    """How the simulated peers behave (tracker_load.py's flags)."""

    want: int = 4
    """Leases a downloader asks for (core.picker.lease_pieces: 64 MiB of 16 MiB pieces)."""
    download_turns: int = 12
    """A downloader gains up to pieces / download_turns pieces from its swarm per announce."""
    seed_turns: int = 24
    """Announces a finished downloader seeds for before it stops and a new downloader takes its place."""
    seed_share: float = 0.2
    """Share of each task's peers that hold the file from the start and seed throughout."""
    racks: int = 0
    """Racks the labelled peers are spread over (sites of 8 racks); 0: no labels."""
    racked_share: float = 0.5
    """Share of the peers with --site/--rack labels when ``racks`` is set."""
    idle_share: float = 0.0
    """Share of the tasks that nobody downloads: all their peers seed from the start and never stop (a fleet's
    idle caches)."""


class SimPeer:
    __slots__ = (
        "have",
        "host",
        "identity",
        "leased",
        "number",
        "phase",
        "rack",
        "sent",
        "site",
        "source",
        "task",
        "turns",
    )

    def __init__(self, task: SimTask, number: int, source: int, *, seed: bool, labels: tuple[str, str]) -> None:
        self.task = task
        self.number = number
        self.source = source
        self.host = f"127.{1 + number // 62500}.{number // 250 % 250}.{1 + number % 250}"
        self.site, self.rack = labels
        self.identity = PeerIdentity.from_secret(secrets.token_hex(16))
        self.phase = "seed0" if seed else "new"
        self.have = (1 << task.pieces) - 1 if seed else 0
        self.leased: list[int] = []
        self.turns = 0
        self.sent = 0
        """Announces built so far: one that ends tells by it whether the peer has announced since."""

    def request(self, work: Workload, *, again: bool = False) -> tuple[AnnounceRequest, dict[int, str]]:
        """This turn's announce, and the hashes it reports; advances the peer as if it were sent. ``again``:
        the turn's announce sent again after a 503 (its Retry-After), built afresh as a real peer builds
        it: the reports it repeats, and no progress of a turn (no pieces gained, no seeding turn counted)."""
        self.sent += 1
        task, phase = self.task, self.phase
        common = {"peer_id": self.identity.peer_id, "secret": self.identity.secret, "url": task.url, "port": 7000}
        common.update(host=self.host, site=self.site, rack=self.rack)
        if phase == "new":
            self.phase = "joining"
            return AnnounceRequest(**common, event="started", generation=0), {}  # type: ignore[arg-type]
        if phase == "joining":
            self.phase = "down"
            started = AnnounceRequest(**common, event="started", generation=task.generation, origin=task.identity)  # type: ignore[arg-type]
            return started, {}
        if phase == "seed0":
            self.phase = "seeding0"
            return AnnounceRequest(**common, event="completed", generation=task.generation, bitfield=task.full), {}  # type: ignore[arg-type]
        if phase == "seeding0" or phase == "seeding":
            return self._seeding(common, task, work, again)
        return self._downloading(common, task, work, again)

    def _seeding(
        self, common: dict, task: SimTask, work: Workload, again: bool
    ) -> tuple[AnnounceRequest, dict[int, str]]:
        if self.phase == "seeding" and not again:
            self.turns += 1
            if self.turns > work.seed_turns:
                self.rejoin()
                return AnnounceRequest(**common, event="stopped", generation=task.generation), {}
        return AnnounceRequest(**common, event="update", generation=task.generation, bitfield=task.full), {}

    def _downloading(
        self, common: dict, task: SimTask, work: Workload, again: bool
    ) -> tuple[AnnounceRequest, dict[int, str]]:
        size, full = task.pieces, (1 << task.pieces) - 1
        done = {i: task.digest(i) for i in self.leased}
        self.leased = []
        for index in done:
            self.have |= 1 << index
        if self.have == full:
            self.phase, self.turns = "seeding", 0
            completed = AnnounceRequest(**common, event="completed", generation=task.generation, bitfield=task.full)  # type: ignore[arg-type]
            return msgspec.structs.replace(completed, done=done), done
        bitfield = Bitfield.from_mask(size, self.have).encode()
        crossings = min(size - self.have.bit_count(), MAX_CROSSINGS) if self.rack else 0
        request = AnnounceRequest(
            **common,  # type: ignore[arg-type]
            event="update",
            generation=task.generation,
            bitfield=bitfield,
            done=done,
            want_leases=work.want,
            want_crossings=crossings,
        )
        if not again:
            self._gain(work)
        return request, done

    def _gain(self, work: Workload) -> None:
        """Pieces fetched from other peers before the next turn: the lowest the tracker holds hashes of."""
        task = self.task
        new = task.hashed & ~self.have
        for _ in range(math.ceil(task.pieces / work.download_turns)):
            if not new:
                break
            low = new & -new
            self.have |= low
            new ^= low

    def unanswered(self, done: dict[int, str]) -> None:
        """An announce that reported ``done`` got no 200: a real peer reports those hashes again (the download
        engine keeps a report until a reply takes it), so the next announce carries them."""
        if done and self.phase == "down":
            self.leased = list(dict.fromkeys([*done, *self.leased]))

    def answered(self, reply: Reply, done: dict[int, str]) -> int:
        """Take a reply (leases to fetch, reports not taken); returns how many reports were rejected."""
        task = self.task
        if reply.restart or reply.generation != task.generation:
            task.generation = reply.generation or task.generation
            self.have, self.leased, self.phase = 0, [], "joining"
            return 0
        rejected = set(reply.rejected)
        for index in done:
            if index not in rejected:
                task.hashed |= 1 << index
        if self.phase == "down":
            self.leased = [i for i in reply.leases if not self.have >> i & 1]
        return len(rejected)

    @property
    def downloading(self) -> bool:
        """Joining or fetching: a real peer's download engine announces of its own accord then."""
        return self.phase in ("new", "joining", "down")

    def rejoin(self) -> None:
        """A finished downloader left (its ``stopped`` is this turn's announce): a new host takes its place."""
        self.identity = PeerIdentity.from_secret(secrets.token_hex(16))
        self.phase, self.have, self.leased, self.turns = "new", 0, [], 0


def build_fleet(
    sizes: list[int], pieces: tuple[int, int], work: Workload, hosts: int, rng: random.Random
) -> list[SimPeer]:
    """Tasks of the given swarm sizes (piece counts log-uniform in ``pieces``) and their peers, shuffled: the
    order in which the load generator gives them turns."""
    run = secrets.token_hex(6)  # tasks of their own: a database reused across runs holds earlier tasks
    peers: list[SimPeer] = []
    low, high = pieces
    for number, size in enumerate(sizes):
        count = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        task = SimTask.make(run, number, count)
        seeds = size if rng.random() < work.idle_share else round(size * work.seed_share)
        for k in range(size):
            labels = ("", "")
            if work.racks and rng.random() < work.racked_share:
                rack = rng.randrange(work.racks)
                labels = (f"site{rack // 8}", f"rack{rack}")
            n = len(peers)
            peers.append(SimPeer(task, n, n % hosts, seed=k < seeds, labels=labels))
    rng.shuffle(peers)
    return peers
