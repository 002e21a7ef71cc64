"""Create users, a conversation between them (memberships included) and
optionally messages, all through the ORM, and print what was made as JSON.

    python manage.py chat_seed [--user EMAIL:NAME ...] [--password PW]
                               [--message TEXT ...] [--tokens]

Default users: alice@example.com:Alice and bob@example.com:Bob. A user whose
email already exists is reused. One new conversation holds every named user.
Each --message is sent by the first user to the second, in order.
--tokens adds each user's access and refresh token, minted by simplejwt with
SIMPLE_JWT["SIGNING_KEY"] (env JWT_SECRET, else SECRET_KEY).

Output:
    {"users": [{"id", "email", "name", "access"?, "refresh"?}],
     "conversation": {"id", "created_at", "modified_at"},
     "memberships": [{"id", "conversation_id", "user_id"}],
     "messages": [chat_dump's element for each message]}
UUIDs hyphenated, datetimes ISO 8601 with offset.
"""
import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chat.management.commands.chat_dump import message_json
from chat.models import Conversation, ConversationMessage


class Command(BaseCommand):
    help = "Create users, a conversation and messages through the ORM; print them as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--user", action="append", metavar="EMAIL:NAME")
        parser.add_argument("--password", default="password")
        parser.add_argument("--message", action="append", default=[], metavar="TEXT")
        parser.add_argument("--tokens", action="store_true")

    def handle(self, *args, **options):
        specs = options["user"] or ["alice@example.com:Alice", "bob@example.com:Bob"]
        if options["message"] and len(specs) < 2:
            raise CommandError("--message needs two users")
        User = get_user_model()
        with transaction.atomic():
            users = []
            for spec in specs:
                email, _, name = spec.partition(":")
                user = User.objects.filter(email=email).first()
                if user is None:
                    user = User.objects.create_user(
                        email=email, password=options["password"], name=name or None
                    )
                users.append(user)
            conversation = Conversation.objects.create()
            conversation.users.add(*users)
            messages = [
                ConversationMessage.objects.create(
                    conversation=conversation, body=body, created_by=users[0], sent_to=users[1]
                )
                for body in options["message"]
            ]
        conversation.refresh_from_db()
        through = Conversation.users.through
        out = {
            "users": [self.user_json(u, options["tokens"]) for u in users],
            "conversation": {
                "id": str(conversation.id),
                "created_at": conversation.created_at.isoformat(),
                "modified_at": conversation.modified_at.isoformat(),
            },
            "memberships": [
                {"id": m.id, "conversation_id": str(m.conversation_id), "user_id": str(m.user_id)}
                for m in through.objects.filter(conversation=conversation).order_by("id")
            ],
            "messages": [
                message_json(m)
                for m in ConversationMessage.objects.select_related("created_by")
                .filter(id__in=[m.id for m in messages])
                .order_by("created_at", "id")
            ],
        }
        self.stdout.write(json.dumps(out, ensure_ascii=False))

    @staticmethod
    def user_json(user, tokens):
        row = {"id": str(user.id), "email": user.email, "name": user.name}
        if tokens:
            from rest_framework_simplejwt.tokens import RefreshToken

            refresh = RefreshToken.for_user(user)
            row["access"] = str(refresh.access_token)
            row["refresh"] = str(refresh)
        return row
