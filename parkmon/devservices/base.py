"""Process plumbing shared by the dev services: data dirs, pid files, locks, health waits, leases.

A service instance lives in one data dir (default ``~/.cache/parkmon/run/<name>/``, or
``$PARKMON_DEVSERVICES_DIR/<name>/``). The dir holds the generated config, the log, a ``pid`` file
for the process that this code started, and ``healthy.json`` with how long it took to become
healthy. Only a process whose pid is recorded there *and* whose command line still names that dir
is ever signalled, so a reused pid or a broker someone else started is never touched.

Several test sessions (other developers, CI) may use one instance at once. Each user takes a lease
(a file named after its pid in ``leases/``); :meth:`ServiceHandle.release` stops the process only
when the caller started it and no other live process holds a lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parkmon.errors import ServiceError


class DevServiceError(ServiceError):
    """A dev service could not be installed, built, started or reached."""


def cache_dir() -> Path:
    """Where downloads and builds are cached (outside any clone): ``$PARKMON_CACHE`` or
    ``~/.cache/parkmon``."""
    return Path(os.environ.get("PARKMON_CACHE", str(Path.home() / ".cache" / "parkmon")))


def run_root() -> Path:
    """Parent of every service's data dir: ``$PARKMON_DEVSERVICES_DIR`` or ``<cache>/run``."""
    env = os.environ.get("PARKMON_DEVSERVICES_DIR")
    return Path(env) if env else cache_dir() / "run"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def scripts_dir() -> Path:
    return repo_root() / "scripts"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``path``; blocks until held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": treat as dead
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class _Exited(Exception):
    """Raised by a probe to stop waiting: the process being waited for has exited."""


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return True
        except _Exited:
            raise
        except Exception:  # noqa: BLE001 - any failure of a probe means "not yet"
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def run_checked(cmd: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise DevServiceError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ServiceHandle:
    """One running (or startable) instance of a service.

    Subclasses set the command, the config writing and the health probe; everything about
    processes is here. ``started_here`` is true when this Python process started the instance.
    """

    name: str
    host: str
    port: int
    data_dir: Path
    started_here: bool = False
    healthy_after_s: float | None = None
    start_timeout_s: float = 120.0
    _lease_taken: bool = field(default=False, repr=False)

    # -- to override ----------------------------------------------------------------------------
    def install(self) -> None:
        """Install or build what the service needs (cached); idempotent."""

    def prepare(self) -> None:
        """Write config / format storage in ``data_dir`` before a start; idempotent."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def probe(self) -> bool:
        """True when the service answers as healthy."""
        raise NotImplementedError

    def after_healthy(self) -> None:
        """One-time setup through the service's API once healthy (e.g. InfluxDB onboarding)."""

    # -- files ----------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.data_dir / "pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / ".lock"

    @property
    def leases_dir(self) -> Path:
        return self.data_dir / "leases"

    def recorded_pid(self) -> int | None:
        """The pid this code recorded, if that process is still alive and is ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and str(self.data_dir) in cmdline_of(pid):
            return pid
        return None

    @property
    def pid(self) -> int | None:
        return self.recorded_pid()

    def healthy(self) -> bool:
        try:
            return bool(self.probe())
        except Exception:  # noqa: BLE001
            return False

    # -- lifecycle ------------------------------------------------------------------------------
    def ensure(self, lease: bool = True) -> ServiceHandle:
        """Install, start if not already healthy, wait for health. Idempotent and safe to call
        from several processes at once (a file lock serialises the start)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.install()
        with file_lock(self.lock_file):
            if self.healthy():
                self._load_health_record()
            else:
                self._start_locked()
            self.after_healthy()
        if lease:
            self.take_lease()
        return self

    def start(self) -> ServiceHandle:
        """Start the process (after a :meth:`stop`) and wait for health."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_file):
            if not self.healthy():
                self._start_locked()
            self.after_healthy()
        return self

    def _start_locked(self) -> None:
        old = self.recorded_pid()
        if old is not None:
            # our process is there but not healthy (e.g. still starting after a crash): restart it
            self._terminate(old)
        t0 = time.monotonic()  # time to healthy includes writing config / formatting storage
        self.prepare()
        log = open(self.log_file, "ab")
        try:
            proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self.env(),
                start_new_session=True,  # survives the parent; signals go to it alone
            )
        finally:
            log.close()
        self.pid_file.write_text(f"{proc.pid}\n")

        def up() -> bool:
            if proc.poll() is not None:
                raise _Exited()
            return self.probe()

        try:
            ok = wait_until(up, self.start_timeout_s, 0.1)
        except _Exited:
            ok = False
        if not ok:
            code = proc.poll()
            if code is None:
                self._terminate(proc.pid)
            raise DevServiceError(
                f"{self.name} did not become healthy on {self.host}:{self.port} within "
                f"{self.start_timeout_s:.0f}s (exit code {code}); log {self.log_file}:\n"
                f"{tail(self.log_file)}"
            )
        self.healthy_after_s = round(time.monotonic() - t0, 2)
        self.started_here = True
        record = {
            "service": self.name,
            "pid": proc.pid,
            "healthy_after_s": self.healthy_after_s,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.data_dir / "healthy.json").write_text(json.dumps(record, indent=2) + "\n")
        with open(cache_dir() / "healthy-times.log", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _load_health_record(self) -> None:
        try:
            record = json.loads((self.data_dir / "healthy.json").read_text())
            self.healthy_after_s = float(record["healthy_after_s"])
        except (OSError, ValueError, KeyError):
            self.healthy_after_s = None

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the process recorded in the data dir (only ours). True if one was stopped."""
        with file_lock(self.lock_file):
            pid = self.recorded_pid()
            if pid is None:
                return False
            self._terminate(pid, timeout_s)
            return True

    def kill(self) -> bool:
        """SIGKILL our recorded process (fault tests)."""
        pid = self.recorded_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10)
        return True

    def restart(self) -> ServiceHandle:
        self.stop()
        return self.start()

    def _terminate(self, pid: int, timeout_s: float = 30.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid), timeout_s, 0.1):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 10, 0.1)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    # -- leases ---------------------------------------------------------------------------------
    def take_lease(self) -> None:
        self.leases_dir.mkdir(parents=True, exist_ok=True)
        (self.leases_dir / str(os.getpid())).write_text(cmdline_of(os.getpid()) + "\n")
        self._lease_taken = True

    def other_live_leases(self) -> list[int]:
        pids: list[int] = []
        if not self.leases_dir.is_dir():
            return pids
        for entry in self.leases_dir.iterdir():
            try:
                pid = int(entry.name)
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            try:
                holder = entry.read_text().strip()
            except OSError:
                holder = ""
            # alive and still the same program (a recycled pid is not a lease holder)
            if pid_alive(pid) and (not holder or cmdline_of(pid).strip() == holder):
                pids.append(pid)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
        return pids

    def release(self, keep: bool = False) -> str:
        """Drop this process's lease; stop the service if this process started it, nobody else
        holds a lease and ``keep`` is false. Returns what was done."""
        with contextlib.suppress(OSError):
            (self.leases_dir / str(os.getpid())).unlink()
        self._lease_taken = False
        if keep:
            return "kept (PARKMON_KEEP_SERVICES)"
        if not self.started_here:
            return "left running (not started here)"
        others = self.other_live_leases()
        if others:
            return f"left running (in use by pids {others})"
        return "stopped" if self.stop() else "already stopped"

    def describe(self) -> dict[str, Any]:
        pid = self.recorded_pid()
        if self.healthy_after_s is None:
            self._load_health_record()
        return {
            "service": self.name,
            "address": f"{self.host}:{self.port}",
            "healthy": self.healthy(),
            "pid": pid,
            "data_dir": str(self.data_dir),
            "healthy_after_s": self.healthy_after_s,
        }


