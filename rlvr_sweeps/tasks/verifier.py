"""math-verify behind a process boundary: every check ends within a bounded time, from any thread.

math-verify bounds its own work with SIGALRM, which only works in a main thread, and cannot stop
C-level arithmetic such as a huge power. So checks run in a child process (where math-verify's
own timeouts work, in its main thread) under a memory limit, and the parent kills and restarts
the child when a check outlives `timeout_s`. A check that fails in any way scores as incorrect.

Run as `python -m rlvr_sweeps.tasks.verifier` it is that child: one JSON request per line on stdin,
one JSON answer per line on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """math-verify's judgement of one answer."""

    correct: bool
    """The prediction equals the gold answer (gold first, as math-verify wants)."""
    extracted: str | None
    """The prediction's answer as math-verify read it."""
    error: str | None = None
    """"timeout", "crash" or a parse/verify error (scored as wrong)."""


def as_gold_latex(gold: str) -> str:
    """Gold answers are bare ("\\frac{1}{2}", "-4"); math-verify reads bare LaTeX only inside $...$."""
    gold = str(gold).strip()
    return gold if ("\\boxed" in gold or "$" in gold) else f"${gold}$"


class MathVerifier:
    STARTUP_TIMEOUT_S = 120.0

    def __init__(
        self, timeout_s: float = 5.0, max_chars: int = 20_000, memory_mb: int = 4096, literal_numbers: bool = False
    ):
        self.timeout_s = float(timeout_s)
        # an integer gold answer needs a number literal as the prediction's answer, not an unevaluated
        # expression: math-verify evaluates expressions, so "7 - 4" restated from the question would
        # verify as 3 (a policy learns to do exactly that); other gold answers are checked as before
        self.literal_numbers = bool(literal_numbers)
        self.max_chars = int(max_chars)
        self.memory_mb = int(memory_mb)
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self.killed_checks = 0  # checks ended by force (the worker is then restarted)

    def verify(self, gold: str, prediction: str) -> Verdict:
        return self.verify_many([gold], [prediction])[0]

    def verify_many(self, golds: list[str], predictions: list[str]) -> list[Verdict]:
        with self._lock:
            return [self._check(gold, prediction) for gold, prediction in zip(golds, predictions, strict=True)]

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    def _check(self, gold: str, prediction: str) -> Verdict:
        request = {
            "gold": as_gold_latex(gold),
            "prediction": str(prediction)[-self.max_chars :],
            "timeout": self.timeout_s / 2,
            "literal": self.literal_numbers,
        }
        child = self._ensure_child()
        try:
            child.stdin.write((json.dumps(request) + "\n").encode())
            child.stdin.flush()
            line = self._read_line(child, time.monotonic() + self.timeout_s)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            alive = child.poll() is None
            self._stop_child()
            self.killed_checks += 1
            return Verdict(False, None, "timeout" if alive else "crash")
        answer = json.loads(line)
        return Verdict(bool(answer["correct"]), answer.get("extracted"), answer.get("error"))

    def _read_line(self, child: subprocess.Popen, deadline: float) -> str | None:
        buffer = b""
        fd = child.stdout.fileno()
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buffer += chunk
        return buffer.decode()

    def _ensure_child(self) -> subprocess.Popen:
        if self._child is not None and self._child.poll() is None:
            return self._child
        with deaf_to_stop_signals():
            self._child = subprocess.Popen(
                [sys.executable, "-m", "rlvr_sweeps.tasks.verifier", str(self.memory_mb)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
        # the child says "ready" once math-verify is imported, so start-up never counts as a check's time
        if self._read_line(self._child, time.monotonic() + self.STARTUP_TIMEOUT_S) != "ready\n":
            self._stop_child()
            raise RuntimeError("the math-verify worker did not start (is math-verify installed?)")
        return self._child

    def _stop_child(self) -> None:
        if self._child is None:
            return
        self._child.kill()
        self._child.wait()
        self._child = None

    def __del__(self):  # best effort; the child also exits when its stdin closes
        try:
            self._stop_child()
        except Exception:  # noqa: BLE001
            pass


@contextlib.contextmanager
def deaf_to_stop_signals():
    """Start a child that ignores SIGUSR2: SLURM signals every process of a job step at its time limit (and a
    preflight sends the same), and the worker, which would die of it, is the parent's to stop (its stdin closes).
    An ignored signal stays ignored across exec; the parent's own handler is put back at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR2, previous)


# a number as written: "3", "-4", "1,024", "0.5", "$3$", "3." - not "7 - 4" or "\\frac{6}{2}"
NUMBER_LITERAL = re.compile(r"\s*\$?\s*[-+]?\s*\d[\d,]*(\.\d+)?\s*\$?\s*\.?\s*")


def _serve(memory_mb: int) -> None:
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from math_verify import parse, verify

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        answer = {"correct": False, "extracted": None, "error": None}
        try:
            timeout = max(1, round(request["timeout"]))
            gold = parse(request["gold"], parsing_timeout=timeout)
            predicted = parse(request["prediction"], parsing_timeout=timeout)
            answer["extracted"] = str(predicted[-1]) if predicted else None
            answer["correct"] = (
                bool(gold) and bool(predicted) and bool(verify(gold, predicted, timeout_seconds=timeout))
            )
            integer_gold = bool(getattr(gold[0], "is_integer", False)) if gold else False
            if answer["correct"] and request.get("literal") and integer_gold:
                if not NUMBER_LITERAL.fullmatch(answer["extracted"] or ""):
                    answer["correct"], answer["error"] = False, "not a number literal"
        except BaseException as err:  # noqa: BLE001 - MemoryError, RecursionError, sympy errors: all score 0
            answer["error"] = f"{type(err).__name__}: {err}"[:200]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)
