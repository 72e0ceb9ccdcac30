"""``shoal.cli.main.loading``: a command's imports run with the cyclic collector paused, then are frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shoal.cli.main import loading


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # give this process's objects back to the collector
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_paused_while_loading_and_what_loaded_is_frozen() -> None:
    gc.enable()
    gc.unfreeze()
    with loading():
        assert not gc.isenabled()
        loaded = [{"a module's": "objects"} for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(loaded)


def test_collector_comes_back_after_a_failed_import() -> None:
    gc.enable()
    with pytest.raises(ModuleNotFoundError), loading():
        import shoal.no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert gc.isenabled()


def test_a_collector_switched_off_stays_off() -> None:
    gc.disable()
    with loading():
        pass
    assert not gc.isenabled()
