"""Print every ConversationMessage, read through the ORM, as one JSON array.

    python manage.py chat_dump [--conversation UUID] [--indent N]

Each element:
    {"id": "<hyphenated uuid>", "body": "...",
     "created_at": "<ISO 8601 with offset, as Django returns it>",
     "conversation_id": "<uuid>", "created_by_id": "<uuid>",
     "created_by_name": "<name or null>", "sent_to_id": "<uuid>"}
ordered by created_at, then id. With USE_TZ=True the ORM returns aware
datetimes in UTC, so created_at always ends in +00:00.
"""
import json

from django.core.management.base import BaseCommand

from chat.models import ConversationMessage


def message_json(message):
    return {
        "id": str(message.id),
        "body": message.body,
        "created_at": message.created_at.isoformat(),
        "conversation_id": str(message.conversation_id),
        "created_by_id": str(message.created_by_id),
        "created_by_name": message.created_by.name,
        "sent_to_id": str(message.sent_to_id),
    }


class Command(BaseCommand):
    help = "Print every chat message, read through Django's ORM, as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--conversation", help="only this conversation's messages")
        parser.add_argument("--indent", type=int, default=None)

    def handle(self, *args, **options):
        messages = ConversationMessage.objects.select_related("created_by").order_by(
            "created_at", "id"
        )
        if options["conversation"]:
            messages = messages.filter(conversation_id=options["conversation"])
        rows = [message_json(m) for m in messages]
        self.stdout.write(json.dumps(rows, indent=options["indent"], ensure_ascii=False))
