import pytest

from shoal.core.hosts import is_loopback_host


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.7", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", "[::2]"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)
