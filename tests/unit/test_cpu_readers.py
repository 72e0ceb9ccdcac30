"""The benchmarks' CPU readers (shoal.testing.cpu) against real processes and this machine's /proc."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from shoal.testing.cpu import MachineCpu, own_cpu_seconds, process_cpu_seconds

# A child that renames itself to a command name holding ") (" (which a naive split of /proc/PID/stat gets
# wrong), burns 0.3 CPU-seconds, says so, and waits to be killed.
SPIN = """
import sys, time
with open("/proc/self/comm", "w") as comm:
    comm.write("spin) (x y")
while time.process_time() < 0.3:
    pass
print("spun", flush=True)
sys.stdin.read()
"""


def spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_cpu_time_is_read_whatever_its_command_name() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "spun\n"
            with open(f"/proc/{child.pid}/comm") as comm:
                assert comm.read().strip() == "spin) (x y"
            used = process_cpu_seconds(child.pid)
            # 0.3 s of spinning plus the interpreter's start, counted in 10 ms ticks.
            assert 0.28 <= used < 5.0
        finally:
            child.kill()


def test_a_reaped_process_raises_rather_than_reading_zero() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(FileNotFoundError):
        process_cpu_seconds(child.pid)


def test_own_and_machine_time_grow_by_what_this_process_burns() -> None:
    own0, machine0 = own_cpu_seconds(), MachineCpu.sample()
    spin(0.2)
    own, machine = own_cpu_seconds() - own0, MachineCpu.sample() - machine0
    assert own >= 0.2
    assert machine.tasks >= 0.18  # the machine's counter includes ours (ticks: 10 ms granularity)
