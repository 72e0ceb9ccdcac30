"""Fleet credentials and tickets (core.tickets), with values and the fake clock."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import CredentialRefused, FleetRefused, PoolRefused, UsageError
from shoal.core.messages import AnnounceResponse
from shoal.core.tickets import (
    CLOCK_SKEW,
    CREDENTIAL_TTL,
    TICKET_INTERVALS,
    FleetKey,
    parse_tokens,
    ticket_expiry,
)
from shoal.core.tracker_replies import read_reply
from shoal.http.credentials import Credentials, load, read_token_file
from shoal.testing.clock import FakeClock

TOKEN = b"0123456789abcdef0123456789abcdef"
TASK = "a" * 64
OTHER_TASK = "b" * 64
PEER = "peer.one-2"


@pytest.fixture
def key() -> FleetKey:
    return FleetKey.from_token(TOKEN)


def refusal(call: object) -> str:
    assert callable(call)
    with pytest.raises(CredentialRefused) as caught:
        call()
    return str(caught.value)


# -- tickets ---------------------------------------------------------------------------------------------


def test_a_ticket_admits_its_peer_to_its_task_until_it_runs_out(key: FleetKey) -> None:
    clock = FakeClock()
    ticket = key.ticket(TASK, PEER, ticket_expiry(clock(), interval=5.0, peer_ttl=15.0))
    assert key.check_ticket(ticket, TASK, clock()) == PEER
    clock.advance(TICKET_INTERVALS * 5.0)
    assert key.check_ticket(ticket, TASK, clock()) == PEER
    clock.advance(CLOCK_SKEW + 1)
    assert "ran out" in refusal(lambda: key.check_ticket(ticket, TASK, clock()))


def test_a_ticket_for_another_task_is_refused(key: FleetKey) -> None:
    ticket = key.ticket(OTHER_TASK, PEER, ticket_expiry(FakeClock()(), 5.0, 15.0))
    assert "not valid for this task" in refusal(lambda: key.check_ticket(ticket, TASK, FakeClock()()))


def test_a_ticket_of_another_fleet_is_refused(key: FleetKey) -> None:
    stranger = FleetKey.from_token(b"another fleet's token, long enough")
    ticket = stranger.ticket(TASK, PEER, ticket_expiry(FakeClock()(), 5.0, 15.0))
    assert "not valid for this task" in refusal(lambda: key.check_ticket(ticket, TASK, FakeClock()()))


def test_an_altered_ticket_is_refused(key: FleetKey) -> None:
    now = FakeClock()()
    expires = ticket_expiry(now, 5.0, 15.0)
    ticket = key.ticket(TASK, PEER, expires)
    _, mac, peer = ticket.split(".", 2)
    later = f"{expires + 3600}.{mac}.{peer}"  # a longer life
    other_peer = f"{expires}.{mac}.someone-else"  # another peer's name
    for forged in (later, other_peer):
        assert "not valid" in refusal(lambda forged=forged: key.check_ticket(forged, TASK, now))


@pytest.mark.parametrize(
    "value",
    ["", None, "x", "1.2", "12.abc", "99999999999999.abc.peer", "12..peer", "12.é.peer", "1é.abc.p", "12.a.\udc80"],
)
def test_a_missing_or_malformed_ticket_is_refused(key: FleetKey, value: str | None) -> None:
    assert refusal(lambda: key.check_ticket(value, TASK, FakeClock()()))


@given(st.text(max_size=80))
def test_no_string_is_taken_for_a_ticket_or_a_credential(value: str) -> None:
    # Whatever a stranger sends, each check refuses it with CredentialRefused (and never crashes).
    key = FleetKey.from_token(TOKEN)
    with pytest.raises(CredentialRefused):
        key.check_ticket(value, TASK, FakeClock()())
    with pytest.raises(CredentialRefused):
        key.check_credential(value, FakeClock()())


def test_a_ticket_lasts_a_few_intervals_and_at_least_a_peer_ttl() -> None:
    assert ticket_expiry(1000.0, interval=5.0, peer_ttl=15.0) == 1000 + TICKET_INTERVALS * 5
    assert ticket_expiry(1000.0, interval=0.5, peer_ttl=15.0) == 1015
    assert ticket_expiry(1000.2, interval=5.0, peer_ttl=15.0) == 1021  # whole seconds, rounded up


# -- request credentials ---------------------------------------------------------------------------------


def test_a_request_credential_is_good_for_its_ttl_and_the_skew(key: FleetKey) -> None:
    clock = FakeClock()
    credential = key.credential(clock())
    key.check_credential(credential, clock())
    key.check_credential(credential, clock() - CLOCK_SKEW)  # the tracker's clock is behind
    clock.advance(CREDENTIAL_TTL + CLOCK_SKEW)
    key.check_credential(credential, clock())
    clock.advance(1)
    assert "old" in refusal(lambda: key.check_credential(credential, clock()))
    assert "ahead" in refusal(lambda: key.check_credential(key.credential(clock() + CLOCK_SKEW + 1), clock()))


def test_a_request_credential_of_another_fleet_or_none_is_refused(key: FleetKey) -> None:
    now = FakeClock()()
    stranger = FleetKey.from_token(b"another fleet's token, long enough")
    assert "not this fleet's" in refusal(lambda: key.check_credential(stranger.credential(now), now))
    assert "--fleet-token-file" in refusal(lambda: key.check_credential(None, now))
    for malformed in ("2.1.x", "1.x.y", "1.12", "1.12.", "1.12.\udc80", "1.1234567890123.abc"):
        assert refusal(lambda malformed=malformed: key.check_credential(malformed, now))


def test_the_token_itself_never_travels(key: FleetKey) -> None:
    now = FakeClock()()
    sent = key.credential(now) + key.ticket(TASK, PEER, 1) + repr(key)
    assert TOKEN.decode() not in sent and TOKEN.hex() not in sent
    assert key.request_key != key.ticket_key  # a ticket cannot stand in for a request credential


# -- passkeys ---------------------------------------------------------------------------------------------


def test_a_passkey_names_its_holder_and_only_the_fleet_makes_one(key: FleetKey) -> None:
    passkey = key.passkey("host-7.rack2")
    assert key.check_passkey(passkey) == "host-7.rack2"
    assert key.check_passkey(key.passkey("10.0.0.7")) == "10.0.0.7"
    assert key.check_passkey(key.passkey("fe80::1")) == "fe80::1"
    stranger = FleetKey.from_token(b"another fleet's token, long enough")
    assert "not this fleet's" in refusal(lambda: key.check_passkey(stranger.passkey("host-7.rack2")))
    mac = passkey.rpartition(".")[2]
    assert "not this fleet's" in refusal(lambda: key.check_passkey(f"host-8.rack2.{mac}"))  # another holder
    assert "shoal passkey" in refusal(lambda: key.check_passkey(None))
    for malformed in ("", "nodot", ".mac", "host.", "a b.mac", "h\udc80.mac", "x" * 65 + ".mac"):
        assert refusal(lambda malformed=malformed: key.check_passkey(malformed))
    with pytest.raises(ValueError, match="holder"):
        key.passkey("a/b")


def test_a_passkey_is_not_a_ticket_nor_a_credential(key: FleetKey) -> None:
    now = FakeClock()()
    holder = "1700000000"  # a holder that looks like a credential's time
    mac = key.passkey(holder).rpartition(".")[2]
    assert refusal(lambda: key.check_credential(f"1.{holder}.{mac}", now))


# -- rotation ----------------------------------------------------------------------------------------------

OLD, NEW = b"the old token of the fleet, 0123", b"the new token of the fleet, 4567"


@pytest.mark.parametrize("make", ["credential", "ticket", "passkey"])
def test_rotation_the_first_token_signs_and_every_token_verifies(make: str) -> None:
    now = FakeClock()()
    old, new = FleetKey((OLD,)), FleetKey((NEW,))
    overlap, rolled = FleetKey((OLD, NEW)), FleetKey((NEW, OLD))

    def made(by: FleetKey) -> str:
        if make == "credential":
            return by.credential(now)
        return by.ticket(TASK, PEER, int(now) + 60) if make == "ticket" else by.passkey("host")

    def checks(value: str, by: FleetKey) -> bool:
        try:
            if make == "credential":
                by.check_credential(value, now)
            elif make == "ticket":
                by.check_ticket(value, TASK, now)
            else:
                by.check_passkey(value)
        except CredentialRefused:
            return False
        return True

    # Every step of the procedure: each host's credential checks at every other host of the same step and
    # the steps beside it; once the old token is gone, what it made is refused.
    assert made(overlap) == made(old) and made(rolled) == made(new)
    for maker, checker in [(old, overlap), (overlap, old), (overlap, rolled), (rolled, overlap), (rolled, new)]:
        assert checks(made(maker), checker), (maker, checker)
    assert checks(made(new), overlap) and not checks(made(old), new)


def test_replacing_the_tokens_takes_effect_in_place() -> None:
    now = FakeClock()()
    key = FleetKey((OLD,))
    held = key  # what every part of a process holds: the same object
    credential = key.credential(now)
    key.replace_tokens((NEW, OLD))
    held.check_credential(credential, now)
    key.replace_tokens((NEW,))
    assert "not this fleet's" in refusal(lambda: held.check_credential(credential, now))
    with pytest.raises(ValueError):
        key.replace_tokens(())
    assert "OLD" not in repr(key) and repr(key) == "FleetKey(1 token)"


# -- token files -----------------------------------------------------------------------------------------


def test_a_token_must_be_long_enough() -> None:
    assert parse_tokens(b"  " + TOKEN + b"\n", "f") == (TOKEN,)
    with pytest.raises(UsageError, match="token 2: a fleet token has at least 16 bytes"):
        parse_tokens(TOKEN + b"\nshort\n", "f")
    with pytest.raises(UsageError, match="no fleet token"):
        parse_tokens(b"# a comment only\n\n", "f")


def test_a_token_file_open_to_others_is_refused(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "token")
    with open(path, "wb") as file:
        file.write(TOKEN)
    os.chmod(path, 0o640)
    with pytest.raises(UsageError, match=r"open to other users .*chmod 600"):
        read_token_file(path)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    assert read_token_file(path).request_key == FleetKey.from_token(TOKEN).request_key
    with pytest.raises(UsageError, match="cannot read the fleet token file"):
        read_token_file(os.path.join(tmp_path, "missing"))


def test_tls_options_are_checked_together(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(UsageError, match="go together"):
        load(cert="c.pem")
    with pytest.raises(UsageError, match="needs --tls-cert"):
        load(client_ca="ca.pem")
    with pytest.raises(UsageError, match=r"cannot use the CA certificates in .*missing\.pem"):
        load(ca=os.path.join(tmp_path, "missing.pem"))
    assert load() == Credentials()  # nothing given: a trusted LAN


# -- what a peer makes of the tracker's refusal ----------------------------------------------------------


def _refused(message: str, status: int) -> Exception:
    return PoolRefused(message, status=status)


def test_a_fleet_401_is_fleet_refused_and_a_pools_401_is_the_callers() -> None:
    body = b'{"error": "the fleet credential is not this fleet\'s", "credential": "fleet"}'
    with pytest.raises(FleetRefused, match="refused the fleet credential: the fleet credential is not"):
        read_reply("http://t", 401, "Unauthorized", "application/json", body, AnnounceResponse, _refused)
    pool = b'{"error": "this pool needs a token"}'
    with pytest.raises(PoolRefused):
        read_reply("http://t", 401, "Unauthorized", "application/json", pool, AnnounceResponse, _refused)
    assert FleetRefused.exit_code == 3
