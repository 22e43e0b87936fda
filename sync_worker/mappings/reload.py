"""Hot reload: hold the current good :class:`Mappings`, swap in a new set when the files change.

Changes are noticed by polling the directory's ``*.yaml`` files (path, mtime in ns, size) every
``interval`` seconds in a daemon thread (a change is loaded once it is stable for one interval),
and on SIGHUP. A broken edit never replaces a good set:
the holder keeps the previous mappings and logs every issue with its file, line and key.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from sync_worker.errors import MappingError
from sync_worker.mappings.loader import load_mappings
from sync_worker.mappings.lookup import Mappings

__all__ = ["MappingsHolder"]

_Fingerprint = tuple[tuple[str, int, int], ...]


def _fingerprint(directory: Path) -> _Fingerprint:
    entries = []
    try:
        paths = sorted(directory.glob("*.yaml"))
    except OSError:
        return ()
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


class MappingsHolder:
    """Holds the current good Mappings; reloads on change (mtime poll) and on SIGHUP.

    The first load happens in ``__init__`` and raises :class:`~sync_worker.errors.MappingError`
    if the directory is not valid: there is no good set to fall back on yet.
    """

    def __init__(
        self, directory: Path, *, interval: float = 2.0, logger: logging.Logger | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._directory = directory
        self._interval = interval
        self._log = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = _fingerprint(directory)
        self._current = load_mappings(directory)
        self._listeners: list[Callable[[Mappings], None]] = []

    def on_reload(self, listener: Callable[[Mappings], None]) -> None:
        """Call ``listener(new)`` after each reload that made a new good set current (from the
        reloading thread; not for a broken edit). A listener handles its own errors."""
        self._listeners.append(listener)

    @property
    def current(self) -> Mappings:
        """The last good set; reading it is a plain attribute read, safe from any thread."""
        return self._current

    def reload(self) -> bool:
        """Load the directory again; True if a new good set is now current.

        On errors the previous set stays current and each issue is logged (file:line: key: why).
        """
        with self._lock:
            self._seen = _fingerprint(self._directory)
            try:
                fresh = load_mappings(self._directory)
            except MappingError as exc:
                self._log.error(
                    "mappings in %s are invalid (%d issue(s)); keeping the previous set",
                    self._directory,
                    len(exc.issues),
                )
                for issue in exc.issues:
                    self._log.error("mapping issue: %s", issue)
                return False
            self._current = fresh
            self._log.info("mappings reloaded from %s", self._directory)
        for listener in tuple(self._listeners):
            listener(fresh)
        return True

    def _run(self) -> None:
        # A change is loaded once it has held still for one interval, so that a file caught
        # half-written by a slow editor does not log a spurious error.
        pending: _Fingerprint | None = None
        while not self._stop.wait(self._interval):
            now = _fingerprint(self._directory)
            if now == self._seen:
                pending = None
            elif now == pending:
                pending = None
                self.reload()
            else:
                pending = now

    def start(self) -> None:
        """Start the polling daemon thread (no-op when already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mappings-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread and wait for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._interval + 5.0)

    def install_sighup(self) -> None:
        """Reload on SIGHUP. Call from the main thread only (Python's signal rule)."""

        def _on_sighup(signum: int, frame: FrameType | None) -> None:
            # Reload off the signal handler: the main thread may be holding the lock.
            threading.Thread(target=self.reload, name="mappings-sighup", daemon=True).start()

        signal.signal(signal.SIGHUP, _on_sighup)
