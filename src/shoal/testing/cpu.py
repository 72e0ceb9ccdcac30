"""CPU time as Linux counts it, for the benchmarks: one process's, our own, and the whole machine's.

The benchmarks take a reading before and after what they time and print the differences. ``/proc`` counts
in clock ticks (``SC_CLK_TCK``, 100 a second on Linux), so the figures are good to about 10 ms.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process and all its threads (``/proc/PID/stat``), not counting
    its children. Raises ``OSError`` (``FileNotFoundError``) once the process has been reaped."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2, the command name, is in parentheses and may hold spaces: count from after its ")".
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / TICK


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class MachineCpu:
    """The machine's cumulative CPU seconds, all cores, by kind (the first line of ``/proc/stat``)."""

    tasks: float
    """User, nice and system time of every process (what the processes' own counters add up to)."""
    irq: float
    """Interrupts and softirqs: most of the network stack's work (the veths' packets), charged to no
    process."""
    idle: float
    """Idle and I/O wait: cores that had nothing to run."""
    steal: float
    """Time the host ran something else while this VM's cores wanted to run: lost to what is measured."""

    @classmethod
    def sample(cls) -> MachineCpu:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) / TICK for x in fields)
        return cls(user + nice + system, irq + softirq, idle + iowait, steal)

    def __sub__(self, earlier: MachineCpu) -> MachineCpu:
        """What the machine did between ``earlier`` and this reading."""
        return MachineCpu(
            self.tasks - earlier.tasks, self.irq - earlier.irq, self.idle - earlier.idle, self.steal - earlier.steal
        )
