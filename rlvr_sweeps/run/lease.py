"""One trainer per run folder: a lease file with a heartbeat.

Two launches of the same run (a double click, a retry while the first is starting, a sweep relaunched while its
jobs run) would otherwise both train into one folder. Advisory `fcntl` locks are not honoured on every shared file
system clusters use (NFS, Lustre), so the holder writes `lease.json` (who, since when) and renews its heartbeat
every HEARTBEAT_FRACTION of the lease; a holder that stops renewing (killed with SIGKILL, its node gone) loses the
lease after RLVR_SWEEPS_LEASE_S seconds (120 by default), and the requeued job of the same SLURM job, or a new
process on the same host once the holder's pid is gone, takes it over at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..errors import UserError
from .record import atomic_write, now_iso

log = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
DEFAULT_LEASE_S = 120.0
HEARTBEAT_FRACTION = 0.25
SETTLE_S = 0.5  # after taking over a stale lease: long enough for a competing taker's write to be visible


def lease_seconds() -> float:
    return float(os.environ.get("RLVR_SWEEPS_LEASE_S") or DEFAULT_LEASE_S)


class RunLease:
    """The lease on one run folder, held from acquire() to release() (a context manager)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LEASE_FILE
        self.seconds = lease_seconds()
        self.token = uuid.uuid4().hex
        self.holder = {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "since": now_iso(),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def acquire(self) -> None:
        """Take the lease, or refuse in one line naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            current = self.read()
            if current is not None and not self._may_take_over(current):
                raise UserError(refusal(self.path.parent, current, self.seconds))
            self._write()
            time.sleep(SETTLE_S)
            winner = self.read()
            if winner is None or winner.get("token") != self.token:
                raise UserError(refusal(self.path.parent, winner or {}, self.seconds))
            if current is not None:
                log.info("Took over the run folder's lease from %s", describe(current))
        self._thread = threading.Thread(target=self._beat, name="run-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = self.read()
        if current is not None and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _create(self) -> bool:
        """Create the lease file if there is none (O_EXCL: atomic on local file systems and NFS v3+)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({**self.holder, "heartbeat": time.time()}))
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _write(self) -> None:
        atomic_write(self.path, json.dumps({**self.holder, "heartbeat": time.time()}))

    def _may_take_over(self, current: dict) -> bool:
        """A lease whose heartbeat stopped, one held by this same SLURM job before its requeue, or one whose holder
        process on this host is gone."""
        if time.time() - float(current.get("heartbeat") or 0) > self.seconds:
            return True
        job = os.environ.get("SLURM_JOB_ID")
        if job and current.get("slurm_job_id") == job:
            return True
        return current.get("host") == socket.gethostname() and not _pid_alive(current.get("pid"))

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds * HEARTBEAT_FRACTION):
            current = self.read()
            if current is not None and current.get("token") != self.token:
                log.error(
                    "The run folder's lease was taken over by %s; this process no longer holds it.", describe(current)
                )
                return
            self._write()


def describe(holder: dict) -> str:
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')}"


def refusal(run_dir: Path, holder: dict, seconds: float) -> str:
    beat = time.time() - float(holder.get("heartbeat") or time.time())
    return (
        f"{run_dir} is being trained by another process ({describe(holder)}; heartbeat {beat:.0f} s ago): one run "
        f"folder holds one trainer at a time. Wait for it to finish, or stop it (a holder that died loses its lease "
        f"after {seconds:.0f} s)."
    )


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
