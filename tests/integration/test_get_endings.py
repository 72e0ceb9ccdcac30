"""How `shoal get` ends once the file is in place: the seeding period (only with a tracker that answered),
Ctrl-C or SIGTERM during it (exit 0: the file is in place), and a failing --callback (exit 8). Real
processes: a tracker, an origin, a daemon, `shoal get`."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.core.ids import task_id_for_url
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service
from tests.integration.conftest import Daemon, Origin, run_get, task_summary

MiB = 1 << 20
DEAD_TRACKER = "http://127.0.0.1:9"


def errors(stderr: str) -> list[str]:
    """stderr's lines but the warning of a piece server started without a fleet credential."""
    return [line for line in stderr.splitlines() if "no fleet credential" not in line]


def test_no_seeding_period_without_a_tracker_that_answered(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    data = make_file(o.root / "f.bin", MiB)
    # The default upload time is 60 s: a get that seeded to nobody would run into the timeout.
    fallback = run_get(
        o.url("f.bin"), "-o", str(tmp_path / "a.bin"), "--tracker", DEAD_TRACKER, "--fallback", timeout=30
    )
    assert fallback.returncode == 0, fallback.stderr
    assert (tmp_path / "a.bin").read_bytes() == data
    assert "serving it to peers" not in fallback.stderr
    alone = run_get(o.url("f.bin"), "-o", str(tmp_path / "b.bin"), "--no-daemon", timeout=30)
    assert alone.returncode == 0, alone.stderr
    assert "serving it to peers" not in alone.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_while_serving_to_peers_exits_0_with_the_file_in_place(
    sig: signal.Signals,
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., subprocess.Popen[str]],
) -> None:
    t, o = tracker(), origin()
    data = make_file(o.root / "f.bin", 2 * MiB)
    out = tmp_path / "f.bin"
    proc = spawn_get(o.url("f.bin"), "-o", str(out), "--tracker", t.url, "--upload-time", "600", "--no-daemon")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving it to peers for 600s" in line:
            break
    else:
        pytest.fail(f"no seeding period began (exit {proc.wait()})")
    proc.send_signal(sig)
    assert proc.wait(60) == 0
    rest = proc.stderr.read()
    assert rest == f"stopped serving it to peers; {out} is in place\n"
    assert out.read_bytes() == data


@pytest.fixture(params=["in-process", "daemon"])
def get_with_callback(
    request: pytest.FixtureRequest,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    daemon: Callable[..., Daemon],
    make_file: Callable[[Path, int], bytes],
) -> tuple[Callable[[Path, str], subprocess.CompletedProcess[str]], bytes]:
    o = origin()
    data = make_file(o.root / "f.bin", MiB)
    if request.param == "in-process":
        # With a tracker and a long upload time: a failed callback must end the get at once all the same.
        extra: tuple[str, ...] = ("--no-daemon", "--tracker", tracker().url, "--upload-time", "600")
    else:
        extra = ("--socket", str(daemon().socket))

    def get(dest: Path, callback: str) -> subprocess.CompletedProcess[str]:
        return run_get(o.url("f.bin"), "-o", str(dest), "--callback", callback, *extra, timeout=60)

    return get, data


def test_a_callback_that_fails_exits_8_and_the_file_stays(
    tmp_path: Path, get_with_callback: tuple[Callable[[Path, str], subprocess.CompletedProcess[str]], bytes]
) -> None:
    get, data = get_with_callback
    out = tmp_path / "f.bin"
    failed = get(out, "sh -c 'exit 3'")
    assert failed.returncode == 8, failed.stderr
    assert len(errors(failed.stderr)) == 1
    assert f"{out} is in place, but the callback" in failed.stderr and "exited with status 3" in failed.stderr
    assert out.read_bytes() == data


def test_a_callback_that_cannot_start_exits_8_and_the_file_stays(
    tmp_path: Path, get_with_callback: tuple[Callable[[Path, str], subprocess.CompletedProcess[str]], bytes]
) -> None:
    get, data = get_with_callback
    out = tmp_path / "f.bin"
    missing = get(out, str(tmp_path / "no-such-command"))
    assert missing.returncode == 8, missing.stderr
    assert len(errors(missing.stderr)) == 1
    assert "could not be started: No such file or directory" in missing.stderr
    assert out.read_bytes() == data


@pytest.mark.parametrize(("callback", "message"), [("", "needs a command"), ("echo 'open", "No closing quotation")])
def test_a_callback_that_can_never_run_is_refused_before_the_download(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes], callback: str, message: str
) -> None:
    o = origin()
    make_file(o.root / "f.bin", MiB)
    result = run_get(o.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--callback", callback, "--no-daemon")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert o.bytes_sent() == 0 and not (tmp_path / "f.bin").exists()


@pytest.mark.parametrize("change", ["deleted", "moved", "rewritten"])
def test_a_seeded_file_that_goes_away_is_withdrawn_from_the_swarm_at_once(
    change: str,
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., subprocess.Popen[str]],
) -> None:
    """A file moved, deleted or rewritten while it is seeded (by a callback, by hand) leaves the swarm: the
    peer stops serving it and tells the tracker, instead of being handed out for pieces it no longer has."""
    o = origin()
    make_file(o.root / "f.bin", MiB)
    t = tracker()
    dest = tmp_path / "f.bin"
    proc = spawn_get(o.url("f.bin"), "-o", str(dest), "--tracker", t.url, "--upload-time", "300")
    task = task_id_for_url(o.url("f.bin"))
    wait_until(lambda: dest.exists() and len(task_summary(t, task)["peers"]) == 1, "the file placed and seeded")  # type: ignore[arg-type]
    if change == "deleted":
        dest.unlink()
    elif change == "moved":
        dest.rename(tmp_path / "elsewhere.bin")
    else:
        dest.write_bytes(b"something else")
    _, stderr = proc.communicate(timeout=60)  # the seeding period of 300 s ends early
    assert proc.returncode == 0, stderr
    assert "no longer serving it to peers" in stderr
    assert task_summary(t, task)["peers"] == []


def test_after_seeding_runs_once_the_serving_period_is_over(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
) -> None:
    """minion's ``--callback delete``: the file is removed after it was served, not before."""
    o = origin()
    make_file(o.root / "f.bin", MiB)
    t = tracker()
    dest, marker = tmp_path / "f.bin", tmp_path / "ran"
    # The command records whether the file was still there when it ran, then deletes it.
    command = f'sh -c \'test -f "$0" && touch {marker}; rm -f "$0"\''
    done = run_get(
        o.url("f.bin"), "-o", str(dest), "--tracker", t.url, "--upload-time", "2", "--after-seeding", command
    )
    assert done.returncode == 0, done.stderr
    assert "serving it to peers for 2s" in done.stderr
    assert marker.exists() and not dest.exists()


def test_an_after_seeding_command_that_fails_is_exit_code_8(tmp_path: Path, origin: Callable[..., Origin]) -> None:
    o = origin()
    (o.root / "f.bin").write_bytes(b"x" * 1000)
    done = run_get(o.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--no-daemon", "--after-seeding", "false")
    assert done.returncode == 8, done.stderr
    assert "is in place, but the --after-seeding command 'false' exited with status 1" in done.stderr
    assert (tmp_path / "f.bin").exists()


@pytest.mark.parametrize(("command", "says"), [("", "needs a command"), ("rm 'open", "No closing quotation")])
def test_an_after_seeding_command_that_can_never_run_is_refused_naming_its_option(
    tmp_path: Path, origin: Callable[..., Origin], command: str, says: str
) -> None:
    o = origin()
    (o.root / "f.bin").write_bytes(b"x" * 1000)
    done = run_get(o.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--no-daemon", "--after-seeding", command)
    assert done.returncode == 2, done.stderr
    assert f"--after-seeding {'' if not command else repr(command) + ': '}" in done.stderr and says in done.stderr
    assert "--callback" not in done.stderr
    assert o.bytes_sent() == 0 and not (tmp_path / "f.bin").exists()


def test_after_seeding_waits_for_the_peers_it_serves(
    tmp_path: Path,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., subprocess.Popen[str]],
) -> None:
    """minion's ``--callback delete`` done right: while the file is seeded, another host takes all of it
    from this one (peers only) and the command has not run; it runs once the serving period is over (here
    ended by the file going away), not at placement, when it would break the other host's transfer."""
    o = origin()
    data = make_file(o.root / "f.bin", MiB)
    t = tracker()
    dest, marker = tmp_path / "f.bin", tmp_path / "ran"
    command = f"sh -c 'touch {marker}; rm -f \"$0\"'"
    seeder = spawn_get(
        o.url("f.bin"), "-o", str(dest), "--tracker", t.url, "--upload-time", "300", "--after-seeding", command
    )
    task = task_id_for_url(o.url("f.bin"))
    wait_until(lambda: dest.exists() and len(task_summary(t, task)["peers"]) == 1, "the file placed and seeded")  # type: ignore[arg-type]
    other = tmp_path / "other.bin"
    taken = run_get(o.url("f.bin"), "-o", str(other), "--tracker", t.url, "--upload-time", "0", "--no-origin")
    assert taken.returncode == 0, taken.stderr
    assert other.read_bytes() == data
    assert not marker.exists() and dest.exists()  # the serving period is not over: the command has not run
    dest.unlink()  # ends the serving period early
    _, stderr = seeder.communicate(timeout=60)
    assert seeder.returncode == 0, stderr
    assert marker.exists()
