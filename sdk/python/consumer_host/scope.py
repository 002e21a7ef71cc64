"""The Channels-shaped ``scope`` and its ``user``, made from the host's scope."""

from urllib.parse import urlencode


class User:
    """The connection's authenticated user, shaped like a Django user.

    ``id`` is the primary key as the database stores it (for a UUID key, 32
    lowercase hex digits); ``name`` is None when the database holds NULL.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, id, name, email):
        self.id = id
        self.name = name
        self.email = email

    @property
    def pk(self):
        return self.id

    def get_username(self):
        return self.email

    def __eq__(self, other):
        return isinstance(other, User) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __str__(self):
        return self.email or self.name or self.id

    def __repr__(self):
        return f"<User {self.id} {self.email!r}>"


class AnonymousUser:
    """The user of a connection without a token, shaped like Django's."""

    id = None
    pk = None
    name = ""
    email = ""
    is_authenticated = False
    is_anonymous = True
    is_active = False

    def get_username(self):
        return ""

    def __eq__(self, other):
        return isinstance(other, AnonymousUser)

    def __hash__(self):
        return 1

    def __str__(self):
        return "AnonymousUser"

    def __repr__(self):
        return "<AnonymousUser>"


def build_scope(raw):
    """A Channels scope dict from the host's scope (see ``_host.get_scope``).

    ``headers``, ``client`` and ``server`` are not known to the consumer (the
    host has dealt with them); they are present but empty so code that reads
    them does not fail.
    """
    user = raw["user"]
    return {
        "type": "websocket",
        "path": raw["path"],
        "raw_path": raw["path"].encode("utf-8"),
        # The host has removed the token and percent-decoded the pairs.
        "query_string": urlencode(raw["query"]).encode("ascii"),
        "headers": [],
        "client": None,
        "server": None,
        "subprotocols": list(raw["subprotocols"]),
        "url_route": {"args": (), "kwargs": dict(raw["url_kwargs"])},
        "user": AnonymousUser() if user is None else User(user["id"], user["name"], user["email"]),
        "connection_id": raw["connection_id"],
    }
