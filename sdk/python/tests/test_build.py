"""``python -m consumer_host.build``: its interface and exit codes.

The checks that fail before componentize-py runs are fast and run
everywhere; a successful build is covered by test_component (and its kept
builds).
"""

import os
import subprocess
import sys
import tempfile
import unittest

import component_builds
import support

from consumer_host import build


def run_build(*args, python=(sys.executable,), env=None):
    return subprocess.run([*python, "-m", "consumer_host.build", *args], cwd=support.SDK,
                          capture_output=True, text=True, env=env)


class BuildInterfaceTests(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.project = self.tmp.name
        self.out = os.path.join(self.project, "out.wasm")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        with open(os.path.join(self.project, name), "w", encoding="utf-8") as f:
            f.write(text)

    def assertExit(self, result, code, message):
        self.assertEqual(result.returncode, code, result.stderr)
        self.assertIn(message, result.stderr)
        self.assertFalse(os.path.exists(self.out))

    def test_missing_arguments(self):
        self.assertExit(run_build("--project", self.project), 2, "required: --wit, -o/--output")

    def test_a_project_that_is_not_there(self):
        self.assertExit(run_build("--project", self.project + "/nope", "--wit", ".", "-o", self.out),
                        2, "not a folder")

    def test_no_entry_anywhere(self):
        self.assertExit(run_build("--project", self.project, "--wit", ".", "-o", self.out), 2,
                        "no --entry given and no")

    def test_the_entry_comes_from_consumer_toml(self):
        self.write("consumer.toml", 'name = "x"\nlang = "python"\nentry = "app:Thing"\n')
        self.assertExit(run_build("--project", self.project, "--wit", ".", "-o", self.out), 2,
                        "entry 'app:Thing': no")

    def test_a_malformed_entry(self):
        self.assertExit(run_build("--project", self.project, "--entry", "consumers.Chat", "--wit", ".",
                                  "-o", self.out), 2, "must look like 'module:ClassName'")

    def test_a_syntax_error(self):
        self.write("consumers.py", "class Broken(:\n")
        self.assertExit(run_build("--project", self.project, "--entry", "consumers:Broken", "--wit", ".",
                                  "-o", self.out), 2, "consumers.py:1: syntax error")

    def test_no_toolchain(self):
        self.write("consumers.py", "from consumer_host import WebsocketConsumer\nclass C(WebsocketConsumer): pass\n")
        # -S: without site-packages this Python has no componentize-py.
        env = dict(os.environ, PYTHONPATH=support.SDK)
        self.assertExit(run_build("--project", self.project, "--entry", "consumers:C", "--wit", ".",
                                  "-o", self.out, python=(sys.executable, "-S"), env=env),
                        4, "componentize-py is not installed")

    @unittest.skipIf(component_builds.missing(), component_builds.missing())
    def test_a_module_that_does_not_import(self):
        # The usual slip when moving a Channels consumer: an import left unchanged.
        self.write("consumers.py", "from channels.generic.websocket import AsyncWebsocketConsumer\n")
        self.assertExit(run_build("--project", self.project, "--entry", "consumers:ChatConsumer", "--wit",
                                  component_builds.WIT, "-o", self.out), 3, "No module named 'channels'")

    @unittest.skipIf(component_builds.missing(), component_builds.missing())
    def test_an_entry_that_is_not_a_consumer(self):
        self.write("consumers.py", "class ChatConsumer:\n    pass\n")
        self.assertExit(run_build("--project", self.project, "--entry", "consumers:ChatConsumer", "--wit",
                                  component_builds.WIT, "-o", self.out), 3, "is not a consumer")

    def test_the_app_module(self):
        source = build.app_module_source("consumers:ChatConsumer")
        self.assertIn("Handler = _component.load('consumers:ChatConsumer')", source)
        compile(source, "consumer_host_app.py", "exec")


if __name__ == "__main__":
    unittest.main()
