"""Python's ``logging``, ``print`` and stderr, sent to the host's ``log``.

A component has no terminal: its output is worth something only as the
host's log lines, which carry the consumer's name and connection. While a
handler runs (see ``capture``), records of the root logger go to the host
at the matching level, ``print`` (stdout) lines at ``info`` and stderr lines
(warnings, stray tracebacks) at ``warn``.
"""

import logging
import sys

from . import _host


def level_name(levelno):
    """The host's level for a ``logging`` level number."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


class HostHandler(logging.Handler):
    """A logging handler that writes each record as one host log line."""

    def __init__(self):
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def format(self, record):
        if record.name == "root":
            # "root: ..." says nothing; the host adds the consumer's name.
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + self.formatter.formatException(record.exc_info)
            return text
        return super().format(record)

    def emit(self, record):
        try:
            _host.log(level_name(record.levelno), self.format(record))
        except Exception:
            self.handleError(record)


class HostStream:
    """A text stream that writes complete lines to the host at one level."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, level):
        self.level = level
        self._pending = ""

    def write(self, text):
        text = self._pending + str(text)
        *lines, self._pending = text.split("\n")
        for line in lines:
            _host.log(self.level, line)
        return len(text)

    def flush(self):
        if self._pending:
            line, self._pending = self._pending, ""
            _host.log(self.level, line)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def isatty(self):
        return False

    def writable(self):
        return True


def default_level():
    """Lets ``logger.info`` through by default (Python's default is WARNING).

    Called once when the runtime is made, before the consumer's module is
    imported, so a level the module sets itself wins. The host filters again
    with its own settings.
    """
    root = logging.getLogger()
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)


class capture:
    """Routes logging, stdout and stderr to the host for one handler call."""

    _handler = HostHandler()

    def __enter__(self):
        self._stdout, self._stderr = sys.stdout, sys.stderr
        self._out, self._err = HostStream("info"), HostStream("warn")
        sys.stdout, sys.stderr = self._out, self._err
        logging.getLogger().addHandler(self._handler)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self._handler)
        sys.stdout, sys.stderr = self._stdout, self._stderr
        self._out.flush()
        self._err.flush()
        return False
