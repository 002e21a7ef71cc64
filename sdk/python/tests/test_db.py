"""``self.db``: values both ways, what the host fills, and each error."""

import unittest
import uuid

import support  # noqa: F401  (import paths)
from support import ANN

from consumer_host import WebsocketConsumer
from consumer_host.testing import Hub, WebsocketCommunicator


class Probe(WebsocketConsumer):
    """Runs the test's function inside an event, with ``self`` and the host."""

    def receive(self, text_data=None, bytes_data=None):
        Probe.result = Probe.function(self)


class DatabaseTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.hub = Hub(read=["things", "readable"], write=["things"])
        self.hub.db.executescript("""
            CREATE TABLE things (id char(32) NOT NULL PRIMARY KEY, n integer NULL, r real NULL,
                                 t text NULL, b blob NULL, owner_id char(32) NULL,
                                 created_at datetime NOT NULL, UNIQUE (t));
            CREATE TABLE readable (k integer PRIMARY KEY, v text);
            CREATE TABLE secret (k integer PRIMARY KEY);
            INSERT INTO readable VALUES (1, 'one'), (2, 'two');
        """)

    async def run_in_event(self, function):
        communicator = WebsocketCommunicator(Probe, "/", user=ANN, hub=self.hub)
        await communicator.connect()
        Probe.function = staticmethod(function)
        Probe.result = None
        await communicator.send_to(text_data="go")
        return Probe.result

    async def test_insert_returns_the_row_as_written(self):
        owner = uuid.UUID(ANN.id)
        row = await self.run_in_event(lambda self: self.db.insert(
            "things", {"n": True, "r": 2.5, "t": "é", "b": b"\x00\xff", "owner_id": owner}))
        self.assertRegex(row.pop("id"), r"^[0-9a-f]{32}$")
        self.assertRegex(row.pop("created_at"), r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
        self.assertEqual(row, {"n": 1, "r": 2.5, "t": "é", "b": b"\x00\xff", "owner_id": ANN.id})

    async def test_a_hyphenated_uuid_is_stored_as_hex(self):
        row = await self.run_in_event(lambda self: self.db.insert(
            "things", {"owner_id": str(uuid.UUID(ANN.id)), "n": None}))
        self.assertEqual((row["owner_id"], row["n"]), (ANN.id, None))

    async def test_query_returns_dicts_and_binds_parameters(self):
        rows = await self.run_in_event(lambda self: self.db.query(
            "SELECT k, v FROM readable WHERE k >= ?1 ORDER BY k", [1]))
        self.assertEqual(rows, [{"k": 1, "v": "one"}, {"k": 2, "v": "two"}])
        raw = await self.run_in_event(lambda self: self.db.query_rows(
            "SELECT v, v AS w FROM readable WHERE v = ?", ("two",)))
        self.assertEqual(raw, (["v", "w"], [["two", "two"]]))

    async def test_each_error_is_its_own_exception(self):
        from consumer_host import (AccessDenied, DatabaseError, IntegrityError, InvalidQuery,
                                   NoSuchTable)

        def attempts(self):
            out = []
            calls = [
                lambda: self.db.insert("secret", {"k": 1}),
                lambda: self.db.query("SELECT * FROM secret", []),
                lambda: self.db.insert("nothing", {"k": 1}),
                lambda: self.db.insert("things", {"nope": 1}),
                lambda: self.db.query("SELECT * FROM nowhere", []),
                lambda: self.db.query("DELETE FROM readable", []),
                lambda: self.db.query("SELECT ?1, ?2", [1]),
                lambda: [self.db.insert("things", {"t": "same"}) for _ in range(2)],
            ]
            for call in calls:
                try:
                    call()
                    out.append(None)
                except DatabaseError as err:
                    out.append((type(err), str(err)))
            return out

        results = await self.run_in_event(attempts)
        self.assertEqual([kind for kind, _ in results], [AccessDenied, AccessDenied, AccessDenied, NoSuchTable,
                                                         NoSuchTable, InvalidQuery, InvalidQuery, IntegrityError])
        self.assertIn("insert into secret: access denied to write to secret", results[0][1])
        self.assertIn("UNIQUE constraint failed: things.t", results[7][1])

    async def test_unsupported_values_and_params(self):
        def attempts(self):
            out = []
            for call in (lambda: self.db.insert("things", {"t": object()}),
                         lambda: self.db.query("SELECT ?1", "abc"),
                         lambda: self.db.insert("things", [("t", 1)]),
                         lambda: self.db.insert("things", {"n": 2**64})):
                try:
                    call()
                except (TypeError, OverflowError) as err:
                    out.append(type(err).__name__)
            return out

        self.assertEqual(await self.run_in_event(attempts), ["TypeError", "TypeError", "TypeError", "OverflowError"])


if __name__ == "__main__":
    unittest.main()
