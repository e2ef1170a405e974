"""The layerseg command line run as a subprocess: found, started, streamed, cancelled.

No Qt and no Slicer here, so the same code runs inside Slicer (polled from a ``qt.QTimer``) and
in tests. Commands are argument lists, never shell strings, and every process is started in a
session of its own so that Cancel can end the whole process tree.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The environment variable that makes the CLI print plain progress lines instead of a bar.
PROGRESS_ENV = {"LAYERSEG_PROGRESS": "lines"}

#: Variables that would carry Slicer's Python (and its torch) into a subprocess's Python: the
#: layerseg runtime must see its own packages only.
PYTHON_LEAKS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")

#: ``layerseg: progress WHAT DONE/TOTAL`` (rust/cli/src/progress.rs).
_PROGRESS_LINE = re.compile(r"^layerseg: progress (\S+) (\d+)/(\d+)\s*$")

#: Seconds between SIGTERM and SIGKILL when cancelling.
_TERM_GRACE_S = 3.0


class CliNotFoundError(RuntimeError):
    """No layerseg command line could be found; the message says where we looked."""


@dataclass(frozen=True)
class Progress:
    """One progress line: ``done`` of ``total`` units of the phase ``what``."""

    what: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 0.0


def parse_progress(line: str) -> Progress | None:
    """The progress a CLI output line reports, or None for an ordinary log line."""
    m = _PROGRESS_LINE.match(line)
    if m is None:
        return None
    return Progress(m.group(1), int(m.group(2)), int(m.group(3)))


def find_cli(configured: str | None = None, runtime_root: Path | None = None) -> list[str]:
    """The command that runs ``layerseg``, as the start of an argument list.

    In order: ``configured`` (a file chosen in the panel), ``$LAYERSEG_BIN``, LayerSeg's own
    runtime at ``runtime_root`` once installed (:mod:`LayerSegLib.runtime`), and ``layerseg``
    on PATH. Slicer's own Python is never used: its torch need not be the one LayerSeg's Rust
    core is built against.
    """
    tried: list[str] = []
    for label, value in (
        ("the configured path", configured),
        ("$LAYERSEG_BIN", os.environ.get("LAYERSEG_BIN")),
    ):
        if value:
            path = Path(value).expanduser()
            if path.is_file() and os.access(path, os.X_OK):
                return [str(path)]
            raise CliNotFoundError(f"{path} ({label}) is not an executable file")
        tried.append(label)
    if runtime_root is not None:
        from .runtime import Runtime

        runtime = Runtime(runtime_root)
        if runtime.installed:
            return [str(runtime.cli)]
        tried.append(f"the LayerSeg runtime in {runtime_root} (not installed)")
    on_path = shutil.which("layerseg")
    if on_path:
        return [on_path]
    tried.append("PATH")
    raise CliNotFoundError(
        "cannot find the layerseg command line (looked at " + ", ".join(tried) + "); "
        "install the LayerSeg runtime (Advanced: runtime source, Install runtime) or set the "
        "path to the layerseg executable"
    )


class Job:
    """One running command. Output lines (stdout and stderr merged) are read by a thread and
    handed to the callbacks on the thread that calls :meth:`poll` or :meth:`wait`, so a GUI
    can poll it from its own event loop."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.lines: list[str] = []
        self.cancelled = False
        self.returncode: int | None = None
        self._on_line = on_line
        self._on_progress = on_progress
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._output_ended = False
        full_env = {k: v for k, v in os.environ.items() if k not in PYTHON_LEAKS}
        full_env["PYTHONNOUSERSITE"] = "1"
        full_env.update(PROGRESS_ENV)
        if env:
            full_env.update(env)
        kwargs: dict[str, object] = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        else:
            kwargs["start_new_session"] = True
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,  # type: ignore[call-overload]
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return int(self._proc.pid)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._queue.put(line.rstrip("\r\n"))
        self._queue.put(None)

    def _drain(self) -> bool:
        """Hands queued lines to the callbacks; True once the output has ended (and from then
        on: a process may close its output a moment before it exits)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self._output_ended
            if line is None:
                self._output_ended = True
                continue
            progress = parse_progress(line)
            if progress is not None:
                if self._on_progress is not None:
                    self._on_progress(progress)
                continue
            self.lines.append(line)
            if self._on_line is not None:
                self._on_line(line)

    def poll(self) -> int | None:
        """Delivers new output; the exit code once the process has ended and its output is
        read, else None."""
        if self.returncode is not None:
            return self.returncode
        ended = self._drain()
        if ended and self._proc.poll() is not None:
            self._reader.join()
            self._drain()
            self.returncode = self._proc.returncode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Polls until the process ends; raises TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[0]} still running after {timeout} s")
            time.sleep(0.05)
        return code

    def cancel(self) -> None:
        """Ends the process and everything it started: SIGTERM to its process group, then
        SIGKILL to the group after a grace period (on Windows, ``taskkill /T /F``)."""
        self.cancelled = True
        if os.name == "nt":
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(self._proc.pid)],
                check=False,
                capture_output=True,
            )
        else:
            _signal_group(self._proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=_TERM_GRACE_S)
            # Children may outlive a leader that exited on SIGTERM: the group gets SIGKILL anyway.
            _signal_group(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self.wait()

    def error_text(self, max_lines: int = 12) -> str:
        """The tail of the output, where the CLI prints its error."""
        errors = [line for line in self.lines if "error" in line.lower()]
        chosen = errors or self.lines
        return "\n".join(chosen[-max_lines:])


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
