"""Content behind origin credentials (issue 28), with real processes: a file fetched with `--header` is
private to those headers. By default it comes from the origin only and nobody can ask the host for it;
shared (`--share-authenticated`), it is shared only with hosts holding the same headers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import blake3

from shoal.core.ids import headers_tag, task_id_for_url
from shoal.testing.processes import Service, start_daemon
from tests.integration.conftest import Daemon, Origin, cache_cli, run_get

MiB = 1 << 20
AUTH = "Authorization: Bearer s3cret"


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def served_tasks(node: Service) -> int:
    with urllib.request.urlopen(f"{node.url}/v1/health", timeout=30) as response:
        return int(json.load(response)["tasks"])


def test_a_file_fetched_with_credentials_is_served_to_nobody_and_never_answers_a_request_without_them(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--require-header", AUTH)
    data = make_file(o.root / "secret.bin", 3 * MiB)
    url = o.url("secret.bin")
    t = tracker()
    host = daemon(t)
    fetched = host.get(url, tmp_path / "a.bin", "--header", AUTH)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "a.bin").read_bytes() == data

    # The outsider knows the URL: the tracker has never heard of its task, the host serves no task at all,
    # and the file is not to be had by its id either.
    plain = task_id_for_url(url)
    assert status_of(f"{t.url}/v1/tasks/{plain}") == 404
    assert status_of(f"{host.service.url}/v1/tasks/{plain}/haves?gen=1") == 404
    assert served_tasks(host.service) == 0
    assert status_of(f"{host.service.url}/v1/content/{blake3.blake3(data).hexdigest()}") == 404
    export = cache_cli(host.cache_dir, "export")
    assert export.returncode == 0 and json.loads(export.stdout)["files"] == [], export.stderr

    # A request without the credentials goes to the origin, which refuses it: never the cached copy.
    outsider = host.get(url, tmp_path / "b.bin")
    assert outsider.returncode != 0 and "403" in outsider.stderr
    assert not (tmp_path / "b.bin").exists()
    # With them, it is a cache hit.
    sent = o.bytes_sent()
    again = host.get(url, tmp_path / "c.bin", "--header", AUTH)
    assert again.returncode == 0 and "cache hit" in again.stderr, again.stderr
    assert o.bytes_sent() == sent


def test_shared_it_reaches_only_the_hosts_that_hold_the_same_headers(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    services: list[Service],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--require-header", AUTH)
    size = 4 * MiB
    data = make_file(o.root / "secret.bin", size)
    url = o.url("secret.bin")
    t = tracker()
    first = daemon(t, name="first")
    done = first.get(url, tmp_path / "1.bin", "--header", AUTH, "--share-authenticated")
    assert done.returncode == 0, done.stderr
    assert served_tasks(first.service) == 1  # seeded under the task the headers key
    assert status_of(f"{first.service.url}/v1/tasks/{task_id_for_url(url)}/haves?gen=1") == 404

    # A host whose daemon shares such files, with the same headers: from the first host, not the origin.
    second = start_daemon(
        tmp_path / "second" / "cache", tmp_path / "second" / "sock", tracker=t.url, extra=["--share-authenticated"]
    )
    services.append(second)
    before = o.bytes_sent()
    done = run_get(url, "-o", str(tmp_path / "2.bin"), "--socket", str(tmp_path / "second" / "sock"), "--header", AUTH)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "2.bin").read_bytes() == data
    assert o.bytes_sent() - before < MiB  # a probe at most, never the file again

    # A host with other headers (the origin takes them too) cannot name the task: all from the origin.
    third = daemon(t, name="third")
    before = o.bytes_sent()
    done = third.get(url, tmp_path / "3.bin", "--header", AUTH, "--header", "X-Tenant: other", "--share-authenticated")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "3.bin").read_bytes() == data
    assert o.bytes_sent() - before >= size


def test_a_get_in_its_own_process_with_credentials_announces_nothing_unless_it_shares(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    tmp_path: Path,
    make_file: Callable[[Path, int], bytes],
) -> None:
    o = origin("--require-header", AUTH)
    data = make_file(o.root / "secret.bin", MiB)
    url = o.url("secret.bin")
    t = tracker()
    keyed = task_id_for_url(url, tag=headers_tag({"Authorization": "Bearer s3cret"}))
    common = ["--tracker", t.url, "--no-daemon", "--upload-time", "0", "--header", AUTH]

    done = run_get(url, "-o", str(tmp_path / "a.bin"), *common)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.bin").read_bytes() == data
    assert status_of(f"{t.url}/v1/tasks/{task_id_for_url(url)}") == 404
    assert status_of(f"{t.url}/v1/tasks/{keyed}") == 404

    done = run_get(url, "-o", str(tmp_path / "b.bin"), *common, "--share-authenticated")
    assert done.returncode == 0, done.stderr
    assert status_of(f"{t.url}/v1/tasks/{keyed}") == 200
    assert status_of(f"{t.url}/v1/tasks/{task_id_for_url(url)}") == 404
