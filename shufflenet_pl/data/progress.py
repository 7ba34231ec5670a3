"""Progress of the data tools: a bar on a terminal, a plain line every 10 % in a log file.

A redrawn tqdm bar written to a file (a job's log) leaves fragments such as ``0%| | 0/3000`` on one
long line; the training progress bar avoids that the same way (:class:`shufflenet_pl.callbacks.LogFriendlyProgressBar`).
"""

import sys
import time
from typing import Any, Optional, TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """One progress display for a named task that runs in phases (e.g. ``check``, then ``write``).

    On a terminal it is a single tqdm bar, reset for each phase; elsewhere each phase prints a line
    when it passes every ``log_every_percent`` % of its total, and one when it ends. The object also
    stands in for ``tqdm(total=...)`` where a library draws its own bar (``update``, ``close``).

    Args:
        name: what is being processed, shown first on every line (a split's name).
        enabled: show anything at all.
        interactive: draw a bar (default: whether ``stream`` is a terminal).
        stream: where to write (default: ``sys.stderr``).
        log_every_percent: step between the lines in a log.
        unit: what is counted.
    """

    def __init__(
        self,
        name: str,
        enabled: bool = True,
        interactive: Optional[bool] = None,
        stream: Optional[TextIO] = None,
        log_every_percent: int = 10,
        unit: str = "img",
    ) -> None:
        if not 0 < log_every_percent <= 100:
            raise ValueError(f"log_every_percent must be in (0, 100], got {log_every_percent}")
        self.name = name
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.log_every_percent = log_every_percent
        self.unit = unit
        self.phase_name = ""
        self.total = 0
        self.done = 0
        self._logged_percent = 0
        self._started = time.monotonic()
        self._bar: Optional[tqdm] = None

    def phase(self, phase_name: str, total: int) -> "Progress":
        """Start counting ``total`` items of a new phase (the bar is reset, not redrawn below)."""
        self._finish_phase()
        self.phase_name, self.total, self.done = phase_name, total, 0
        self._logged_percent = 0
        self._started = time.monotonic()
        if self.enabled and self.interactive:
            if self._bar is None:
                self._bar = tqdm(total=total, desc=self._label(), unit=self.unit, file=self.stream, leave=True)
            else:
                self._bar.reset(total=total)
                self._bar.set_description(self._label())
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.total <= 0:
            return
        percent = min(100, 100 * self.done // self.total) // self.log_every_percent * self.log_every_percent
        if percent > self._logged_percent and percent < 100:
            self._logged_percent = percent
            self._line(percent)

    def close(self) -> None:
        """End the current phase (what a library's ``progress.close()`` calls); the bar stays open
        for the next phase until :meth:`finish`."""
        self._finish_phase()

    def finish(self) -> None:
        """End the last phase and the bar."""
        self._finish_phase()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def as_tqdm(self, *args: Any, **kwargs: Any) -> "Progress":
        """A stand-in for ``tqdm(total=n)`` in a library that draws its own bar: it counts into the
        current phase (started with :meth:`phase` beforehand)."""
        return self

    def _label(self) -> str:
        return f"{self.name}: {self.phase_name}" if self.phase_name else self.name

    def _line(self, percent: int) -> None:
        elapsed = time.monotonic() - self._started
        print(
            f"{self._label()} {percent:3d} % ({self.done}/{self.total} {self.unit}, {elapsed:.0f} s)",
            file=self.stream,
            flush=True,
        )

    def _finish_phase(self) -> None:
        if self.enabled and self._bar is None and self.total > 0 and self._logged_percent < 100:
            self._logged_percent = 100
            self._line(100)
