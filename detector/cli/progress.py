"""Progress for the commands: a tqdm bar per scene on a terminal, a periodic line when there is none.

Both are driven by :class:`detector.batch.SceneProgress` events (or plain ``(done, total)`` calls).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

from detector.batch import SceneProgress

#: Without a terminal, at most one progress line per this many seconds.
LINE_INTERVAL_S = 30.0


class Bar:
    """A tqdm bar, driven by a ``progress(done, total)`` callback."""

    def __init__(self, label: str, disable: bool, unit: str = "tile") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=0, desc=label, unit=unit, leave=False, disable=disable or None, dynamic_ncols=True
        )

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class BatchProgress:
    """Progress of a batch of scenes: a bar per scene on a terminal, else a line at most every 30 s.

    Args:
        quiet: show nothing.
        tty: whether stderr is a terminal (default: ask it).
        interval: seconds between two progress lines without a terminal (default :data:`LINE_INTERVAL_S`).
        clock: the time source (seconds, monotonic).
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        tty: bool | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet = quiet
        self.tty = _stderr_is_tty() if tty is None else tty
        self.interval = LINE_INTERVAL_S if interval is None else interval
        self.clock = clock
        self._bar: Bar | None = None
        self._index: int | None = None
        self._last = 0.0

    def __call__(self, event: SceneProgress) -> None:
        if self.quiet:
            return
        if event.index != self._index:
            self.close()
            self._index = event.index
            self._last = self.clock()
            if self.tty:
                self._bar = Bar(f"[{event.index + 1}/{event.count}] {_base(event.scene)}", disable=False)
        if self._bar is not None:
            self._bar(event.done, event.total)
        elif self.clock() - self._last >= self.interval and event.done < event.total:
            self._last = self.clock()
            click.echo(
                f"[{event.index + 1}/{event.count}] {event.scene}: {event.done}/{event.total} tiles", err=True
            )

    def close(self) -> None:
        """Close the current bar (call when the batch ends)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ClusterProgress:
    """Progress of scenes that run side by side (Dask workers): one bar over the tiles of every scene.

    The bar's total grows as scenes start and report their tile counts; its label counts finished scenes.
    Without a terminal, a line at most every ``interval`` seconds.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        tty: bool | None = None,
        interval: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet = quiet
        self.tty = _stderr_is_tty() if tty is None else tty
        self.interval = interval
        self.clock = clock
        self.tiles: dict[int, tuple[int, int]] = {}  # scene index -> (done, total)
        self._bar: Bar | None = None
        self._last = clock()

    def __call__(self, event: SceneProgress) -> None:
        if self.quiet:
            return
        self.tiles[event.index] = (event.done, event.total)
        done = sum(d for d, _ in self.tiles.values())
        total = sum(t for _, t in self.tiles.values())
        finished = sum(1 for d, t in self.tiles.values() if t and d >= t)
        label = f"{finished}/{event.count} scenes"
        if self.tty:
            if self._bar is None:
                self._bar = Bar(label, disable=False)
            self._bar.bar.set_description_str(label, refresh=False)
            self._bar(done, total)
        elif self.clock() - self._last >= self.interval:
            self._last = self.clock()
            click.echo(f"{label}, {done}/{total} tiles", err=True)

    def close(self) -> None:
        """Close the bar (call when the batch ends)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _base(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except ValueError:  # closed
        return False
