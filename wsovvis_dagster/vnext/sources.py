"""Pinned VNext / CutLER commits and the git checkout that brings a folder to them.

A source is a git URL, a local clone or a bare mirror. Nothing from a checkout is run here:
git only moves files, and callers build or import from it only after `checkout_pinned` has
verified that HEAD is the pinned commit.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import SourceCheckoutError

_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class RepoPin:
    """One upstream repository at one commit.

    sparse_exclude: gitignore-style patterns left out of the work tree. Demo GIFs are excluded
    by default: the code never reads them, and some mirrors store repositories without their
    largest files, which would make a full checkout fail.
    """

    name: str
    url: str
    commit: str
    sparse_exclude: tuple[str, ...] = ("*.gif",)


# The commits our patch was written and tested against (VNext: "Update README.md",
# CutLER: "Update README.md" after the videocutler checkpoint links moved).
VNEXT = RepoPin("VNext", "https://github.com/wjf5203/VNext.git",
                "db338339b3b2a303a463257e042635993c19f173")
CUTLER = RepoPin("CutLER", "https://github.com/facebookresearch/CutLER.git",
                 "cca0a270cf68399efc8fd50df426b6d806e39416")


@dataclass(frozen=True)
class CheckoutResult:
    """Where a pinned checkout ended up and what had to be done to get it there.

    action: "cloned" (new folder), "moved" (existing clone brought to the pin) or "unchanged"
    (already at the pin; the work tree, with our patch, is left as it is).
    """

    name: str
    path: Path
    commit: str
    source: str
    action: str


def _git(args: list[str], cwd: Path | None = None, *, text: bool = True
         ) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    cmd = ["git", "-c", "advice.detachedHead=false", "-c", "core.hooksPath=/dev/null", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=text, check=False)


def _run(args: list[str], cwd: Path | None, what: str) -> str:
    proc = _git(args, cwd)
    if proc.returncode != 0:
        raise SourceCheckoutError(
            f"{what} failed (git {' '.join(args)} in {cwd or '.'}): {proc.stderr.strip()[-800:]}"
        )
    return proc.stdout.strip()


def head_commit(path: Path) -> str | None:
    """The commit checked out in `path`, or None (not a git checkout, or no commit yet)."""
    proc = _git(["rev-parse", "--verify", "-q", "HEAD"], path)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _has_commit(path: Path, commit: str) -> bool:
    return _git(["cat-file", "-e", f"{commit}^{{commit}}"], path).returncode == 0


def _normalise_source(source: str) -> str:
    """Local paths become absolute (git resolves them against the clone's folder otherwise)."""
    if "://" in source or source.startswith("git@"):
        return source
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceCheckoutError(
            f"source {source} is neither a URL nor an existing folder: give a git URL, a local "
            "clone or a bare mirror of the repository"
        )
    return str(path.resolve())


def checkout_pinned(pin: RepoPin, dest: Path, source: str | None = None) -> CheckoutResult:
    """Bring `dest` to `pin.commit` from `source` (default `pin.url`); verify HEAD after.

    An existing clone already at the pin is left untouched (our patch in it stays); one at
    another commit is moved to the pin, discarding local edits to tracked files (the patch is
    re-applied afterwards by `apply_patch`).
    """
    if not _SHA.match(pin.commit):
        raise SourceCheckoutError(
            f"{pin.name}: pinned commit {pin.commit!r} is not a full 40-hex SHA; pin an exact "
            "commit"
        )
    src = _normalise_source(source or pin.url)
    dest = Path(dest)
    if dest.exists() and not (dest / ".git").exists():
        raise SourceCheckoutError(
            f"{dest} exists but is not a git checkout: move it away (it is not ours to delete) "
            f"and materialise again to clone {pin.name} from {src}"
        )
    if dest.exists() and head_commit(dest) == pin.commit:
        return CheckoutResult(pin.name, dest, pin.commit, src, "unchanged")

    action = "moved"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _run(["clone", "-q", "--no-checkout", src, str(dest)], None, f"cloning {pin.name}")
        action = "cloned"
    if not _has_commit(dest, pin.commit):
        fetch = _git(["fetch", "-q", src, pin.commit], dest)
        if fetch.returncode != 0 or not _has_commit(dest, pin.commit):
            raise SourceCheckoutError(
                f"{pin.name}: commit {pin.commit} is not in {src} ({fetch.stderr.strip()[-300:]}); "
                "point the source at a repository or mirror that has it"
            )
    patterns = ["/*", *(f"!{p}" for p in pin.sparse_exclude)]
    _run(["sparse-checkout", "set", "--no-cone", *patterns], dest, f"sparse set-up of {pin.name}")
    _run(["checkout", "-q", "--force", "--detach", pin.commit], dest, f"checking out {pin.name}")
    head = head_commit(dest)
    if head != pin.commit:
        raise SourceCheckoutError(
            f"{dest} is at {head}, not the pinned {pin.commit}, after checkout; inspect it by hand"
        )
    return CheckoutResult(pin.name, dest, pin.commit, src, action)


def tracked_changes(path: Path) -> list[str]:
    """Paths of tracked files that differ from HEAD (`git diff --name-only`), sorted."""
    out = _run(["diff", "--name-only", "HEAD"], Path(path), f"listing changes in {path}")
    return sorted(line for line in out.splitlines() if line)


def committed_bytes(root: Path, rel: str) -> bytes:
    """File `rel` of checkout `root` as HEAD has it (the upstream text under our patch)."""
    proc = _git(["show", f"HEAD:{rel}"], Path(root), text=False)
    if proc.returncode != 0:
        raise SourceCheckoutError(f"reading {rel} at HEAD of {root} failed: "
                                  f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    return proc.stdout


def diff_stat(path: Path) -> str:
    """`git diff --shortstat` of the work tree against HEAD (tracked files only)."""
    return _run(["diff", "--shortstat", "HEAD"], Path(path), f"diff summary of {path}")
