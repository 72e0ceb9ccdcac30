"""Set-up for the whole test session."""

from __future__ import annotations

import signal

import pytest
from hypothesis import HealthCheck, settings

from shoal.testing.processes import compile_bytecode

# Property tests assert what holds, never how fast: hypothesis's per-example deadline and its "too slow"
# health checks are timings, which a busy CI machine turns into failures of correct code.
settings.register_profile(
    "shoal", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("shoal")


def pytest_sessionstart(session: pytest.Session) -> None:
    # The shoal processes the integration tests start then load bytecode instead of compiling every module.
    # Once per run: under xdist the controller does it before it starts the workers.
    if not hasattr(session.config, "workerinput"):
        compile_bytecode()


def pytest_configure(config: pytest.Config) -> None:
    # A command started in the background by a shell without job control (a CI script's `cmd &`) inherits
    # SIGINT ignored, and so would every process the tests start: the tests that press Ctrl-C on `shoal get`
    # (SIGINT) would then wait for nothing. A terminal's Ctrl-C reaches a process with SIGINT at its default,
    # so the tests run as that: a handler here is reset to the default in every child at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
