"""The exceptions a consumer may see or raise.

The first three keep Channels' names so that code raising them keeps working.
The others turn the host's error variants (see the WIT world) into ordinary
Python exceptions with messages that say what to do.
"""


class AcceptConnection(Exception):
    """Raised inside ``connect()`` to accept the connection (as in Channels)."""


class DenyConnection(Exception):
    """Raised inside ``connect()`` to refuse the connection (HTTP 403)."""


class StopConsumer(Exception):
    """Channels raises this to end a consumer; here it just ends the handler.

    The host owns the connection's lifetime, so there is nothing to stop:
    raising it is accepted and ignored.
    """


class ConsumerHostError(Exception):
    """Base of the errors specific to consumer-host."""


class MessageTooLarge(ConsumerHostError, ValueError):
    """A message to the client exceeds the host's maximum message size."""


class GroupError(ConsumerHostError, ValueError):
    """The host refused a group operation."""


class InvalidGroupName(GroupError):
    """A group name is 1 to 99 ASCII letters, digits, ``-``, ``_`` or ``.``."""


class InvalidEvent(GroupError):
    """A group event must be a JSON object with a string ``type``."""


class EventTooLarge(GroupError):
    """A group event exceeds the host's limit."""


class StateTooLarge(ConsumerHostError):
    """The attributes kept on ``self`` exceed the host's state limit."""


class WouldSuspend(ConsumerHostError, RuntimeError):
    """A handler awaited something that waits for time or I/O to pass.

    Host calls return at once, so handlers run to completion without an event
    loop; awaiting a future, a task, ``asyncio.sleep(n > 0)`` or network I/O
    would wait forever. This error says so instead of hanging.
    """


class DatabaseError(ConsumerHostError):
    """A database call failed; the base of the errors below."""


class AccessDenied(DatabaseError):
    """The consumer's configuration does not grant this access to the table."""


class NoSuchTable(DatabaseError):
    """No such table or column."""


class IntegrityError(DatabaseError):
    """A constraint (unique, not null, foreign key...) refused the row."""


class InvalidQuery(DatabaseError):
    """The call is malformed: not one read-only statement, wrong parameters..."""


class QueryTimeout(DatabaseError):
    """The statement ran longer than the host allows and was interrupted."""
