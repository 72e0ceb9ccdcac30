"""What the command line says when something goes wrong: one line, the exit code the README gives, and
what to do where that is clear. Real processes, real sockets, real SQL servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_service
from shoal.testing.sockets import listening_ports
from tests.integration.conftest import Origin, run_get


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of stderr besides warnings (a service that started part of itself may have warned about
    its configuration first), checked to be a Shoal error."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("shoal: WARNING: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shoal: error: "), result.stderr
    return lines[0]


def run_shoal(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shoal_argv(*args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- cannot listen ---------------------------------------------------------------------------------------


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process's socket is bound to and listening on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


COMMANDS_THAT_LISTEN: dict[str, Callable[[int, Path], list[str]]] = {
    "tracker": lambda port, tmp: ["tracker", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite:///{tmp}/t.db"],
    "seed": lambda port, tmp: ["seed", str(tmp), "--host", "127.0.0.1", "--port", str(port), "--bt-port", "0",
                               "--state-dir", str(tmp / "state")],
    "seed --bt-port": lambda port, tmp: ["seed", str(tmp), "--host", "127.0.0.1", "--port", "0", "--bt-port",
                                         str(port), "--state-dir", str(tmp / "state")],
    "daemon": lambda port, tmp: ["daemon", "--listen", f"127.0.0.1:{port}", "--cache-dir", str(tmp / "cache"),
                                 "--socket", str(tmp / "daemon.sock")],
    "mirror manager": lambda port, tmp: ["mirror", "manager", "--config", str(tmp / "m.toml"), "--host", "127.0.0.1",
                                         "--port", str(port)],
}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS_THAT_LISTEN)
def test_a_port_in_use_is_exit_code_9_from_every_command(command: str, held_port: int, tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(f'[manager]\ndb = "sqlite:///{tmp_path}/mirrors.db"\n')
    result = run_shoal(*COMMANDS_THAT_LISTEN[command](held_port, tmp_path))
    assert result.returncode == 9, result.stderr
    line = one_error_line(result)
    assert f"cannot listen on 127.0.0.1:{held_port}: Address already in use" in line
    assert "choose another port" in line


def test_a_get_whose_listen_port_is_in_use_is_exit_code_9(
    held_port: int, tracker: Callable[..., Service], origin: Callable[..., Origin], tmp_path: Path
) -> None:
    src = origin()
    (src.root / "f.bin").write_bytes(b"x" * 1000)
    result = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", tracker().url,
                     "--listen", f"127.0.0.1:{held_port}")  # fmt: skip
    assert result.returncode == 9, result.stderr
    assert f"cannot listen on 127.0.0.1:{held_port}" in one_error_line(result)
    assert not (tmp_path / "f.bin").exists()


# -- a tracker URL that is not a tracker -----------------------------------------------------------------


HTML_SERVER = """
import asyncio
from aiohttp import web
from shoal.http.listen import serve

async def page(request):
    return web.Response(text="<html>\\n<body>\\n<h1>Welcome</h1>\\n</body>\\n</html>\\n", content_type="text/html")

app = web.Application()
app.router.add_route("*", "/{tail:.*}", page)
asyncio.run(serve(app, "127.0.0.1", 0, "web page"))
"""


@pytest.fixture
def web_page(services: list[Service]) -> Service:
    """An aiohttp server answering every request, whatever its method and path, with a 200 HTML page."""
    service = start_service([sys.executable, "-c", HTML_SERVER])
    services.append(service)
    return service


@pytest.fixture
def plain_http_server(tmp_path: Path) -> Iterator[str]:
    """Python's http.server: a 404 HTML page for a GET of a missing file, a 501 HTML page for a POST."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Port 0: the kernel picks it, and the server's listening socket tells which.
    (port,) = wait_until(lambda: proc.poll() is None and listening_ports(proc.pid), "http.server listening")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_get_with_a_web_page_for_a_tracker_says_so_in_one_line(
    web_page: Service, origin: Callable[..., Origin], tmp_path: Path
) -> None:
    src = origin()
    (src.root / "f.bin").write_bytes(b"x" * 1000)
    result = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", web_page.url)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert "<html>" not in line and "<h1>" not in line
    assert f"{web_page.url} answered a page (text/html), not the tracker API" in line
    assert "is that a Shoal tracker? give its base URL" in line


def test_get_with_a_plain_http_server_for_a_tracker_says_so_in_one_line(
    plain_http_server: str, origin: Callable[..., Origin], tmp_path: Path
) -> None:
    src = origin()
    (src.root / "f.bin").write_bytes(b"x" * 1000)
    result = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", plain_http_server)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert "<html" not in line.lower()
    assert f"{plain_http_server} answered 501" in line and "is that a Shoal tracker?" in line


def test_get_given_the_trackers_announce_url_asks_for_its_base_url(
    tracker: Callable[..., Service], origin: Callable[..., Origin], tmp_path: Path
) -> None:
    src = origin()
    (src.root / "f.bin").write_bytes(b"x" * 1000)
    announce = f"{tracker().url}/announce"
    result = run_get(src.url("f.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", announce)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert f"{announce} answered 404 Not Found" in line
    assert "give the tracker's base URL (http://HOST:PORT), not its BitTorrent /announce" in line


def test_pool_with_a_web_server_for_a_tracker_says_so_in_one_line(web_page: Service, plain_http_server: str) -> None:
    for server, answered in ((web_page.url, "a page (text/html)"), (plain_http_server, "501")):
        result = run_shoal("pool", "--tracker", server, "create", "lan")
        assert result.returncode == 3, result.stderr
        line = one_error_line(result)
        assert f"{server} answered {answered}" in line and "is that a Shoal tracker?" in line


def test_a_pool_token_on_the_command_line_is_warned_about_and_one_from_the_environment_is_not(
    web_page: Service,
) -> None:
    token = "0123456789abcdef0123"
    given = run_shoal("pool", "--tracker", web_page.url, "--token", token, "ls")
    assert "warning: --token is on the command line" in given.stderr and "$SHOAL_POOL_TOKEN" in given.stderr
    assert token not in given.stderr
    from_env = subprocess.run(
        shoal_argv("pool", "--tracker", web_page.url, "ls"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SHOAL_POOL_TOKEN": token},
    )
    assert from_env.returncode == given.returncode == 3, from_env.stderr  # the page is no tracker either way
    assert "warning" not in from_env.stderr


# -- databases -------------------------------------------------------------------------------------------


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def need_server(port: int, name: str) -> None:
    if not reachable(port):
        reason = f"no {name} on 127.0.0.1:{port}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.parametrize(
    ("port", "name", "db", "shown", "reason"),
    [
        (5432, "PostgreSQL", "postgresql://postgres@127.0.0.1:5432/shoal_no_such_db",
         "postgresql://postgres@127.0.0.1:5432/shoal_no_such_db", 'database "shoal_no_such_db" does not exist'),
        (3306, "MariaDB", "mysql://root:wrong-password@127.0.0.1:3306/test",
         "mysql://root:***@127.0.0.1:3306/test", "Access denied for user 'root'"),
    ],
)  # fmt: skip
def test_a_database_that_refuses_is_one_line_without_the_password(
    port: int, name: str, db: str, shown: str, reason: str
) -> None:
    need_server(port, name)
    result = run_shoal("tracker", "--host", "127.0.0.1", "--port", "0", "--db", db)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert f"cannot open the database {shown}: {reason}" in line
    assert "wrong-password" not in result.stderr and "sqlalche.me" not in result.stderr


# -- usage errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["get", "notaurl"], "get"),
        (["tracker", "--db", "foo://x"], "tracker"),
        (["demo", "--size", "1Q"], "demo"),
        (["cache", "--cache-dir", "{tmp}", "info", "zz"], "cache info"),
        (["mirror", "ctl", "start", "b@d"], "mirror ctl start"),
        (["pool", "--tracker", "ftp://foo", "members", "lan"], "pool"),
        (["seed", "--tracker", "ftp://foo", "{tmp}"], "seed"),
    ],
)
def test_every_usage_error_names_the_help_to_read(args: list[str], hint: str, tmp_path: Path) -> None:
    result = run_shoal(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    assert one_error_line(result).endswith(f"(see 'python -m shoal {hint} --help')")  # shoal_argv runs python -m


# -- interrupted -----------------------------------------------------------------------------------------


def test_an_interrupted_get_says_a_rerun_resumes_and_it_does(origin: Callable[..., Origin], tmp_path: Path) -> None:
    src = origin("--rate", "2M")
    data = os.urandom(8 << 20)
    (src.root / "f.bin").write_bytes(data)
    out = tmp_path / "f.bin"
    proc = subprocess.Popen(shoal_argv("get", src.url("f.bin"), "-o", str(out)), stderr=subprocess.PIPE, text=True)
    state = tmp_path / ".f.bin.shoal-state"
    deadline = time.monotonic() + 30
    while not state.exists():  # a piece is verified and recorded: there is something to resume
        assert proc.poll() is None and time.monotonic() < deadline, "no piece was recorded"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert stderr.splitlines()[-1] == (
        "shoal: interrupted; run the same command again to resume from the pieces verified so far"
    )
    sent = src.bytes_sent()
    rerun = run_get(src.url("f.bin"), "-o", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == data
    assert src.bytes_sent() - sent < len(data)  # it resumed
