"""What tunasync's worker.conf and manager.conf may hold, which of it Shoal has no equivalent for and why, and the
notes of what a conversion (core.tunasync_config) did not carry over.

Pure data and one collector of notes: no file is read here. The key sets are tunasync's own
(``worker/config.go``, ``manager/config.go``); a key outside them is not a tunasync key at all.

Rules, and why:

- Nothing is dropped silently: every key present that has no equivalent is a ``Skipped`` entry naming
  where it was and why (``docker_image``: no docker provider), so the user knows what to carry over by
  hand. A key's own reason wins over its table's.
- A table that is present but disabled (``[cgroup] enable = false``) is reported once, saying nothing is
  lost, rather than once per key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NOT_CARRIED = {
    "memory_limit": "Shoal puts no job in a cgroup; run the worker in a systemd slice with MemoryMax= instead",
    "docker_image": "Shoal has no docker provider; run the image from the job's command (docker run ...)",
    "docker_volumes": "Shoal has no docker provider",
    "docker_options": "Shoal has no docker provider",
    "snapshot_path": "Shoal takes no btrfs snapshots; its versions/ layout keeps earlier versions instead",
    "role": "Shoal has no master/slave roles: every job is its worker's own (is_master is true in GET /jobs)",
    "mirror_dir": "a job's directory is always <[worker] directory>/<job>; move the mirror there",
    "mirror_subdir": "a job's directory is always <[worker] directory>/<job>; move the mirror there",
    "rsync_no_timeout": "pass rsync's own --timeout=0 in rsync_options",
    "rsync_timeout": "pass rsync's own --timeout=SECONDS in rsync_options",
    "rsync_override_only": "rsync_override already replaces the default options; add global ones to it",
    "ca_cert": "Shoal verifies an https manager against the system's CAs: point SSL_CERT_FILE at this file",
    "api_base_list": "a worker has one manager URL; the first one is used",
    "debug": "run with -v instead",
    "status_file": "Shoal keeps status in its SQL database ([manager] db), readable at GET /jobs",
    "db_type": "Shoal keeps job status in SQL ([manager] db, an SQLite file by default); history is not moved",
    "db_file": "Shoal keeps job status in SQL ([manager] db, an SQLite file by default); history is not moved",
    "ssl_cert": "the manager serves plain HTTP: put a TLS proxy in front of it",
    "ssl_key": "the manager serves plain HTTP: put a TLS proxy in front of it",
}
"""Keys with no equivalent in Shoal, and why: a mirror's, ``[global]``'s and manager.conf's."""
WORKER_TABLES_NOT_CARRIED = {
    "server": "Shoal's workers do not listen for the manager: they long-poll it (their seeder has seed_host and "
    "seed_port)",
    "cgroup": "Shoal puts no job in a cgroup; run the worker in a systemd slice with MemoryMax= instead",
    "docker": "Shoal has no docker provider",
    "zfs": "Shoal creates no ZFS datasets; make <[worker] directory>/<job> a dataset yourself",
    "btrfs_snapshot": "Shoal takes no btrfs snapshots; its versions/ layout keeps earlier versions instead",
}
"""worker.conf's tables with no equivalent, and why; a key's own reason (``NOT_CARRIED``) wins over its
table's."""
GLOBAL_KEYS = frozenset(
    {
        "name",
        "log_dir",
        "mirror_dir",
        "concurrent",
        "interval",
        "retry",
        "timeout",
        "rsync_options",
        "exec_on_success",
        "exec_on_failure",
        "dangerous_global_success_exit_codes",
        "dangerous_global_rsync_success_exit_codes",
    }
)
"""The keys of worker.conf's ``[global]``."""
MIRROR_KEYS = frozenset(
    {
        "name",
        "provider",
        "upstream",
        "interval",
        "retry",
        "timeout",
        "mirror_dir",
        "mirror_subdir",
        "log_dir",
        "env",
        "role",
        "exec_on_success",
        "exec_on_failure",
        "exec_on_success_extra",
        "exec_on_failure_extra",
        "success_exit_codes",
        "rsync_success_exit_codes",
        "command",
        "fail_on_match",
        "size_pattern",
        "use_ipv6",
        "use_ipv4",
        "exclude_file",
        "username",
        "password",
        "rsync_no_timeout",
        "rsync_timeout",
        "rsync_options",
        "rsync_override",
        "rsync_override_only",
        "stage1_profile",
        "memory_limit",
        "docker_image",
        "docker_volumes",
        "docker_options",
        "snapshot_path",
        "mirrors",
    }
)
"""The keys of a ``[[mirrors]]`` table (and of its nested ``[[mirrors.mirrors]]``)."""


@dataclass(frozen=True)
class Skipped:
    """A key of the tunasync files that the conversion did not carry over, and why."""

    where: str
    """``worker.conf [cgroup]``, ``worker.conf mirrors 'alpine'``: the file and the table."""
    key: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.why}"


@dataclass
class Notes:
    """What a conversion did not carry over, in the order it was met."""

    skipped: list[Skipped] = field(default_factory=list)

    def add(self, where: str, key: str, why: str) -> None:
        self.skipped.append(Skipped(where, key, why))

    def table(self, table: Any, where: str, why: str) -> None:
        if table is None:
            return
        if isinstance(table, dict) and table.get("enable") is False:
            self.add(where, "enable = false", f"disabled in the file, so nothing is lost ({why})")
            return
        keys = ", ".join(table) if isinstance(table, dict) else "(the table)"
        self.add(where, keys, why)

    def unknown(self, table: Mapping[str, Any], known: set[str] | frozenset[str], where: str) -> None:
        for key in table:
            if key not in known:
                self.add(where, key, "not a tunasync key either (tunasync ignores it)")
