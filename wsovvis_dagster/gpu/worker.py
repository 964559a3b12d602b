"""A long-lived predictor process per GPU lease slot: the model is built once, serves many runs.

Why: on one H200 every VideoCutLER run paid 17-24 s before its first video (process start,
VNext/detectron2 imports, model build, cuDNN warm-up), as much as 3,200 frames of work. A
worker keeps the built, warmed-up model between runs: a run connects, sends its video refs, and
receives one `VideoOutcome` per video as `masks.segment.segment_videos` (the same loop, run on the
worker's main thread, so cuDNN's per-thread autotuning cache lives as long as the worker) yields
them. The run process then never imports torch.

Lifecycle (files under `state_dir`, one folder per device and lease slot, `worker_dir`):
- started by the first run that finds none (`connect_worker`), or ahead of a batch's runs by
  `scripts/backfill.py` (`start_worker`, via `gpu.prestart`), detached in its own session with
  its log in `worker.log`; it builds the model before it listens, so a run that connects finds
  it ready. While it builds it holds the slot's spawn lock (handed over by whoever started it),
  so a run that connects meanwhile waits for it instead of starting a second one;
- serves one connection at a time (the lease slot already gives it one run at a time); with
  `runs_per_gpu` > 1 each slot of a GPU has its own worker, so two runs' videos overlap on the
  device and fill the gaps the model's host syncs leave (GPU busy 72 % with one loop);
- releases PyTorch's cached blocks after each request and exits after `idle_seconds` without
  one; a run whose settings differ (other weights, precision, ...) stops it and starts its own.

The socket is a file in a 0700 folder of the worker's owner, each peer's uid is checked, and
connections are authenticated with a random key in a 0600 file (`multiprocessing.connection`'s
HMAC handshake) under a timeout, so only the user who started the worker can use it and no
other local user can stall or stop it (`worker_socket`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from wsovvis_dagster.atomic import write_json_atomic
from wsovvis_dagster.errors import WsovvisError
from wsovvis_dagster.gpu import worker_socket
from wsovvis_dagster.gpu.leases import process_alive
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors.settings import PredictorSettings

log = logging.getLogger(__name__)

PROTOCOL = 1
# how long a worker outlives its last run is a backend's default (predictors.backends)
LOG_NAME, STATE_NAME, KEY_NAME, LOCK_NAME = "worker.log", "worker.json", "authkey", "spawn.lock"
STARTING_NAME = "starting.json"  # written by its starter: a worker still building its model


class PredictorWorkerError(WsovvisError):
    """A predictor worker that could not start, died, or failed a request (its log is named)."""


def settings_fingerprint(settings: PredictorSettings) -> str:
    """Every setting, output-relevant or not: a worker serves only runs that match it."""
    blob = json.dumps(asdict(settings), sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def worker_dir(root: str | Path, device: str, slot: int = 0) -> Path:
    """The state folder of the worker of `device`'s lease `slot` under `root` (e.g.
    <DAGSTER_HOME>/gpu_slots): one worker per slot, so `runs_per_gpu` runs on one GPU each
    have a model of their own and their videos overlap on the device."""
    name = device.replace(":", "")
    return Path(root) / "predictor_workers" / (name if slot == 0 else f"{name}.slot{slot}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# -- the client side (used by a run's session, gpu.session) ----------------------------------
@dataclass
class WorkerClient:
    """A connection-maker for one running worker (`connect_worker` returns it)."""

    state_dir: Path
    info: dict  # the worker's hello: pid, device, name, version, built_s, served, ...
    reused: bool  # the worker ran before this run asked for it

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_NAME

    def segment_videos(self, data_root: Path, output_root: Path, refs: Iterable[VideoRef],
                       *, skip_bad_frames: bool = False) -> Iterator:
        """`masks.segment.segment_videos` in the worker: one `VideoOutcome` per video, in order.

        Waits its turn if another run is being served. If the worker dies, the videos it
        finished stay written (and yielded); the rest raise `PredictorWorkerError`.
        """
        refs = list(refs)
        done = 0
        try:
            conn = _open(self.state_dir)
        except (OSError, EOFError) as exc:
            raise self._died(exc, done, len(refs)) from exc
        with conn:
            try:
                conn.send(("segment", {"data_root": str(data_root),
                                       "output_root": str(output_root),
                                       "keys": [r.partition_key for r in refs],
                                       "skip_bad_frames": skip_bad_frames}))
                while True:
                    kind, payload = conn.recv()
                    if kind == "outcome":
                        done += 1
                        yield payload
                    elif kind == "done":
                        self.info.update(payload)
                        return
                    else:  # "failed": an unexpected exception in the worker
                        raise PredictorWorkerError(
                            f"predictor worker pid {self.pid} ({self.info.get('device')}) "
                            f"failed after {done} of {len(refs)} videos:\n{payload}\nThe "
                            f"worker keeps running; its log: {self.log_path}")
            except (OSError, EOFError) as exc:
                raise self._died(exc, done, len(refs)) from exc

    def _died(self, exc: BaseException, done: int, total: int) -> PredictorWorkerError:
        return PredictorWorkerError(
            f"predictor worker pid {self.pid} ({self.info.get('device')}) went away after "
            f"{done} of {total} videos ({type(exc).__name__}: {exc}); the videos it finished "
            f"are written, re-run the rest (the next run starts a new worker). Its log "
            f"{self.log_path} ends:\n{_tail(self.log_path)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the worker to exit (after any request it is serving) and wait for it."""
        with contextlib.suppress(OSError, EOFError), _open(self.state_dir) as conn:
            conn.send(("exit", None))
        _wait_or_kill([self.pid], timeout_s)


def _wait_or_kill(pids: list[int], timeout_s: float) -> None:
    """Wait up to `timeout_s` for `pids` to exit, then SIGKILL the ones still running."""
    deadline = time.monotonic() + timeout_s
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _open(state_dir: Path) -> Connection:
    return worker_socket.connect(state_dir, (state_dir / KEY_NAME).read_bytes())


def _hello(state_dir: Path) -> dict | None:
    """The running worker's info, or None if there is none (no key, refused, gone)."""
    try:
        with _open(state_dir) as conn:
            conn.send(("hello", PROTOCOL))
            kind, info = conn.recv()
    except worker_socket.CONNECTION_ERRORS:
        return None
    return info if kind == "hello" else None


def connect_worker(
    settings: PredictorSettings,
    state_dir: str | Path,
    *,
    idle_seconds: float,
    start_timeout_s: float = 900.0,
    env: dict | None = None,
) -> WorkerClient:
    """The worker for `settings.device` under `state_dir`, started if none runs.

    A running worker with other settings is stopped first (one model per slot). Concurrent
    callers are serialised by a lock file, so two runs never start two workers.
    """
    state_dir = Path(state_dir)
    worker_socket.private_dir(state_dir)  # key, log and (usually) the socket: owner only
    worker_socket.private_dir(worker_socket.socket_path(state_dir).parent)  # fails fast
    fingerprint = settings_fingerprint(settings)
    with open(state_dir / LOCK_NAME, "a+") as lock:
        _lock_within(lock, start_timeout_s, state_dir)  # a worker still building holds it
        info = _hello(state_dir)
        if info is not None and info.get("fingerprint") == fingerprint:
            return WorkerClient(state_dir, info, reused=True)
        if info is not None:  # another model in this slot: one at a time
            log.warning("stopping predictor worker pid %s: it was built with other settings",
                        info["pid"])
            WorkerClient(state_dir, info, reused=True).stop()
        return WorkerClient(state_dir, _spawn(settings, state_dir, idle_seconds,
                                              start_timeout_s, env), reused=False)


def _lock_within(lock, timeout_s: float, state_dir: Path) -> None:
    """Take the slot's spawn lock, waiting up to `timeout_s` (a worker building its model
    holds it until it listens; the kernel drops it if that worker dies)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise PredictorWorkerError(
                    f"the predictor worker in {state_dir} was still starting after "
                    f"{timeout_s:.0f} s; its log {state_dir / LOG_NAME} ends:\n"
                    f"{_tail(state_dir / LOG_NAME)}") from None
            time.sleep(0.05)


def _live_state(state_dir: Path) -> dict | None:
    """The worker in `state_dir` if its process runs: its state file with `ready` True, else
    its starter's record (pid, device, fingerprint) with `ready` False while it builds."""
    for name, ready in ((STATE_NAME, True), (STARTING_NAME, False)):
        try:
            info = json.loads((state_dir / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if process_alive(int(info.get("pid", -1))):
            return {**info, "ready": ready}
    return None


def _launch(settings: PredictorSettings, state_dir: Path, idle_seconds: float,
            env: dict | None, lock=None) -> subprocess.Popen:
    """Start the worker process (its own session: it outlives its starter and is not hit by
    signals sent to the starter's process group) and record it as building. With `lock` (the
    spawn lock, held), the worker keeps holding it until it listens."""
    key_path = state_dir / KEY_NAME
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when an older key file had other permissions
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    cmd = [sys.executable, "-m", "wsovvis_dagster.gpu.worker",
           "--state-dir", str(state_dir), "--idle-seconds", str(idle_seconds),
           "--settings", json.dumps(asdict(settings))]
    if lock is not None:
        cmd += ["--spawn-lock-fd", str(lock.fileno())]
    with open(state_dir / LOG_NAME, "ab") as out:
        out.write(f"\n--- starting predictor worker on {settings.device} "
                  f"({time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(lock.fileno(),) if lock is not None else (),
                                env=env if env is not None else os.environ.copy())
    # `list_workers` / `stop_workers` see it while it builds (its own state file once ready)
    write_json_atomic(state_dir / STARTING_NAME, {
        "pid": proc.pid, "device": settings.device, "fingerprint": settings_fingerprint(settings),
        "started_at": round(time.time(), 3)})
    return proc


def start_worker(settings: PredictorSettings, state_dir: str | Path, *, idle_seconds: float,
                 env: dict | None = None, replace_if: Callable[[], bool] | None = None
                 ) -> tuple[str, int | None]:
    """Start the worker for `settings` in `state_dir` if none runs, and return at once, not
    waiting for its model: ("started", pid). Else ("running", pid): one with these settings
    runs or builds; ("other settings", pid): one with other settings runs, left alone (the run
    that needs the slot replaces it); ("replaced", pid): that one was ready and `replace_if()`
    said it serves no run (its slot's lease is free), so it was stopped and ours started;
    ("busy", None): a run is starting one. The new worker holds the slot's spawn lock until it
    listens, so a run connecting meanwhile waits for it (`connect_worker`)."""
    state_dir = Path(state_dir)
    worker_socket.private_dir(state_dir)
    worker_socket.private_dir(worker_socket.socket_path(state_dir).parent)
    fingerprint = settings_fingerprint(settings)
    current = _live_state(state_dir)  # read without the lock: a building worker holds it
    if current is not None and (current.get("fingerprint") == fingerprint
                                or not current["ready"] or replace_if is None):
        same = current.get("fingerprint") == fingerprint
        return ("running" if same else "other settings"), int(current["pid"])
    with open(state_dir / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "busy", None
        current, state = _live_state(state_dir), "started"
        if current is not None:
            if current.get("fingerprint") == fingerprint:
                return "running", int(current["pid"])
            if not (current["ready"] and replace_if is not None and replace_if()):
                return "other settings", int(current["pid"])
            log.info("stopping idle predictor worker pid %s: it was built with other settings",
                     current["pid"])
            WorkerClient(state_dir, current, reused=True).stop()
            state = "replaced"
        return state, _launch(settings, state_dir, idle_seconds, env, lock).pid


def _spawn(settings: PredictorSettings, state_dir: Path, idle_seconds: float,
           timeout_s: float, env: dict | None) -> dict:
    log_path = state_dir / LOG_NAME
    proc = _launch(settings, state_dir, idle_seconds, env)  # this caller holds the lock
    deadline = time.monotonic() + timeout_s
    while True:
        info = _hello(state_dir)
        if info is not None and info.get("pid") == proc.pid:
            return info
        code = proc.poll()
        if code is not None:
            raise PredictorWorkerError(
                f"the predictor worker for {settings.device} exited with code {code} while "
                f"starting (building the model); its log {log_path} ends:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise PredictorWorkerError(
                f"the predictor worker for {settings.device} was not ready after "
                f"{timeout_s:.0f} s (killed); its log {log_path} ends:\n{_tail(log_path)}")
        time.sleep(0.05)


def list_workers(root: str | Path) -> list[dict]:
    """The live workers under `root` (their state files: pid, device, `ready`, and once ready
    model, built_s; plus the log), those still building their model included."""
    found = []
    for folder in sorted((Path(root) / "predictor_workers").glob("*/")):
        info = _live_state(folder)
        if info is not None:
            found.append({**info, "log": str(folder / LOG_NAME)})
    return found


def stop_workers(root: str | Path, timeout_s: float = 30.0) -> list[int]:
    """Stop every worker under `root` now (SIGTERM, then SIGKILL): frees their GPU memory.
    A run one of them is serving fails naming it. Returns the pids stopped."""
    pids = [int(w["pid"]) for w in list_workers(root)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait_or_kill(pids, timeout_s)
    return pids


# -- the worker side -----------------------------------------------------------------------
class _Worker:
    def __init__(self, settings: PredictorSettings, state_dir: Path, idle_seconds: float,
                 spawn_lock_fd: int | None = None):
        from wsovvis_dagster.predictors.factory import build_predictor

        self.state_dir, self.idle_seconds = state_dir, idle_seconds
        self.spawn_lock_fd = spawn_lock_fd  # held from its start until it listens
        t0 = time.monotonic()
        self.predictor = build_predictor(settings)
        load_times = getattr(self.predictor, "load_times", None)
        self.info = {
            "pid": os.getpid(), "device": settings.device, "protocol": PROTOCOL,
            "fingerprint": settings_fingerprint(settings),
            "name": self.predictor.name, "version": self.predictor.version,
            "built_s": round(time.monotonic() - t0, 2),
            "load_times": asdict(load_times) if load_times is not None else None,
            "started_at": round(time.time(), 3), "served": 0, "videos": 0,
        }
        self.lock = threading.Lock()  # held while serving; the idle watchdog takes it to exit
        self.last_request = time.monotonic()

    def serve(self) -> None:
        key = (self.state_dir / KEY_NAME).read_bytes()
        listener = worker_socket.listen(self.state_dir)
        # handshakes run off the main thread under a timeout: a silent or wrong-key peer
        # never holds up the runs (the model keeps the main thread, see segment_videos)
        ready: queue.Queue[Connection] = queue.Queue()
        threading.Thread(target=worker_socket.accept_forever, args=(listener, key, ready.put),
                         daemon=True, name="accept").start()
        # what `list_workers` shows; the counters change per request, the hello has them live
        write_json_atomic(self.state_dir / STATE_NAME,
                          {k: v for k, v in self.info.items() if k not in ("served", "videos")})
        if self.spawn_lock_fd is not None:  # runs waiting to connect may go on now
            fcntl.flock(self.spawn_lock_fd, fcntl.LOCK_UN)
            os.close(self.spawn_lock_fd)
            self.spawn_lock_fd = None
        threading.Thread(target=self._watch_idle, daemon=True, name="idle-watchdog").start()
        log.info("predictor worker pid %s ready on %s (model built in %s s)", os.getpid(),
                 self.info["device"], self.info["built_s"])
        while True:
            conn = ready.get()
            with self.lock, conn:
                if self._handle(conn) == "exit":
                    self._exit("asked to exit")
                self.last_request = time.monotonic()

    def _handle(self, conn: Connection) -> str | None:
        try:
            kind, payload = conn.recv()
        except (OSError, EOFError):
            return None
        if kind == "hello":
            conn.send(("hello", self.info))
            return None
        if kind == "exit":
            return "exit"
        if kind != "segment":
            conn.send(("failed", f"unknown request {kind!r}"))
            return None
        from wsovvis_dagster.masks.segment import segment_videos

        refs = [VideoRef.from_partition_key(k) for k in payload["keys"]]
        t0 = time.monotonic()
        try:
            for outcome in segment_videos(Path(payload["data_root"]),
                                          Path(payload["output_root"]), refs, self.predictor,
                                          skip_bad_frames=payload["skip_bad_frames"]):
                conn.send(("outcome", outcome))
                self.info["videos"] += 1
        except (OSError, EOFError) as exc:  # the run went away: its loop stops here
            log.warning("the run went away mid-request: %s", exc)
            return None
        except Exception:  # noqa: BLE001 - reported to the run, the worker stays up
            text = traceback.format_exc()
            log.error("request failed:\n%s", text)
            with contextlib.suppress(OSError):
                conn.send(("failed", text))
            return None
        finally:
            self._release_cache()
        self.info["served"] += 1
        log.info("served %d videos in %.1f s", len(refs), time.monotonic() - t0)
        with contextlib.suppress(OSError):
            conn.send(("done", {"served": self.info["served"], "videos": self.info["videos"]}))
        return None

    def _release_cache(self) -> None:
        torch = sys.modules.get("torch")  # a CPU predictor never imports it
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _watch_idle(self) -> None:
        while True:
            time.sleep(min(1.0, max(self.idle_seconds / 4, 0.05)))
            with self.lock:
                if time.monotonic() - self.last_request >= self.idle_seconds:
                    self._exit(f"idle for {self.idle_seconds:g} s")

    def _exit(self, why: str) -> None:
        for path in (self.state_dir / STATE_NAME, self.state_dir / STARTING_NAME,
                     worker_socket.socket_path(self.state_dir)):
            with contextlib.suppress(OSError):
                path.unlink()
        log.info("predictor worker pid %s exits: %s", os.getpid(), why)
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m wsovvis_dagster.gpu.worker",
        description="A predictor worker (started by the mask_pngs runs, not by hand): builds "
        "the model once and serves runs over an authenticated local socket until idle.")
    ap.add_argument("--state-dir", type=Path, required=True,
                    help="folder with the worker's key, state and log (one per lease slot)")
    ap.add_argument("--idle-seconds", type=float, required=True,
                    help="exit after this long without a request")
    ap.add_argument("--settings", required=True, help="PredictorSettings as JSON")
    ap.add_argument("--spawn-lock-fd", type=int,
                    help="an inherited fd holding the slot's spawn lock: released once listening")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.spawn_lock_fd is not None:  # nothing this process starts may keep it
        os.set_inheritable(args.spawn_lock_fd, False)
    settings = PredictorSettings(**json.loads(args.settings))
    _Worker(settings, args.state_dir, args.idle_seconds, args.spawn_lock_fd).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
