"""core.bt_admission: which hosts a private tracker admitted to which swarm, with values and ``now``."""

from __future__ import annotations

from shoal.core.bt_admission import Admissions

A = b"a" * 20
B = b"b" * 20


def test_an_admission_holds_for_the_ttl_per_swarm_and_host() -> None:
    admissions = Admissions(ttl=180.0)
    admissions.admit(A, "10.0.0.1", now=1000.0)
    assert admissions.until(A, "10.0.0.1", now=1000.0) == 1180.0
    assert admissions.until(A, "10.0.0.1", now=1180.0) == 1180.0
    assert admissions.until(A, "10.0.0.1", now=1180.5) is None  # it stopped announcing
    assert admissions.until(B, "10.0.0.1", now=1000.0) is None  # another swarm
    assert admissions.until(A, "10.0.0.2", now=1000.0) is None  # another host
    admissions.admit(A, "10.0.0.1", now=1100.0)  # its next announce renews it
    assert admissions.until(A, "10.0.0.1", now=1200.0) == 1280.0


def test_stopped_ends_an_admission_and_the_oldest_go_past_the_limit() -> None:
    admissions = Admissions(ttl=60.0, limit=2)
    admissions.admit(A, "10.0.0.1", now=0.0)
    admissions.leave(A, "10.0.0.1")
    assert admissions.until(A, "10.0.0.1", now=0.0) is None
    admissions.leave(B, "10.0.0.9")  # leaving what was never admitted is nothing
    admissions.admit(A, "10.0.0.1", now=0.0)
    admissions.admit(A, "10.0.0.2", now=1.0)
    admissions.admit(A, "10.0.0.1", now=2.0)  # renewed: the most recent now
    admissions.admit(B, "10.0.0.3", now=3.0)
    assert len(admissions) == 2
    assert admissions.until(A, "10.0.0.2", now=3.0) is None  # the least recently renewed went
    assert admissions.until(A, "10.0.0.1", now=3.0) == 62.0
