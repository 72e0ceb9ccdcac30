"""The rsync command lines of the ``rsync`` and ``two-stage-rsync`` mirror providers, as tunasync builds them.

Pure: a job's spec and the directories in, argument lists out (``shoal.mirror.rsync`` runs them). The
options are tunasync's, so a job moved over from tunasync transfers what it did there::

    rsync:            DEFAULT_OPTIONS (or rsync_override) [-4|-6] [--exclude-from F] rsync_options
                      [--link-dest PREVIOUS] UPSTREAM DEST
    two-stage-rsync:  stage 1: STAGE1_OPTIONS + the profile's excludes ..., as above
                      stage 2: DEFAULT_OPTIONS ..., as above

Rules, and why:

- Stage 1 of two-stage-rsync brings every file except the index files (a Debian archive's ``Packages``,
  ``Release``, ...), without deleting anything; stage 2 then brings the index files and deletes what left
  upstream. Clients of the mirror never see an index that names packages not there yet.
- ``--link-dest`` names the previous version Shoal published (the versions layout), so an unchanged file
  becomes a hard link to it instead of a transfer, and the seeder's hash index knows it already.
- ``-v`` and ``--stats`` are in the defaults: the run's log lists what changed, and ``Total file size``
  is what ``size_pattern`` reads. rsync's ``.~tmp~`` directories (``--delay-updates``) are hidden, so the
  seeder never publishes a file half-way to its place.
- The password is not an argument: arguments are visible to every user of the host (``ps``).
"""

from __future__ import annotations

from collections.abc import Sequence

from shoal.core.mirror_config import JobSpec

_COMMON = ("-aHvh", "--no-o", "--no-g", "--stats", "--filter", "risk .~tmp~/", "--exclude", ".~tmp~/")
DEFAULT_OPTIONS = (*_COMMON, "--delete", "--delete-after", "--delay-updates", "--safe-links")
"""tunasync's rsync options (and two-stage-rsync's stage 2)."""
STAGE1_OPTIONS = (*_COMMON, "--safe-links")
"""tunasync's stage 1: nothing is deleted before the new index files are in place."""

STAGE1_PROFILES: dict[str, tuple[str, ...]] = {
    "debian": (
        "--include=*.diff/",
        "--include=by-hash/",
        "--exclude=*.diff/Index",
        "--exclude=Contents*",
        "--exclude=Packages*",
        "--exclude=Sources*",
        "--exclude=Release*",
        "--exclude=InRelease",
        "--exclude=i18n/*",
        "--exclude=dep11/*",
        "--exclude=installer-*/current",
        "--exclude=ls-lR*",
    ),
    "debian-oldstyle": (
        "--exclude=Packages*",
        "--exclude=Sources*",
        "--exclude=Release*",
        "--exclude=InRelease",
        "--exclude=i18n/*",
        "--exclude=dep11/*",
        "--exclude=ls-lR*",
    ),
}
"""What stage 1 leaves for stage 2, by ``stage1_profile``: tunasync's lists."""


def rsync_commands(
    spec: JobSpec, dest: str, *, link_dest: str | None = None, program: str = "rsync"
) -> list[tuple[str, ...]]:
    """The command lines of one run of ``spec``, in order (one for rsync, two for two-stage-rsync), each
    syncing ``spec.upstream`` into ``dest`` (an absolute directory). ``link_dest``: the previous version."""
    tail = _shared_options(spec, link_dest)
    target = (spec.upstream, dest.rstrip("/") + "/")
    base = DEFAULT_OPTIONS if spec.rsync_override is None else spec.rsync_override
    if spec.provider == "rsync":
        return [(program, *base, *tail, *target)]
    profile = STAGE1_PROFILES[spec.stage1_profile or "debian"]
    return [(program, *STAGE1_OPTIONS, *profile, *tail, *target), (program, *base, *tail, *target)]


def _shared_options(spec: JobSpec, link_dest: str | None) -> Sequence[str]:
    options: list[str] = []
    if spec.use_ipv6:
        options.append("-6")
    elif spec.use_ipv4:
        options.append("-4")
    if spec.exclude_file is not None:
        options += ["--exclude-from", spec.exclude_file]
    options += spec.rsync_options
    if link_dest is not None:
        options.append(f"--link-dest={link_dest}")
    return options


def rsync_environment(spec: JobSpec, password: str | None) -> dict[str, str]:
    """What rsync's environment gains for ``spec``: the daemon user (rsync reads ``USER``, then ``LOGNAME``)
    and the password (``RSYNC_PASSWORD``), which never goes on the command line."""
    env: dict[str, str] = {}
    if spec.username is not None:
        env["USER"] = env["LOGNAME"] = spec.username
    if password is not None:
        env["RSYNC_PASSWORD"] = password
    return env
