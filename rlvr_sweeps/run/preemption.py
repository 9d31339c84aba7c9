"""Stop cleanly when the scheduler asks, and lose no step that was finished.

SLURM sends SIGTERM before it kills a job that is preempted, requeued or cancelled, with a grace
period (KillWait, often 30-120 s) that can be shorter than one step of the study (about 250 s on an
A40). submitit's USR2 comes `signal_delay_s` before the time limit, which the launcher sizes to hold a
step and a save. So:

- USR2: the run finishes its current step, saves it and stops; then the previous handler
  (submitit's checkpoint-and-requeue) runs.
- SIGTERM: the step in flight is abandoned at once (StepAborted), unless it is already committing its
  optimizer update (then it ends first, a matter of milliseconds), and the last finished step is
  saved; the requeued job redoes only the abandoned step.
- SIGINT (Ctrl-C on a local run): as SIGTERM, then the process exits with status 130 and one line; a second
  Ctrl-C exits at once (the last saved checkpoint is what a relaunch resumes from).

A save made because of a signal never runs the checkpoint-selection evaluation, and a signal that
arrives during one (at a regular save) abandons it: it can take longer than the time left. Such a
checkpoint is not a selection candidate (evaluation.CheckpointSelection).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager

from transformers import TrainerCallback

log = logging.getLogger(__name__)

PREEMPTED = "preempted"
SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)
ABANDONING = (signal.SIGTERM, signal.SIGINT)  # Ctrl-C stops a local run as SIGTERM does; a second one at once
INTERRUPTED_EXIT = 130  # a shell's status for a process ended by Ctrl-C


class StepAborted(BaseException):
    """Raised by the SIGTERM handler in the middle of a step: a BaseException, so that no library's
    `except Exception` swallows it on its way out of trainer.train()."""


class GracefulStop(TrainerCallback):
    def __init__(self):
        self.signal: int | None = None
        self.aborted = False  # a step was abandoned (SIGTERM): the last finished one is saved by the run
        self._previous: dict[int, object] = {}
        self._committing = False  # from the optimizer update to the step's end: never interrupted
        self._evaluating = False  # in a checkpoint-selection evaluation: abandoned at any stop signal

    @contextmanager
    def armed(self):
        """Catch the stop signals while training (only the main thread may install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {s: signal.signal(s, self._record) for s in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def _record(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:  # a second Ctrl-C: leave now
            sys.stderr.write("Second Ctrl-C: exiting now; the run resumes from its last saved checkpoint.\n")
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT)
        first = self.signal is None
        self.signal = signum
        if self._evaluating and not self.aborted:  # a selection evaluation can outlast any signal window
            self.aborted = True
            log.warning("Received %s: abandoning the selection evaluation in flight.", signal.Signals(signum).name)
            raise StepAborted()
        if signum in ABANDONING and not self._committing and not self.aborted:
            self.aborted = True
            log.warning(
                "Received %s: abandoning the step in flight and saving the last finished one%s.",
                signal.Signals(signum).name,
                " (Ctrl-C again exits at once)" if signum == signal.SIGINT else "",
            )
            raise StepAborted()
        if first:
            log.warning("Received %s: saving at the end of this step, then stopping.", signal.Signals(signum).name)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._committing = True  # until the step's metrics are logged: a saved step always has its record

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._committing = False

    def on_step_begin(self, args, state, control, **kwargs):
        self._committing = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    @contextmanager
    def abandonable(self):
        """A stretch (a checkpoint-selection evaluation) that any stop signal abandons at once: its length has
        nothing to do with the signal's window, and the checkpoint is saved before it starts."""
        self._evaluating = True
        try:
            yield
        finally:
            self._evaluating = False

    @property
    def stopping(self) -> bool:
        """Whether a stop signal arrived: saves from now on are for the next job, with no evaluation."""
        return self.signal is not None

    @property
    def stop_reason(self) -> str | None:
        if self.signal == signal.SIGINT:
            return "interrupted (SIGINT: Ctrl-C)"
        return f"{PREEMPTED} ({signal.Signals(self.signal).name})" if self.signal is not None else None

    def hand_over(self) -> None:
        """After the save: let the scheduler glue that owned the signal (submitit) do its part. Without one
        (a plain process sent SIGTERM), leave at once: everything is saved and closed, and the interpreter's
        own teardown of torch and its libraries takes seconds (2 s on an idle 2-core machine, past a 4 s
        grace under load) that a short grace period does not have."""
        previous = self._previous.get(self.signal) if self.signal is not None else None
        if self.signal == signal.SIGINT:  # Python's own handler would raise KeyboardInterrupt: a long traceback
            log.warning("Stopped by Ctrl-C: the run is saved; the same command resumes it.")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT)
        if callable(previous):
            previous(self.signal, None)
        elif self.signal == signal.SIGTERM:
            log.warning("Exiting now (SIGTERM): the run is saved.")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
