"""HTTPS origins, and the CA certificates ``shoal get`` loads only when it first needs them (shoal.http.tls).

A real TLS server on loopback with a certificate from a test CA (trustme); the client processes trust
that CA through ``SSL_CERT_FILE``, which is what loading the default certificates reads.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from shoal.testing.http import serving
from shoal.testing.origin import build_origin
from shoal.testing.processes import shoal_argv, write_random


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def https_origin(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An origin serving ``tmp_path/origin`` over https; yields its base URL and its directory."""
    root = tmp_path / "origin"
    root.mkdir()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with serving(build_origin(root), tls=context) as url:
        yield url, root


async def _run(argv: list[str], trusted: Path | None) -> tuple[int, str, str]:
    """Run ``argv`` trusting the CA file ``trusted`` (None: the system's certificates)."""
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    if trusted is not None:
        env["SSL_CERT_FILE"] = str(trusted)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


_PROBE = textwrap.dedent(
    """
    import asyncio, ssl, sys
    from shoal.http.tls import deferred_roots, load_roots_first
    with deferred_roots():
        import aiohttp
    # Outside the block contexts load their certificates again (the one CA of SSL_CERT_FILE).
    print("new context:", ssl.create_default_context().cert_store_stats()["x509_ca"])

    async def fetch(session):
        try:
            async with session.get(sys.argv[1]) as r:
                return f"{r.status} {await r.text()}"
        except aiohttp.ClientConnectorCertificateError:
            return "certificate not verified"

    async def main():
        async with aiohttp.ClientSession() as plain:
            print("plain:", await fetch(plain))
        async with aiohttp.ClientSession(middlewares=(load_roots_first,)) as session:
            print("with middleware:", await fetch(session))
        async with aiohttp.ClientSession() as plain:
            print("plain after:", await fetch(plain))

    asyncio.run(main())
    """
)


async def test_aiohttp_verifies_once_the_middleware_loaded_the_deferred_certificates(https_origin, ca_file):
    url, root = https_origin
    (root / "hello.txt").write_text("hello")
    code, out, err = await _run([sys.executable, "-c", _PROBE, f"{url}/hello.txt"], ca_file)
    assert code == 0, err
    assert out.splitlines() == [
        "new context: 1",
        "plain: certificate not verified",  # deferred: aiohttp's default context has no CA yet
        "with middleware: 200 hello",
        "plain after: 200 hello",  # the same default context, now with its certificates
    ]


async def test_get_from_an_https_origin_and_through_a_redirect_to_one(https_origin, ca_file, tmp_path):
    url, root = https_origin
    data = write_random(root / "f.bin", 3 << 20)

    code, _, err = await _run(shoal_argv("get", f"{url}/f.bin", "-o", str(tmp_path / "direct.bin"), "-q"), ca_file)
    assert code == 0, err
    assert (tmp_path / "direct.bin").read_bytes() == data

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{url}/{request.match_info['name']}")

    redirector = web.Application()
    redirector.router.add_get("/{name}", moved)
    async with serving(redirector) as plain_url:
        dest = tmp_path / "redirected.bin"
        code, _, err = await _run(shoal_argv("get", f"{plain_url}/f.bin", "-o", str(dest), "-q"), ca_file)
    assert code == 0, err
    assert dest.read_bytes() == data


async def test_an_untrusted_certificate_is_an_origin_failure_and_writes_nothing(https_origin, tmp_path):
    url, root = https_origin
    write_random(root / "f.bin", 1 << 20)
    out = tmp_path / "out"
    out.mkdir()
    # The system's certificates only: the test CA is not among them.
    code, _, err = await _run(shoal_argv("get", f"{url}/f.bin", "-o", str(out / "f.bin")), None)
    assert code == 4, err
    assert "certificate" in err
    assert list(out.iterdir()) == []
