"""A worker as the mirror manager's process knows it while it is live: its outbox of numbered commands.

The manager (shoal.mirror.manager) keeps one ``WorkerLink`` per registered worker, in memory; the worker's
long poll takes what the outbox holds. Nothing here touches the store: the durable facts about a worker
(its name, URL, when it registered) are storage.mirror_store's ``WorkerRecord``.

Rules, and why:

- Every command gets the next number of its link (``seq``) and stays in the outbox until the worker
  acknowledges that number in a later poll (``acknowledge``): a reply lost on the wire is sent again,
  instead of leaving a job assigned but never started. A worker therefore sees a command more than once
  when a reply is lost, and goes by its number.
- Sending sets ``wake``, so a poll waiting on this link answers at once instead of at the end of its hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from shoal.mirror.messages import Command


@dataclass
class WorkerLink:
    """A worker registered with this manager process: its outbox of numbered commands, and when it was heard."""

    name: str
    url: str
    concurrency: int
    last_seen: float
    seq: int = 0
    outbox: list[Command] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, command: Command) -> None:
        self.seq += 1
        self.outbox.append(msgspec.structs.replace(command, seq=self.seq))
        self.wake.set()

    def acknowledge(self, ack: int) -> None:
        """Drop the commands the worker has taken: those numbered ``ack`` or lower."""
        self.outbox = [command for command in self.outbox if command.seq > ack]

    def withdraw(self, which: Callable[[Command], bool]) -> None:
        """Take back the commands ``which`` picks that the worker has not taken yet."""
        self.outbox = [command for command in self.outbox if not which(command)]
