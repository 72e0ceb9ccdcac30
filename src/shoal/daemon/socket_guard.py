"""Who may stand behind the daemon's control socket: the rules both ends check before trusting it.

``shoal get`` hands the daemon a URL with its origin headers (credentials, often) and believes what it
answers (a cache hit, a file placed). A socket in a place another user can write, or one another user's
process listens on, would receive those headers and could report a file that was never written. So:

- The socket's directory is this user's and grants nothing to anyone else (mode 0700 or stricter), as
  tmux and ssh-agent keep theirs: nobody else can create, rename or remove a socket in it. The daemon
  creates the directory so and refuses to start in one that is another user's or open to others (it does
  not change the mode of a directory it did not create: that directory was made for something else).
  The client refuses such a directory too, before connecting.
- After connecting, the client reads the listener's credentials from the kernel (``SO_PEERCRED``: the
  uid of the process that called ``listen``) and sends nothing unless it is this user or root.

The directory rule keeps a squatter out in advance; the credentials check holds even if the directory
was swapped between the check and the connection. The decisions take values (``directory_fault``,
``listener_fault``); this module only adds the ``stat`` and the ``getsockopt`` that feed them. Light on
purpose: ``shoal get`` runs it before every hand-off.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from pathlib import Path

from shoal.core.errors import ListenError, LocalIOError, UnsafeSocket

_CREDENTIALS = struct.Struct("3i")
"""``struct ucred``: pid, uid, gid."""


def directory_fault(directory: Path, *, is_dir: bool, owner: int, mode: int, uid: int) -> str | None:
    """Why a socket in ``directory`` (of that owner and mode) cannot be trusted by user ``uid``; None if
    it can."""
    if not is_dir:
        return f"{directory} is not a directory"
    if owner != uid:
        return f"{directory} belongs to uid {owner}, not to this user (uid {uid})"
    if mode & 0o077:
        return (
            f"{directory} has mode {stat.S_IMODE(mode):04o}: other users could replace the socket in it "
            f"(it must be 0700; chmod 700 {directory})"
        )
    return None


def listener_fault(path: Path, *, listener: int, uid: int) -> str | None:
    """Why a daemon listening as user ``listener`` must not be sent anything by user ``uid``; None if it may."""
    if listener in (uid, 0):
        return None
    return f"the process listening on {path} runs as uid {listener}, not as this user (uid {uid}) or root"


def check_directory(path: Path) -> None:
    """Refuse (UnsafeSocket) a socket ``path`` whose directory exists and is not this user's alone. A
    directory that does not exist passes: nothing can listen in it, and connecting says so."""
    fault = _directory_fault(path.parent)
    if fault is not None:
        raise UnsafeSocket(f"refusing the daemon socket {path}: {fault}", path=str(path))


def _directory_fault(directory: Path) -> str | None:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot check {directory}: {exc.strerror}"
    return directory_fault(
        directory, is_dir=stat.S_ISDIR(st.st_mode), owner=st.st_uid, mode=st.st_mode, uid=os.geteuid()
    )


def check_listener(sock: socket.socket, path: Path) -> None:
    """Refuse (UnsafeSocket) a connected socket whose listener is another user (not root)."""
    _, listener, _ = _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
    fault = listener_fault(path, listener=listener, uid=os.geteuid())
    if fault is not None:
        raise UnsafeSocket(f"refusing the daemon socket {path}: {fault}", path=str(path))


def connect(path: Path, timeout: float | None) -> socket.socket:
    """A connection to the daemon at ``path``, made only after both checks pass: UnsafeSocket when one
    fails (nothing was sent), an OSError as ``connect`` raises it when nothing listens there."""
    check_directory(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        check_listener(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def prepare_directory(path: Path) -> None:
    """The daemon's side: create the directory of the socket ``path`` with mode 0700 (its parents as the
    umask says), or refuse (ListenError) an existing one that is another user's or open to others."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalIOError(f"cannot create {path.parent}: {exc.strerror}", path=str(path.parent)) from None
    fault = _directory_fault(path.parent)
    if fault is not None:
        raise ListenError(f"cannot listen on {path}: {fault}", address=str(path))
