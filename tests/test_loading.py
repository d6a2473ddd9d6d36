"""Loading apps: module:attr, factories, ASGI 2 and 3 detection, and clear errors."""

from __future__ import annotations

import sys
import textwrap

from twisted.trial import unittest

from hello_asgi.loading import AppLoadError, as_asgi3, asgi_version, load_app


class LoadingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        import os

        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "sample_app.py"), "w") as module:
            module.write(textwrap.dedent("""
                async def asgi3(scope, receive, send): pass
                def asgi2(scope):
                    async def instance(receive, send): pass
                    return instance
                class ClassApp:
                    def __init__(self, scope): self.scope = scope
                    async def __call__(self, receive, send): pass
                class CallableApp:
                    async def __call__(self, scope, receive, send): pass
                callable_app = CallableApp()
                def factory():
                    return asgi3
                def no_arguments(): pass
                not_callable = 42
                class nested:
                    app = asgi3
            """))
        with open(os.path.join(self.directory, "broken_app.py"), "w") as module:
            module.write("import this_module_does_not_exist\n")
        self.addCleanup(sys.modules.pop, "sample_app", None)
        self.addCleanup(sys.modules.pop, "broken_app", None)
        self.addCleanup(lambda: self.directory in sys.path and sys.path.remove(self.directory))

    def load(self, reference: str, interface: str = "auto"):  # type: ignore[no-untyped-def]
        return load_app(reference, self.directory, interface)

    def test_asgi3_forms(self) -> None:
        for reference in ("sample_app:asgi3", "sample_app:callable_app", "sample_app:factory()",
                          "sample_app:nested.app"):
            app = self.load(reference)
            self.assertEqual(asgi_version(app), "3.0", reference)

    def test_asgi2_forms_are_wrapped(self) -> None:
        for reference in ("sample_app:asgi2", "sample_app:ClassApp"):
            app = self.load(reference)
            self.assertEqual(asgi_version(app), "2.0", reference)

    def test_interface_can_be_forced(self) -> None:
        self.assertEqual(asgi_version(self.load("sample_app:asgi3", "asgi2")), "2.0")
        self.assertEqual(asgi_version(as_asgi3(lambda scope: None, "asgi3")), "3.0")

    def test_errors_are_one_clear_line(self) -> None:
        cases = {
            "nosuchmodule:app": "no module named 'nosuchmodule'",
            "broken_app:app": "importing 'broken_app' failed: No module named 'this_module_does_not_exist'",
            "sample_app:missing": "module 'sample_app' has no attribute 'missing'",
            "sample_app:not_callable": "int object is not an ASGI app",
            "sample_app:no_arguments": "not an ASGI or WSGI app",
            "sample_app": "expected the form 'module:attribute'",
        }
        for reference, expected in cases.items():
            with self.assertRaises(AppLoadError) as caught:
                self.load(reference)
            message = str(caught.exception)
            self.assertIn(expected, message, reference)
            self.assertNotIn("\n", message)
