"""A throw-away PostgreSQL cluster (tests, benchmarks): initdb in a temp folder, loopback only.

PostgreSQL refuses to run as root, and CI runs as root, so the cluster belongs to the package's
`postgres` user (or `nobody`) through `runuser`. It listens on 127.0.0.1 and a socket in its
own folder, trusts local connections (nothing else can reach it) and is removed afterwards.
Server binaries: `bin_dir()` (PATH, else Debian's /usr/lib/postgresql/<version>/bin).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def bin_dir() -> Path | None:
    """Folder of PostgreSQL's server binaries (initdb, pg_ctl, createdb), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        return candidate.parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> tuple[list[str], str | None]:
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists")


@contextmanager
def postgres_cluster(bin_dir: Path, db: str = "dagster"):
    """Yield a `postgresql://` URL of a fresh database; stop and delete the cluster after."""
    prefix, user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="wsovvis-pg-"))
    if user:
        shutil.chown(root, user=user)
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, cwd=root)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust",
            "-E", "UTF8", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
            "-o", f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=200",
            "start")
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", db)
        # explicit driver: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which
        # dagster-postgres does not install (it needs psycopg2)
        yield f"postgresql+psycopg2://dagster@127.0.0.1:{port}/{db}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
