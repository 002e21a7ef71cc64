"""{{name}}: a consumer-host consumer, written as for Django Channels.

Clients connected to the same room (the url kwarg ``room`` of the route,
e.g. ``ws/<room>/``) hear each other's messages. Every import a handler uses
goes at the top of the module: a component has only the modules imported
when it is built.
"""

import re

from consumer_host import AsyncJsonWebsocketConsumer


class RoomConsumer(AsyncJsonWebsocketConsumer):
    # room.message renders the event alone: the host may run it once per
    # message for all members instead of once per member.
    pure_events = ["room.message"]

    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()  # refused: the client gets HTTP 403
            return
        room = self.scope["url_route"]["kwargs"].get("room", "lobby")
        # Attributes set on self are kept for the connection's later events.
        self.group = "room." + re.sub(r"[^A-Za-z0-9_.-]", "_", room)[:90]
        self.sent = 0
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def receive_json(self, content, **kwargs):
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text:
            await self.send_json({"error": 'send {"text": "..."}'})
            return
        self.sent += 1
        await self.channel_layer.group_send(self.group, {
            "type": "room.message",
            "text": text,
            "from": self.scope["user"].name or "someone",
        })

    async def room_message(self, event):
        await self.send_json({"text": event["text"], "from": event["from"]})

    async def disconnect(self, code):
        # The host leaves every group on disconnect anyway; a refused
        # connection never joined one.
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
