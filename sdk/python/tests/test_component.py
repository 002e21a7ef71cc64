"""The chat and zoo tests again, on the built components under Wasmtime.

Every event runs in a new instance (as after an eviction). Skipped without
wasmtime and componentize-py (the build venv has both) or without the 0.2.0
WIT; see component_builds.py.
"""

import unittest

import component_builds
import support
import test_chat
import test_zoo

SKIP = component_builds.missing()


def setUpModule():
    if SKIP:
        return
    from consumer_host.component_testing import ComponentConsumer

    ComponentChatTests.consumer = ComponentConsumer(component_builds.build(support.CHAT_EXAMPLE))
    ComponentZooTests.consumer = ComponentConsumer(component_builds.build(test_zoo.ZOO))


@unittest.skipIf(SKIP, SKIP)
class ComponentChatTests(test_chat.ChatTests):
    pass


@unittest.skipIf(SKIP, SKIP)
class ComponentZooTests(test_zoo.ZooTests):
    in_component = True

    async def test_the_component_imports_only_wasi_and_the_consumer_world(self):
        from wasmtime import Engine

        imports = self.consumer.component.type.imports(Engine())
        ours = sorted(name for name in imports if not name.startswith("wasi:"))
        self.assertEqual(ours, [f"consumer-host:consumer/{i}@0.2.0" for i in
                                ("connection", "database", "groups", "logging", "state", "types")])


if __name__ == "__main__":
    unittest.main()
