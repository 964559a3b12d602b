"""The predictor worker's local socket: reachable by its owner only, robust to bad peers.

- The socket is a file in a folder only the owner can enter (mode 0700, owned by this uid):
  `<state_dir>/worker.sock`, or, when that path is too long for AF_UNIX (107 bytes),
  `<tmp>/wsovvis-<uid>/worker-<hash>.sock`. A folder owned by someone else, or open to others,
  is refused with `SocketDirError` naming it (someone else holds the name), never used.
- Each connection's peer uid is checked (SO_PEERCRED) before anything is read; then the
  `multiprocessing.connection` HMAC handshake with the worker's key runs in a thread of its own
  under a receive timeout, so a silent or wrong-key peer is dropped after `HANDSHAKE_TIMEOUT_S`
  and never delays a run, and a failed handshake never stops the worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge
from pathlib import Path

from wsovvis_dagster.errors import WsovvisError

log = logging.getLogger(__name__)

SOCKET_NAME = "worker.sock"
HANDSHAKE_TIMEOUT_S = 10.0  # a peer that has not authenticated by then is dropped
_MAX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
# what a failed connection or handshake raises (a wrong key: AuthenticationError)
CONNECTION_ERRORS = (OSError, EOFError, AuthenticationError)


class SocketDirError(WsovvisError):
    """The worker's socket folder is not private to this user (someone else holds the name)."""


def socket_path(state_dir: Path) -> Path:
    """Where the worker of `state_dir` listens (the same in the run and in the worker)."""
    path = Path(state_dir).resolve() / SOCKET_NAME
    if len(os.fsencode(str(path))) <= _MAX_PATH:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"wsovvis-{os.getuid()}" / f"worker-{digest}.sock"


def private_dir(folder: Path) -> Path:
    """`folder`, created 0700 if missing; refused unless it is a real folder of this uid that
    no one else may enter (a folder we own with wider permissions is narrowed)."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SocketDirError(
            f"the predictor worker's socket folder {folder} is "
            + ("not a folder" if not stat.S_ISDIR(info.st_mode)
               else f"owned by uid {info.st_uid}, not by you (uid {os.getuid()})")
            + ": someone else holds the name, so no worker is started there. Remove it (or "
            "ask its owner to), or point TMPDIR / DAGSTER_HOME at a folder of your own")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700)
    return folder


def connect(state_dir: Path, key: bytes) -> Connection:
    """An authenticated connection to the worker of `state_dir` (OSError if none listens)."""
    return Client(str(socket_path(state_dir)), family="AF_UNIX", authkey=key)


def listen(state_dir: Path) -> socket.socket:
    """The worker's listening socket, in a private folder. A leftover socket file of a dead
    worker is replaced; one a live process answers on raises `SocketDirError`."""
    path = socket_path(state_dir)
    private_dir(path.parent)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: a killed worker's file
        else:
            raise SocketDirError(f"another process already listens on {path}: stop it "
                                 "(`wsovvis gpus --stop-workers`) before starting a worker")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _receive_timeout(sock: socket.socket, seconds: float) -> None:
    """A kernel receive timeout on the fd (it outlives `detach`, unlike `settimeout`)."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def accept_forever(listener: socket.socket, key: bytes,
                   deliver: Callable[[Connection], None],
                   timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Accept connections for ever; each one from this uid that passes the key handshake
    within `timeout_s` is passed to `deliver` (with the same receive timeout for its first
    message). Others are logged and closed; nothing a peer does stops the loop."""
    while True:
        try:
            raw, _ = listener.accept()
        except OSError as exc:
            log.warning("accept failed: %s", exc)
            continue
        try:
            uid = peer_uid(raw)
        except OSError as exc:
            log.warning("refused a connection: no peer credentials (%s)", exc)
            raw.close()
            continue
        if uid != os.getuid():
            log.warning("refused a connection from uid %s: only uid %s may use this worker",
                        uid, os.getuid())
            raw.close()
            continue
        threading.Thread(target=_authenticate, args=(raw, key, deliver, timeout_s),
                         daemon=True, name="handshake").start()


def _authenticate(raw: socket.socket, key: bytes, deliver: Callable[[Connection], None],
                  timeout_s: float) -> None:
    _receive_timeout(raw, timeout_s)
    conn = Connection(raw.detach())
    try:
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
    except CONNECTION_ERRORS as exc:
        log.warning("refused a connection (key handshake failed or timed out): %s",
                    type(exc).__name__)
        with contextlib.suppress(OSError):
            conn.close()
        return
    deliver(conn)
