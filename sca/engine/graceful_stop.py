"""Stopping training cleanly on SIGTERM / SIGINT: finish the step, checkpoint it, stop.

A signal only sets a flag; at the end of the step every rank learns whether any rank got one (so
all stop at the same iteration), rank 0 saves that iteration's checkpoint (atomically) unless the
periodic checkpointer just did, and :class:`TrainingStopped` ends the training loop. Repeated
signals are ignored until then: the step in flight finishes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["STOP_SIGNALS", "TrainingStopped", "GracefulStop"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(BaseException):
    """Training stopped on a signal after saving a checkpoint. Like ``KeyboardInterrupt`` it is not
    an ``Exception``: it is not an error, and ``except Exception`` must not swallow it."""

    def __init__(self, signum: int, iteration: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}")
        self.signum = signum
        self.iteration = iteration

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


class GracefulStop(HookBase):
    """Hook that turns SIGTERM / SIGINT into a checkpointed stop at the end of the current step.

    Args:
        checkpointer: saves ``model_<iteration>`` on rank 0.
    """

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            logger.warning("%s received: stopping after this step with a checkpoint", signal.Signals(signum).name)

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training runs outside the main thread: SIGTERM / SIGINT will not stop it cleanly")
            return
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def after_train(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def after_step(self) -> None:
        signum = self.signum or 0
        if comm.get_world_size() > 1:
            signum = max(comm.all_gather(signum))
        iteration = self.trainer.iter
        if not signum or iteration + 1 >= self.trainer.max_iter:
            return
        name = f"model_{iteration:07d}"
        if comm.is_main_process() and os.path.basename(self.checkpointer.get_checkpoint_file()) != f"{name}.pth":
            self.checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        raise TrainingStopped(signum, iteration)
