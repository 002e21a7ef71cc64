"""The project template of ``consumer-host new NAME --lang python``: generated
as the CLI does it (every ``{{name}}`` replaced), it passes its own tests,
natively and (with the build venv) as a built component."""

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest

import component_builds
import support

TEMPLATE = os.path.join(support.SDK, "template")


def generate(name, into):
    """What ``consumer-host new`` does: copy the template, fill in the name."""
    shutil.copytree(TEMPLATE, into, ignore=shutil.ignore_patterns("__pycache__"))
    for root, _, files in os.walk(into):
        for filename in files:
            path = os.path.join(root, filename)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace("{{name}}", name))


class TemplateTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.project = os.path.join(cls.tmp.name, "demo-room")
        generate("demo-room", cls.project)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_every_placeholder_is_filled(self):
        for root, _, files in os.walk(self.project):
            for filename in files:
                with open(os.path.join(root, filename), encoding="utf-8") as f:
                    self.assertNotIn("{{", f.read(), filename)
        with open(os.path.join(self.project, "consumer.toml"), "rb") as f:
            config = tomllib.load(f)
        self.assertEqual(config, {"name": "demo-room", "lang": "python", "entry": "consumers:RoomConsumer"})

    def test_its_own_tests_pass_as_generated(self):
        command = [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-p", "test_consumers.py"]
        result = subprocess.run(command, cwd=self.project, capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=support.SDK))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Ran 4 tests", result.stderr)

    @unittest.skipIf(component_builds.missing(), component_builds.missing())
    def test_it_builds_and_passes_its_tests_as_a_component(self):
        wasm = component_builds.build(self.project)
        tests = os.path.join(self.project, "tests")
        with open(os.path.join(tests, "test_consumers.py"), encoding="utf-8") as f:
            source = f.read()
        swapped = source.replace(
            "from consumers import RoomConsumer  # noqa: E402",
            "from consumer_host.component_testing import ComponentConsumer  # noqa: E402\n"
            f"RoomConsumer = ComponentConsumer({wasm!r})",
        )
        self.assertNotEqual(swapped, source)
        with open(os.path.join(tests, "test_as_component.py"), "w", encoding="utf-8") as f:
            f.write(swapped)
        result = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", "tests", "-p",
                                 "test_as_component.py"], cwd=self.project, capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=support.SDK))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Ran 4 tests", result.stderr)


if __name__ == "__main__":
    unittest.main()
