"""The fleet simulator's pieces (benchmarks/fleetsim): the fluid links, the tracker's bounded snapshots, and
small whole runs whose outcome follows from the rules the simulator models."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from fleetsim.network import Flow, Link, Network, waterfill
from fleetsim.sim import MBIT, Model, Result, Shape, Simulation
from fleetsim.trace import Tracer

MIB = 1 << 20


def _network() -> tuple[Network, list[tuple[float, Flow]]]:
    scheduled: list[tuple[float, Flow]] = []
    return Network(lambda when, flow: scheduled.append((when, flow))), scheduled


def _flow(*links: Link, size: float = 100.0) -> Flow:
    return Flow(links, size)


def test_one_link_is_shared_equally() -> None:
    network, _ = _network()
    link = Link("l", 90.0)
    flows = [_flow(link) for _ in range(3)]
    for flow in flows:
        network.start(flow, 0.0)
    assert [f.rate for f in flows] == pytest.approx([30.0, 30.0, 30.0])


def test_a_flow_held_back_elsewhere_leaves_its_share_to_the_others() -> None:
    # Max-min: the flow through the slow link gets 10; the other two split the rest of the fast link.
    network, _ = _network()
    fast, slow = Link("fast", 100.0), Link("slow", 10.0)
    held, a, b = _flow(fast, slow), _flow(fast), _flow(fast)
    for flow in (held, a, b):
        network.start(flow, 0.0)
    assert held.rate == pytest.approx(10.0, rel=0.02)
    assert a.rate == pytest.approx(45.0, rel=0.02)
    assert b.rate == pytest.approx(45.0, rel=0.02)


def test_a_finished_flow_gives_its_share_back_and_bytes_are_counted() -> None:
    network, scheduled = _network()
    link = Link("l", 100.0)
    first, second = _flow(link, size=50.0), _flow(link, size=500.0)
    network.start(first, 0.0)
    network.start(second, 0.0)
    assert [when for when, flow in scheduled if flow is second][-1] == pytest.approx(10.0)  # 500 bytes at 50/s
    done_at = [when for when, flow in scheduled if flow is first][-1]
    assert done_at == pytest.approx(1.0)
    network.finish(first, done_at)
    assert second.rate == pytest.approx(100.0)
    assert second.left == pytest.approx(450.0)
    assert link.carried == pytest.approx(100.0)  # 50 of each by then


def test_waterfill_of_a_link_nobody_is_limited_by() -> None:
    link, other = Link("l", 100.0), Link("o", 10.0)
    flow = _flow(link, other)
    link.flows[flow] = None
    assert waterfill(link) == math.inf
    with pytest.raises(ValueError):
        Link("bad", 0.0)


def _run(shape: Shape, **kwargs: object) -> object:
    return Simulation(shape, Model(), seed=3, **kwargs).run()  # type: ignore[arg-type]


def test_a_flat_swarm_fetches_the_file_from_the_origin_about_once() -> None:
    shape = Shape(0, 4, 16 * MIB, 200 * MBIT, None)
    result = _run(shape)
    assert len(result.done_times) == 4  # type: ignore[attr-defined]
    # Spot checks (core.audit) may fetch a few pieces twice; leases never lease one to two peers.
    assert shape.size <= result.origin_bytes <= 1.05 * shape.size  # type: ignore[attr-defined]
    # Nothing is faster than the origin's link with its framing, plus the start-up.
    floor = shape.size / (shape.origin_rate * Model().framing) + Model().startup
    assert result.last_done >= floor  # type: ignore[attr-defined]


def test_racks_take_each_piece_in_once_with_scope_leases() -> None:
    shape = Shape(3, 3, 16 * MIB, 200 * MBIT, 400 * MBIT)
    result = _run(shape)
    into = result.into_racks  # type: ignore[attr-defined]
    assert len(into) == 3
    assert all(1.0 <= share <= 1.10 for share in into), into


def test_bounded_scope_lease_decisions_decide_like_the_whole_state() -> None:
    # Past exact_limit decide_crossings gets the asker, its scopes' lease holders and one aggregate per rack
    # (decide_announce always reads the whole swarm). The aggregates carry the pieces of everyone left out,
    # so the crossings come out as on the whole state: without them no piece ever crossed a rack.
    shape = Shape(4, 6, 16 * MIB, 200 * MBIT, 400 * MBIT, sites=1)
    whole = _run(shape)
    bounded = _run(shape, exact_limit=4)
    assert bounded.snapshot_peers < shape.count  # type: ignore[attr-defined]
    assert abs(bounded.origin_bytes - whole.origin_bytes) <= 0.05 * shape.size  # type: ignore[attr-defined]
    assert all(1.0 <= share <= 1.05 for share in bounded.into_racks)  # type: ignore[attr-defined]
    assert bounded.last_done <= 1.1 * whole.last_done  # type: ignore[attr-defined]


def test_many_racks_in_one_site_finish() -> None:
    # Every peer follows 64 peers; before a rack-mate held anything the hand-out listed only other racks'
    # holders. A followed peer across the rack's boundary offering nothing our scope leases let us take
    # makes room (core.download._drop_a_useless_peer): without that rule the rack never followed its own
    # peers and stopped for good once it held every piece between them.
    # 16 racks of 6 stopped with 37 peers left under the older rule (drop only a peer holding nothing we lack).
    shape = Shape(16, 6, 4 * MIB, 20 * MBIT, 40 * MBIT, sites=1, nic_rate=200 * MBIT)
    result = Simulation(shape, Model(), seed=3).run(limit=60.0)  # raises if peers are left by then
    assert len(result.done_times) == shape.count


def test_sites_take_each_piece_in_once() -> None:
    shape = Shape(4, 2, 16 * MIB, 200 * MBIT, 400 * MBIT, sites=2, site_rate=200 * MBIT)
    result = _run(shape)
    assert all(1.0 <= share <= 1.05 for share in result.into_sites), result.into_sites  # type: ignore[attr-defined]


def test_a_finished_peer_announces_at_once_so_its_rack_learns_its_last_crossings() -> None:
    # Seed 2 leaves a rack's last two crossings with a peer that finishes with them: its rack-mates, which
    # do not follow it, hear of them only from its "completed" announce. Announced at the next interval
    # instead, the rack waited 5 s.
    result = Simulation(Shape(4, 6, 16 * MIB, 200 * MBIT, 400 * MBIT), Model(), seed=2).run()
    assert result.last_done - result.done_times[0] < 2.0, result.done_times


def test_the_whole_file_hash_follows_the_prefix_and_ends_after_the_last_piece() -> None:
    shape = Shape(2, 2, 8 * MIB, 200 * MBIT, 200 * MBIT)
    result = Simulation(shape, Model(hash_rate=1000.0)).run()
    assert not math.isnan(result.hashed_last)
    # The last piece of the prefix is hashed after it arrives: at least one piece's hashing past the last done.
    assert result.hashed_last >= result.last_done + Simulation(shape).manifest.piece_length / 1000e6
    assert math.isnan(Simulation(shape).run().hashed_last)


def test_a_prefix_window_still_brings_every_peer_the_whole_file_with_the_same_origin_bytes() -> None:
    shape = Shape(2, 2, 8 * MIB, 200 * MBIT, 200 * MBIT)
    windowed = Simulation(shape, Model(prefix_window=4, audit_share=0.0)).run()
    assert len(windowed.done_times) == 4 and windowed.origin_bytes == shape.size


def _traced(shape: Shape, seed: int = 1) -> Result:
    sim = Simulation(shape, Model(), seed=seed)
    sim.tracer = Tracer(sim)
    result = sim.run()
    result.phases = sim.tracer.phases(result)
    return result


def test_a_traced_run_is_the_run_untraced() -> None:
    # The tracer only reads the links: the same seed gives the same times and bytes.
    shape = Shape(2, 3, 16 * MIB, 200 * MBIT, 200 * MBIT)
    traced, plain = _traced(shape), Simulation(shape, Model(), seed=1).run()
    assert traced.done_times == plain.done_times
    assert traced.origin_bytes == plain.origin_bytes and traced.into_racks == plain.into_racks


def test_the_trace_accounts_for_the_last_peers_time() -> None:
    # At 1x the origin's link is the bottleneck: the last peer is done after the start-up, the file over the
    # framed link, the origin's bytes past the file, the link's idle time before its last piece and the time
    # after it. The parts add up to the last done, within a few samples.
    shape = Shape(2, 3, 16 * MIB, 200 * MBIT, 200 * MBIT)
    result = _traced(shape)
    phases = result.phases
    assert phases is not None
    framing = Model().framing
    sent = result.origin_bytes / (shape.origin_rate * framing)
    idle = phases.origin_idle[0] + phases.origin_idle[1]
    total = phases.first_origin + sent + idle + (phases.last_done - phases.last_origin)
    assert total == pytest.approx(result.last_done, abs=0.02)
    assert phases.first_origin < phases.first_crossing < phases.last_origin < phases.last_done
    assert 0.0 <= phases.origin_crowded <= idle + 1e-9
    assert set(phases.downlink_idle) == {"r1", "r2"} and set(phases.rack_done) == {"r1", "r2"}
    assert phases.done == result.done_times
    assert any("start-up" in line for line in phases.lines(result.bound, framing, result.origin_bytes / shape.size))


def test_a_flat_swarm_has_no_crossing_to_trace() -> None:
    phases = _traced(Shape(0, 4, 8 * MIB, 200 * MBIT, None)).phases
    assert phases is not None and math.isnan(phases.first_crossing) and not phases.downlink_idle
