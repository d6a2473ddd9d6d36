"""--reload's filters and watchers: which files count, the kernel's watcher, the scanning one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from hello_asgi.reload import DEFAULT_EXCLUDES, InotifyWatcher, ScanningWatcher, WatchedFiles
from hello_asgi.testing import asyncio_test


class WatchedFilesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        for directory in ("pkg", ".venv/lib", "node_modules/x", "pkg/__pycache__", "templates/drafts"):
            (self.root / directory).mkdir(parents=True)

    def test_python_files_count_outside_the_default_excludes(self) -> None:
        files = WatchedFiles([self.root])
        self.assertTrue(files.counts(self.root / "pkg" / "views.py"))
        for ignored in ("notes.txt", ".venv/lib/site.py", "node_modules/x/a.py", "pkg/__pycache__/v.py",
                        "pkg/views.pyc"):
            self.assertFalse(files.counts(self.root / ignored), ignored)

    def test_includes_and_excludes_of_ones_own(self) -> None:
        files = WatchedFiles([self.root], ["*.html"], [*DEFAULT_EXCLUDES, "drafts"])
        self.assertTrue(files.counts(self.root / "templates" / "page.html"))
        self.assertFalse(files.counts(self.root / "templates" / "drafts" / "page.html"))
        self.assertFalse(files.counts(self.root / "pkg" / "views.py"))

    def test_excluded_directories_are_never_entered(self) -> None:
        walked = {path.relative_to(self.root).as_posix() for path in WatchedFiles([self.root]).walk_directories(self.root)}
        self.assertEqual(walked, {".", "pkg", "templates", "templates/drafts"})

    def test_the_scanning_watcher_sees_a_change_on_its_next_scan(self) -> None:
        (self.root / "pkg" / "views.py").write_text("a = 1\n")
        clock = Clock()
        changed: list[Path] = []
        watcher = ScanningWatcher(WatchedFiles([self.root]), clock)
        watcher.start(changed.append)
        (self.root / ".venv" / "lib" / "site.py").write_text("ignored = 1\n")
        clock.advance(1.0)
        self.assertEqual(changed, [])
        (self.root / "pkg" / "models.py").write_text("b = 2\n")
        clock.advance(1.0)
        self.assertEqual(changed, [self.root / "pkg" / "models.py"])
        watcher.stop()

    @asyncio_test
    async def test_the_kernel_watcher_sees_a_new_directory_and_settles_a_burst(self) -> None:
        changed: list[Path] = []
        seen: Deferred[None] = Deferred()
        watcher = InotifyWatcher(WatchedFiles([self.root]), reactor)
        watcher.start(lambda path: (changed.append(path), seen.called or seen.callback(None)))
        self.addCleanup(watcher.stop)
        watched = watcher.directories_watched
        (self.root / "pkg" / "sub").mkdir()  # made after the start: watched once it appears
        while watcher.directories_watched == watched:
            await asyncio.sleep(0.01)  # the kernel's word of the new directory is on its way
        for number in range(5):  # one save of an editor is several events
            (self.root / "pkg" / "sub" / "module.py").write_text(f"n = {number}\n")
        await asyncio.wait_for(seen.asFuture(asyncio.get_running_loop()), 10)
        await asyncio.sleep(0.3)  # longer than the settling time: no second call comes
        self.assertEqual(changed, [self.root / "pkg" / "sub" / "module.py"])

    def test_the_command_line_options_make_the_filters(self) -> None:
        from hello_asgi.cli import Options, _reload_watcher

        options = Options()
        options.parseOptions(["--app", "hello_asgi.demo:asgi", "--reload", "--reload-dir", str(self.root / "templates"),
                              "--reload-dir", str(self.root / "pkg"), "--reload-include", "*.html",
                              "--reload-exclude", "drafts"])
        files = _reload_watcher(options, Clock()).files
        self.assertEqual(files.directories, [self.root / "templates", self.root / "pkg"])
        self.assertEqual((list(files.includes), list(files.excludes)), (["*.html"], [*DEFAULT_EXCLUDES, "drafts"]))
