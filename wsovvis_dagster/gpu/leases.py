"""Which GPU a run uses: one exclusive lease per device, held by a `flock` on a lease file.

Dagster caps *how many* GPU runs execute at once (the `gpu` pool); it does not say *which*
device each gets. A run leases one free index among the configured GPUs by taking an exclusive
`flock` on `<slot_dir>/gpu<index>.lock` and keeps it until `release()`. The kernel drops a
flock when its holder dies, so a run killed with SIGKILL (or OOM-killed, or a crashed node
rebooted) frees its device at once: no pid files to clean, no stale-lease heuristics.

Lease files carry the holder (run id, pid, host, time) for humans; the lock, not the text, is
the truth. `slot_dir` must be on a local filesystem of the machine that owns the GPUs (flock
over NFS is unreliable); one machine = one slot folder.

On a cluster (runs placed by Ray, which sets each run's `CUDA_VISIBLE_DEVICES`), a lease is
keyed by node and *physical* device: `<slot_dir>/<node>/gpu<physical id>.lock`, so an orphaned
run still holding a device blocks a retry that lands on that same device, and two nodes
sharing one folder (simulated hosts) never collide.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wsovvis_dagster.errors import WsovvisError

LOCK_PATTERN = "gpu{index}.lock"
SLOT_PATTERN = "gpu{index}.slot{slot}.lock"  # slots 1.. of a GPU shared by several runs
_LOCK_NAME = re.compile(r"gpu(\d+)(?:\.slot(\d+))?\.lock")  # both patterns, read back
SLOTS_FOLDER = "gpu_slots"  # the lease folder under DAGSTER_HOME


def lock_name(index: int, slot: int = 0) -> str:
    """Lease file of (device, slot); slot 0 keeps the one-run-per-GPU name."""
    return LOCK_PATTERN.format(index=index) if slot == 0 else SLOT_PATTERN.format(
        index=index, slot=slot)


def parse_lock_name(name: str) -> tuple[int, int] | None:
    """(device index, slot) of a lease file named by `lock_name`; None for any other name
    (e.g. a GPU UUID's lease on a cluster node)."""
    found = _LOCK_NAME.fullmatch(name)
    return (int(found[1]), int(found[2] or 0)) if found else None


def leased_indices(slot_dir: str | Path) -> tuple[int, ...]:
    """The devices with a lease file (slot 0) in `slot_dir`: those runs have leased so far."""
    names = (parse_lock_name(p.name) for p in Path(slot_dir).glob("gpu*.lock"))
    return tuple(sorted(index for index, slot in filter(None, names) if slot == 0))


def resolve_slot_dir(configured: str | Path = "", home: str | Path | None = None
                     ) -> Path | None:
    """The lease folder: `configured` if set, else `<home>/gpu_slots` (home: the Dagster
    instance's root, DAGSTER_HOME), else None (`acquire_gpu_slot`'s temporary default)."""
    if configured:
        return Path(configured)
    return Path(home) / SLOTS_FOLDER if home else None


class GpuSlotError(WsovvisError):
    """The GPU list is malformed, or no device became free within the wait limit."""


def parse_gpus(gpus: str) -> tuple[int, ...]:
    """'0,1,2,3' -> (0, 1, 2, 3); '' -> () (CPU); 'auto' -> every device torch can see.

    Indices are what `cuda:N` means in the run's process (i.e. after CUDA_VISIBLE_DEVICES).
    """
    text = (gpus or "").strip()
    if not text:
        return ()
    if text.lower() == "auto":
        return tuple(range(count_cuda_devices()))
    indices = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise GpuSlotError(
                f"bad GPU list {gpus!r}: expected comma-separated indices like '0,1,2,3', "
                "'auto' or '' for CPU (env WSOVVIS_GPUS)"
            )
        indices.append(int(part))
    if len(set(indices)) != len(indices):
        raise GpuSlotError(f"bad GPU list {gpus!r}: an index appears twice")
    return tuple(indices)


def count_cuda_devices() -> int:
    """Devices torch can see (0 without torch or without CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass
class GpuLease:
    """An exclusive hold on GPU `index` until `release()` (or until the holding process dies)."""

    index: int
    path: Path | None = None
    _fd: int | None = field(default=None, repr=False)
    slot: int = 0  # which of the device's `runs_per_gpu` slots this lease holds
    node: str = ""  # cluster node holding it ("" on one host)
    physical: str = ""  # the device's id on its node (CUDA_VISIBLE_DEVICES entry)

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the device back. Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the holder line goes before the lock does
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(path: Path) -> int | None:
    """Open `path` and take an exclusive flock without waiting; the fd, or None if held."""
    # O_CLOEXEC: a subprocess the run starts must not inherit (and so prolong) the lease
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


CLUSTER_ENV = "WSOVVIS_CLUSTER"  # set by a cluster's run launcher (Ray) in each run
NODE_ENV = "WSOVVIS_NODE_NAME"  # a node's name, if not its hostname (simulated hosts)


def node_name(env=os.environ) -> str:
    """This machine's name as a cluster node: WSOVVIS_NODE_NAME, else the hostname."""
    return env.get(NODE_ENV) or socket.gethostname()


def cluster_node(env=os.environ) -> str:
    """The node to key GPU leases by: `node_name()` in a run placed on a cluster, else ""
    (one host: leases stay `<slot_dir>/gpu<N>.lock`)."""
    return node_name(env) if env.get(CLUSTER_ENV) else ""


def physical_gpu_id(index: int, env=os.environ) -> str:
    """The physical id of visible device `index`: its CUDA_VISIBLE_DEVICES entry (an index or
    a GPU UUID), or `index` itself when the variable is unset."""
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not env.get("CUDA_VISIBLE_DEVICES"):
        return str(index)
    if index >= len(visible):
        raise GpuSlotError(f"device cuda:{index} is not visible: CUDA_VISIBLE_DEVICES="
                           f"{env.get('CUDA_VISIBLE_DEVICES')!r} (check WSOVVIS_GPUS)")
    return visible[index]


def _write_holder(fd: int, run_id: str, **extra: str) -> None:
    holder = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
              "since": round(time.time(), 3), **{k: v for k, v in extra.items() if v}}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def slot_order(indices: tuple[int, ...], runs_per_gpu: int) -> list[tuple[int, int]]:
    """(device index, slot) in the order runs lease them: slot 0 of every device, then slot 1,
    ..., so runs spread over the devices before any two share one."""
    return [(index, slot) for slot in range(max(1, runs_per_gpu)) for index in indices]


def acquire_gpu_slot(
    gpus: str,
    *,
    run_id: str,
    slot_dir: str | Path | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
    runs_per_gpu: int = 1,
    node: str = "",
) -> GpuLease | None:
    """Lease one free GPU among `gpus` ('0,1,2,3', 'auto', or '' for CPU -> None) for `run_id`.

    Each device offers `runs_per_gpu` slots, each an exclusive lease of its own (a lock file
    per (device, slot)). Slot 0 of every device is tried first, then slot 1, ..., so runs
    spread over the devices before any two share one, and concurrent runs never hold the same
    (device, slot). If all are held it polls every `poll_s` for up to `timeout_s` (more runs than
    GPUs only happens when the Dagster `gpu` pool limit exceeds the device count), then raises
    `GpuSlotError` naming the holders. `slot_dir` defaults to `<tmp>/wsovvis_gpu_slots`; Dagster
    runs pass `<DAGSTER_HOME>/gpu_slots` (`resolve_slot_dir`). With `node` (a cluster node's name),
    leases are `<slot_dir>/<node>/gpu<physical id>.lock` (module docstring).
    """
    indices = parse_gpus(gpus)
    if not indices:
        return None
    if runs_per_gpu < 1:
        raise GpuSlotError(f"runs_per_gpu must be >= 1, got {runs_per_gpu} "
                           "(env WSOVVIS_RUNS_PER_GPU)")
    folder = Path(slot_dir) if slot_dir else Path(tempfile.gettempdir()) / "wsovvis_gpu_slots"
    physical = {i: physical_gpu_id(i) if node else "" for i in indices}
    if node:
        folder = folder / node
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for index, slot in slot_order(indices, runs_per_gpu):
            ident = physical[index]
            path = folder / (lock_name(index, slot) if not ident else
                             lock_name(int(ident), slot) if ident.isdigit() else
                             f"gpu-{ident}.slot{slot}.lock")  # a GPU UUID
            fd = _try_lock(path)
            if fd is not None:
                _write_holder(fd, run_id, node=node, physical=physical[index])
                return GpuLease(index, path, fd, slot, node, physical[index])
        if time.monotonic() >= deadline:
            held = slot_holders(gpus, folder, runs_per_gpu=runs_per_gpu)
            busy = ", ".join(f"{i}: {h}" for i, h in held.items())
            raise GpuSlotError(
                f"no free GPU among {list(indices)} in {folder} after {timeout_s:.0f} s "
                f"(holders: {busy}). Lower the `gpu` pool limit (WSOVVIS_GPU_LIMIT) to the "
                "number of GPUs times runs_per_gpu, or free a device"
            )
        time.sleep(poll_s)


def lease_gpus(gpus: str, count: int, *, run_id: str, slot_dir: str | Path | None,
               timeout_s: float, runs_per_gpu: int = 1, node: str = "") -> list[GpuLease]:
    """`count` leases among `gpus` (`acquire_gpu_slot`, [] for '' = CPU), all or none: a
    training job's devices come from the same lock files as the mask runs', so the two never
    share a device."""
    leases: list[GpuLease] = []
    try:
        for _ in range(count):  # each call takes the first device this process does not hold
            lease = acquire_gpu_slot(gpus, run_id=run_id, slot_dir=slot_dir, timeout_s=timeout_s,
                                     runs_per_gpu=runs_per_gpu, node=node)
            if lease is None:
                break
            leases.append(lease)
    except BaseException:
        for lease in leases:
            lease.release()
        raise
    return leases


@dataclass(frozen=True)
class LeaseRequest:
    """Which GPU a run may lease, and how long it waits (`acquire_gpu_slot`'s arguments)."""

    gpus: str = ""  # '0,1,2,3', 'auto', or '' for CPU (no lease)
    slot_dir: Path | None = None  # the lease folder (`resolve_slot_dir`); also the workers'
    runs_per_gpu: int = 1
    timeout_s: float = 3600.0
    node: str = ""  # a cluster node's name: leases keyed by node + physical device

    def acquire(self, run_id: str) -> GpuLease | None:
        """One lease for `run_id` (a mask run), None on CPU."""
        return acquire_gpu_slot(self.gpus, run_id=run_id, slot_dir=self.slot_dir,
                                timeout_s=self.timeout_s, runs_per_gpu=self.runs_per_gpu,
                                node=self.node)

    def acquire_many(self, run_id: str, count: int) -> list[GpuLease]:
        """`count` leases for `run_id` (a training job's devices), all or none."""
        return lease_gpus(self.gpus, count, run_id=run_id, slot_dir=self.slot_dir,
                          timeout_s=self.timeout_s, runs_per_gpu=self.runs_per_gpu,
                          node=self.node)


def slot_holders(
    gpus: str, slot_dir: str | Path, *, runs_per_gpu: int = 1
) -> dict:
    """Who holds each lease right now: holder record, or None when free.

    Keys are device indices with `runs_per_gpu=1`, else `(index, slot)` pairs. A lease file
    whose lock is free is free, whatever text a killed holder left in it.
    """
    holders: dict = {}
    for slot in range(runs_per_gpu):
        for index in parse_gpus(gpus):
            key = index if runs_per_gpu == 1 else (index, slot)
            holders[key] = _holder(Path(slot_dir) / lock_name(index, slot))
    return holders


def slot_free(slot_dir: str | Path, index: int, slot: int = 0) -> bool:
    """Whether no run holds the lease of (device `index`, `slot`) in `slot_dir` right now."""
    return _holder(Path(slot_dir) / lock_name(index, slot)) is None


def _holder(path: Path) -> dict | None:
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            try:
                return json.loads(text) if text else {}
            except json.JSONDecodeError:
                return {"raw": text}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """(command name, the fields after it: state, ppid, ...) of `/proc/<pid>/stat` (Linux);
    None when the process is gone or was read mid-exit."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, closed, rest = stat.rpartition(")")  # the name may itself hold ')' or spaces
    fields = rest.split()
    if not closed or len(fields) < 2:
        return None
    return head[head.find("(") + 1:], fields


def process_alive(pid: int, *, started_by: float | None = None) -> bool:
    """Whether process `pid` of this machine still runs (zombies count as dead).

    With `started_by` (epoch seconds: when the process was known to exist, e.g. the time of an
    event it wrote), a process that started later is a different one that reused the pid.
    Linux reads /proc; elsewhere only existence is checked.
    """
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = proc_stat(pid)
    if stat is None:
        return False
    fields = stat[1]
    if fields[0] in ("Z", "X"):  # zombie / dead: exited, parent has not reaped it yet
        return False
    if started_by is not None:
        start = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if start > started_by + 2.0:  # 2 s: clock-tick rounding and event-time skew
            return False
    return True


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0
