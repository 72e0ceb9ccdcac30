"""Joining pools without a token on the command line, and joining and leaving at runtime through the
daemon's control socket (issue 29, from dragonload), with a real tracker, daemons and commands."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from shoal.daemon.client import DaemonClient
from shoal.testing.processes import Service, shoal_argv, start_daemon
from tests.integration.test_pools import (  # noqa: F401 - fixtures
    Pool,
    make_pool,
    wait_for,
)


def cmdline(service: Service) -> bytes:
    return Path(f"/proc/{service.proc.pid}/cmdline").read_bytes()


def token_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def join_cli(
    socket: Path, *args: str, env: dict[str, str] | None = None, command: str = "join"
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SHOAL_POOL_TOKEN"}
    return subprocess.run(
        shoal_argv("pool", command, "--socket", str(socket), *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def test_a_private_pools_token_comes_from_the_environment_or_a_file_never_the_command_line(
    tmp_path: Path,
    make_pool: Callable[..., Pool],  # noqa: F811
    services: list[Service],
) -> None:
    vault = make_pool("vault", private=True)
    other = make_pool("other", private=True, tracker_service=vault.tracker)
    assert vault.token and other.token

    def daemon(name: str, *extra: str, env: dict[str, str] | None = None) -> Service:
        log = tmp_path / f"{name}.log"
        service = start_daemon(
            tmp_path / name / "cache",
            tmp_path / name / "daemon.sock",
            tracker=vault.tracker.url,
            extra=["--name", name, *extra],
            env=env,
            log=log,
        )
        services.append(service)
        return service

    from_env = daemon("env", "--pool", "vault", env={"SHOAL_POOL_TOKEN": vault.token})
    keyring = token_file(
        tmp_path / "pools.tokens", f"# pools of this host\nvault {vault.token}\n\nother {other.token}\n"
    )
    from_file = daemon("file", "--pool", "vault", "--pool", "other", "--pool-token-file", str(keyring))
    wait_for(lambda: vault.live_members() == 2 and other.live_members() == 1, what="the members")
    for service in (from_env, from_file):
        assert vault.token.encode() not in cmdline(service) and other.token.encode() not in cmdline(service)
    assert "warning" not in (tmp_path / "env.log").read_text() + (tmp_path / "file.log").read_text()

    # NAME:TOKEN still works, and says the token is in plain sight.
    daemon("argv", "--pool", f"vault:{vault.token}")
    wait_for(lambda: vault.live_members() == 3, what="the third member")
    assert "every user of this host can read it" in (tmp_path / "argv.log").read_text()


def test_a_pool_token_file_open_to_others_or_malformed_is_refused_at_start(
    tmp_path: Path,
    make_pool: Callable[..., Pool],  # noqa: F811
) -> None:
    vault = make_pool("vault", private=True)
    cases = {
        "open to others": (f"vault {vault.token}\n", 0o644, "chmod 600"),
        "not NAME TOKEN": (f"vault {vault.token} extra\n", 0o600, "line 1"),
        "a bad name": (f"Vault!! {vault.token}\n", 0o600, "line 1"),
        "named twice": ("vault a\nvault b\n", 0o600, "named twice"),
    }
    for case, (text, mode, says) in cases.items():
        path = token_file(tmp_path / "tokens", text, mode)
        argv = shoal_argv(
            "daemon",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--socket",
            str(tmp_path / "d.sock"),
            "--tracker",
            vault.tracker.url,
            "--pool",
            "vault",
            "--pool-token-file",
            str(path),
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (case, done.stderr)
        assert says in done.stderr and done.stderr.count("shoal: error") == 1, (case, done.stderr)
    assert vault.live_members() == 0


def test_a_daemon_joins_and_leaves_pools_at_runtime(
    tmp_path: Path,
    make_pool: Callable[..., Pool],  # noqa: F811
    services: list[Service],
) -> None:
    lan = make_pool("lan")
    vault = make_pool("vault", private=True, tracker_service=lan.tracker)
    assert vault.token
    sock = tmp_path / "node" / "daemon.sock"
    service = start_daemon(tmp_path / "node" / "cache", sock, tracker=lan.tracker.url)
    services.append(service)
    assert lan.live_members() == 0

    joined = join_cli(sock, "lan")
    assert joined.returncode == 0 and "joined pool lan" in joined.stdout, joined.stderr
    assert lan.live_members() == 1  # the tracker took the member before the command returned
    again = join_cli(sock, "lan")
    assert again.returncode == 0 and "already a member" in again.stdout, again.stderr

    # A private pool: refused without its token (nothing joined), taken with it from the environment.
    refused = join_cli(sock, "vault")
    assert refused.returncode == 2 and "needs a token" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1
    with_token = join_cli(sock, "vault", env={"SHOAL_POOL_TOKEN": vault.token})
    assert with_token.returncode == 0, with_token.stderr
    assert vault.live_members() == 1
    assert DaemonClient(sock).status().pools == ["lan", "vault"]
    missing = join_cli(sock, "nosuch")
    assert missing.returncode == 2 and "no pool 'nosuch'" in missing.stderr, missing.stderr

    # Leaving: the tracker hears of it at once.
    left = join_cli(sock, "lan", command="leave")
    assert left.returncode == 0 and "left pool lan" in left.stdout, left.stderr
    assert lan.live_members() == 0
    not_member = join_cli(sock, "lan", command="leave")
    assert not_member.returncode == 2 and "not a member" in not_member.stderr, not_member.stderr
    assert DaemonClient(sock).status().pools == ["vault"]
    assert vault.token.encode() not in cmdline(service)

    # A private pool's token from a token file (mode 600), or NAME:TOKEN with a warning that ps shows it.
    filed = make_pool("filed", private=True, tracker_service=lan.tracker)
    shown = make_pool("shown", private=True, tracker_service=lan.tracker)
    assert filed.token and shown.token
    keyring = token_file(tmp_path / "pools.tokens", f"filed {filed.token}\n")
    from_file = join_cli(sock, "filed", "--pool-token-file", str(keyring))
    assert from_file.returncode == 0 and "joined pool filed" in from_file.stdout, from_file.stderr
    assert "warning" not in from_file.stderr and filed.live_members() == 1
    in_argv = join_cli(sock, f"shown:{shown.token}")
    assert in_argv.returncode == 0 and "joined pool shown" in in_argv.stdout, in_argv.stderr
    assert "every user of this host can read it" in in_argv.stderr and shown.live_members() == 1
    assert DaemonClient(sock).status().pools == ["filed", "shown", "vault"]

    # A runtime join lasts until the daemon stops (the README's rule): restarted, it is in no pool.
    service.stop()
    restarted = start_daemon(tmp_path / "node" / "cache", sock, tracker=lan.tracker.url)
    services.append(restarted)
    assert DaemonClient(sock).status().pools == []


def test_joining_a_pool_through_a_daemon_without_a_tracker_is_refused(tmp_path: Path, services: list[Service]) -> None:
    sock = tmp_path / "lone" / "daemon.sock"
    services.append(start_daemon(tmp_path / "lone" / "cache", sock))
    done = join_cli(sock, "lan")
    assert done.returncode == 2 and "no tracker" in done.stderr, done.stderr
    gone = join_cli(tmp_path / "nobody" / "daemon.sock", "lan")
    assert gone.returncode != 0 and "daemon" in gone.stderr, gone.stderr
