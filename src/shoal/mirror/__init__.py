"""Mirror jobs (tunasync's design on Shoal): a manager that keeps status and schedules, workers that run jobs.

- ``config``: reads ``mirrors.toml`` from disk (the parsing itself is pure: ``shoal.core.mirror_toml``).
- ``runner``: one attempt of a job on a worker: hooks, the provider, versions on disk, retention.
- ``providers``: what fills a version: ``http`` (a file or a directory index) and ``command``.
- ``processes``: shell commands in their own process group, killed whole, output kept bounded.
- ``manager``, ``worker``, ``client``: the services and their wire protocol.
"""
