"""A pool of resident daemons in a network lab (netlab.Lab): the tracker's pool API and the pool's members.

The lab's addresses are reachable only inside its namespaces, so the pool API is asked with curl from the
tracker's namespace (:class:`PoolApi`). A member is a ``shoal daemon`` started with ``--pool``
(:func:`member_argv`); a lab starts its members after creating the pool, then waits until the tracker counts
every one of them live (:meth:`PoolApi.wait_for_members`), before its clock starts.

Used by benchmarks/pool_lab.py (pushes on one switch, members killed mid-push) and by the racks lab's
``pool`` method (benchmarks/labrun.py): not run on its own.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from netlab import SHOAL, Lab

POOL = "lab"


class PoolApi:
    """The tracker's ``/v1/pools`` API, asked from the tracker's namespace; ``token`` once :meth:`create` ran."""

    def __init__(self, lab: Lab, tracker_url: str) -> None:
        self.lab = lab
        self.tracker_url = tracker_url
        self.token = ""

    def call(self, method: str, path: str, body: object = None) -> dict[str, object]:
        """One request to ``/v1/pools{path}``; its JSON reply."""
        argv = ["ip", "netns", "exec", self.lab.tracker.ns, "curl", "-sS", "--max-time", "10", "-X", method]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        if self.token:
            argv += ["-H", f"Authorization: Bearer {self.token}"]
        out = subprocess.run([*argv, f"{self.tracker_url}/v1/pools{path}"], capture_output=True, check=True)
        reply: dict[str, object] = json.loads(out.stdout)
        return reply

    def create(self) -> str:
        """Create the public pool POOL (a fresh tracker has none) and keep its token, which pushes need."""
        self.token = ""
        token = self.call("POST", "", {"name": POOL, "private": False})["token"]
        assert isinstance(token, str)
        self.token = token
        return token

    def wait_for_members(self, count: int, timeout: float = 60.0) -> None:
        """Return once the tracker counts ``count`` live members of POOL; a RuntimeError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = self.call("GET", f"/{POOL}/members")["members"]
            assert isinstance(members, list)
            if sum(1 for m in members if m["live"]) == count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the members did not all join the pool within {timeout:g} s")

    def push_argv(self, url: str) -> list[str]:
        """``shoal pool push``: the fleet's one command that sends ``url`` to every member of POOL."""
        return [SHOAL, "pool", "--tracker", self.tracker_url, "--token", self.token, "push", POOL, url]


def member_argv(cache_dir: Path, socket: Path, tracker_url: str, name: str, *extra: str) -> list[str]:
    """A ``shoal daemon`` that joins POOL as ``name`` (its cache and control socket at those paths)."""
    argv = [SHOAL, "daemon", "--cache-dir", str(cache_dir), "--socket", str(socket), "--tracker", tracker_url]
    return [*argv, "--pool", POOL, "--name", name, *extra]
