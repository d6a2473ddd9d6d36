"""``--reload``: which files are the app's, and the kernel's word when one changes.

On Linux the watcher is ``twisted.internet.inotify``, already in Twisted: the kernel
wakes the reactor when a watched directory changes, and an idle server does no work at
all. Directories the filters exclude (a virtualenv, ``.git``, ``node_modules``) are never
watched, so the watch count stays that of the app. Elsewhere, the same filters drive a
scan once a second.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.python.filepath import FilePath

log = Logger(namespace="hello_asgi.reload")

DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".venv", "venv", ".git", "__pycache__", "node_modules", ".tox", "*.pyc", ".*.swp")
SETTLE = 0.1  # seconds of quiet after a change before the restart: an editor's save is several events
POLL_INTERVAL = 1.0  # seconds between scans where there is no inotify


@dataclass
class WatchedFiles:
    """The directories watched and the names that count: a file counts when its name matches
    an include and no part of its path below a watched directory matches an exclude."""

    directories: Sequence[Path]
    includes: Sequence[str] = DEFAULT_INCLUDES
    excludes: Sequence[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDES))

    def excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.excludes)

    def counts(self, path: Path) -> bool:
        """Whether a change to ``path`` restarts the server."""
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in self.includes):
            return False
        return not any(self.excluded(part) for part in self._parts_below_root(path))

    def _parts_below_root(self, path: Path) -> Sequence[str]:
        for root in self.directories:
            if path.is_relative_to(root):
                return path.relative_to(root).parts
        return path.parts

    def walk_directories(self, top: Path) -> Iterator[Path]:
        """``top`` and every directory under it that is not excluded (excluded ones are not entered)."""
        for directory, subdirectories, _ in os.walk(top):
            subdirectories[:] = [name for name in subdirectories if not self.excluded(name)]
            yield Path(directory)

    def snapshot(self) -> dict[Path, float]:
        """Every counted file and its modification time, for the scanning watcher."""
        found: dict[Path, float] = {}
        for top in self.directories:
            for directory in self.walk_directories(top):
                for entry in os.scandir(directory):
                    path = Path(entry.path)
                    if entry.is_file() and self.counts(path):
                        try:
                            found[path] = entry.stat().st_mtime
                        except OSError:
                            continue  # gone between listing and reading
        return found


class _Settling:
    """Calls ``changed(path)`` once a burst of changes has been quiet for ``SETTLE`` seconds."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pending: Any = None
        self._first: Path | None = None
        self.changed: Callable[[Path], None] = lambda path: None

    def saw(self, path: Path) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.reset(SETTLE)
            return
        self._first = path
        self._pending = self._reactor.callLater(SETTLE, self._fire)

    def _fire(self) -> None:
        assert self._first is not None
        self.changed(self._first)

    def cancel(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()


class InotifyWatcher:
    """Watches the app's directories through the kernel (Linux)."""

    def __init__(self, files: WatchedFiles, reactor: Any) -> None:
        self.files = files
        self._reactor = reactor
        self._settling = _Settling(reactor)
        self._notifier: Any = None
        self._watched = 0

    def start(self, changed: Callable[[Path], None]) -> None:
        from twisted.internet import inotify

        self._settling.changed = changed
        self._notifier = inotify.INotify(self._reactor)
        self._notifier.startReading()
        for top in self.files.directories:
            for directory in self.files.walk_directories(top):
                self._watch(directory)
        log.info("Watching {count} directories for changes to {includes}", count=self._watched,
                 includes=", ".join(self.files.includes))

    @property
    def directories_watched(self) -> int:
        return self._watched

    def _watch(self, directory: Path) -> None:
        from twisted.internet import inotify

        mask = inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM | inotify.IN_CREATE | inotify.IN_DELETE
        try:
            self._notifier.watch(FilePath(str(directory)), mask, callbacks=[self._event])
            self._watched += 1
        except inotify.INotifyError as error:
            log.warn("Cannot watch {directory}: {error}", directory=str(directory), error=error)

    def _event(self, _: Any, filepath: FilePath, mask: int) -> None:
        from twisted.internet import inotify

        path = Path(os.fsdecode(filepath.path))
        if mask & inotify.IN_ISDIR:
            if mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO) and not self.files.excluded(path.name):
                for directory in self.files.walk_directories(path):
                    self._watch(directory)
            return
        if self.files.counts(path):
            self._settling.saw(path)

    def stop(self) -> None:
        self._settling.cancel()
        if self._notifier is not None:
            self._notifier.loseConnection()


class ScanningWatcher:
    """The same filters, scanned once a second, where the kernel gives no notifications."""

    def __init__(self, files: WatchedFiles, reactor: Any) -> None:
        self.files = files
        self._reactor = reactor
        self._seen: dict[Path, float] = {}
        self._loop: Any = None

    def start(self, changed: Callable[[Path], None]) -> None:
        from twisted.internet.task import LoopingCall

        self._changed = changed
        self._seen = self.files.snapshot()
        self._loop = LoopingCall(self._scan)
        self._loop.clock = self._reactor
        self._loop.start(POLL_INTERVAL, now=False)

    def _scan(self) -> None:
        now = self.files.snapshot()
        changed = sorted(path for path in now.keys() | self._seen.keys() if now.get(path) != self._seen.get(path))
        self._seen = now
        if changed:
            self._changed(changed[0])

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()


def watcher(files: WatchedFiles, reactor: Any) -> InotifyWatcher | ScanningWatcher:
    """The kernel's notifications where Twisted has them, a scan elsewhere."""
    from twisted.python.runtime import platform

    if platform.supportsINotify():
        return InotifyWatcher(files, reactor)
    return ScanningWatcher(files, reactor)


def watching(app_dir: str, directories: Sequence[str] | None, includes: Sequence[str] | None,
             excludes: Sequence[str] | None, reactor: Any) -> InotifyWatcher | ScanningWatcher:
    """The watcher ``--reload`` (or ``run(reload=True)``) asks for: ``directories`` (or the
    app's), the files ``includes`` names (``*.py`` by default), never ``excludes`` nor the
    default excludes."""
    watched = [Path(directory).resolve() for directory in directories or [app_dir]]
    files = WatchedFiles(watched, includes or DEFAULT_INCLUDES, [*DEFAULT_EXCLUDES, *(excludes or [])])
    return watcher(files, reactor)


def without_bytecode() -> None:
    """No process of a reloading server writes ``.pyc`` files: not this one, nor the workers,
    which inherit the variable. Python takes a cached ``.pyc`` as current while the source's
    size and its mtime, in whole seconds, are unchanged, so an edit that keeps the size (one
    character for another) saved within the second the old code was compiled was served as
    the old code."""
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
