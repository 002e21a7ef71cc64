#!/usr/bin/env python3
"""Print every chat message, read through Django's ORM, as JSON.

Same as `python manage.py chat_dump` (see chat/management/commands/chat_dump.py);
the database comes from CHAT_DB_URL. Arguments are passed on:
    CHAT_DB_URL=/path/db.sqlite3 python check_messages.py [--conversation UUID]
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangochat.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

call_command("chat_dump", *sys.argv[1:])
