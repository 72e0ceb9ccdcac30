"""Set-up for the whole test session."""

from __future__ import annotations

import pytest

from shoal.testing.processes import compile_bytecode


def pytest_sessionstart(session: pytest.Session) -> None:
    # The shoal processes the integration tests start then load bytecode instead of compiling every module.
    # Once per run: under xdist the controller does it before it starts the workers.
    if not hasattr(session.config, "workerinput"):
        compile_bytecode()
