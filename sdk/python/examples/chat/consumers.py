# The reference app's chat/consumers.py (DjangoBnB, Django Channels 4), ported to consumer-host:
# only its imports changed, and the ORM call became self.db.insert(...).
import json
from consumer_host import sync_to_async
from consumer_host import AsyncWebsocketConsumer

class ChatConsumer(AsyncWebsocketConsumer):
    async def websocket_connect(self, event):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"

        # Join room group
        await self.channel_layer.group_add(
            self.room_group_name,
            self.channel_name
        )

        await self.accept()

    async def disconnect(self, code):
        # Leave room group
        await self.channel_layer.group_discard(
            self.room_group_name,
            self.channel_name
        )

    # Receive message from WebSocket
    async def receive(self, text_data):
        data = json.loads(text_data)
        conversation_id = data["data"].get("conversation_id")
        sent_to_id = data["data"].get("sent_to_id")
        name = data["data"].get("name")
        body = data["data"].get("body")

        # Send message to room group
        await self.channel_layer.group_send(
            self.room_group_name,
            {
                "type": "chat_message",
                "body": body,
                "name": name
            }
        )

        # Save message to the database
        await self.save_message(conversation_id, body, sent_to_id)

    # Receive message from room group
    async def chat_message(self, event):
        body = event["body"]
        name = event["name"]

        # Send message to WebSocket
        await self.send(text_data=json.dumps({
            "body": body,
            "name": name
        }))

    @sync_to_async
    def save_message(self, conversation_id, body, sent_to_id):
        user = self.scope["user"]

        self.db.insert("chat_conversationmessage", {
            "conversation_id": conversation_id,
            "body": body,
            "sent_to_id": sent_to_id,
            "created_by_id": user.id
        })
