"""``self.db``: the tables the consumer's configuration grants.

This replaces the Django ORM inside a consumer: ``insert`` writes one row and
returns it as written (the host fills a missing UUID primary key and a
missing ``NOT NULL`` datetime), ``query`` runs one read-only statement with
bound parameters. Values are None, int, float, str or bytes (a bool is
stored as 0 or 1; a ``uuid.UUID`` as its 32 hex digits). Failures raise the
exceptions in ``consumer_host.exceptions`` (``IntegrityError``,
``AccessDenied``, ``NoSuchTable``, ``InvalidQuery``, ``QueryTimeout``, all
``DatabaseError``).
"""

from collections.abc import Mapping

from . import _host


class Database:
    """The host's database calls, with dicts in and out."""

    def insert(self, table, row):
        """Inserts ``row`` ({column: value}) into ``table``; returns the row
        as written, every column included, as a dict."""
        if not isinstance(row, Mapping):
            raise TypeError("db.insert(table, row) takes the row as a dict {column: value}")
        return dict(_host.db_insert(table, list(row.items())))

    def query(self, sql, params=()):
        """Runs one read-only SQL statement with ``params`` bound to ``?1``,
        ``?2``... (or ``?``) and returns its rows as a list of dicts keyed by
        column name (give duplicate column names an alias: the last wins)."""
        columns, rows = self.query_rows(sql, params)
        return [dict(zip(columns, row)) for row in rows]

    def query_rows(self, sql, params=()):
        """As ``query``, but returns ``(columns, rows)`` with each row a list
        in column order (for duplicate column names, or to save the dicts)."""
        if isinstance(params, (str, bytes, Mapping)) or not hasattr(params, "__iter__"):
            raise TypeError("db.query(sql, params) takes params as a list or tuple of values")
        return _host.db_query(sql, list(params))
