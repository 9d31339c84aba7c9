"""Stop cleanly when the scheduler asks: finish the current step, save it, then leave.

SLURM sends SIGTERM before it kills a job that is preempted, requeued or cancelled, and submitit's
USR2 comes before the time limit. During training either signal makes the run save a checkpoint
at the end of the current step and stop; a requeued job then resumes from exactly that step.
After a USR2 the previous handler (submitit's checkpoint-and-requeue) runs once the save is done.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from transformers import TrainerCallback

log = logging.getLogger(__name__)

PREEMPTED = "preempted"
SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class GracefulStop(TrainerCallback):
    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

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
        if self.signal is None:
            log.warning("Received %s: saving at the end of this step, then stopping.", signal.Signals(signum).name)
        self.signal = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    @property
    def stop_reason(self) -> str | None:
        return f"{PREEMPTED} ({signal.Signals(self.signal).name})" if self.signal is not None else None

    def hand_over(self) -> None:
        """After the save: let the scheduler glue that owned the signal (submitit) do its part."""
        previous = self._previous.get(self.signal) if self.signal is not None else None
        if callable(previous):
            previous(self.signal, None)
