// {{name}}: a WebSocket consumer for consumer-host.
//
// Everyone connected to /ws/<room>/ shares a room: each JSON message
// `{"text": "..."}` a client sends goes to everyone in the room as
// `{"text", "from"}`.
//
// A consumer object lives for one event; what it sets on `this` (JSON
// values) is kept by the host between events. Group events are handled by
// the method their type names: `room.message` → room_message().

import { JsonWebsocketConsumer } from 'consumer-host-sdk';

export class RoomConsumer extends JsonWebsocketConsumer {
  // room_message() reads only its event and only sends: the host may run it
  // once per message for the whole room.
  static pureEvents = ['room.message'];

  connect() {
    const room = this.scope.urlRoute.kwargs.room ?? 'lobby';
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(room)) {
      this.close(4000, 'bad room name'); // before accept: the handshake is refused (HTTP 403)
      return;
    }
    this.group = `room_${room}`; // kept for the next events
    this.groupAdd(this.group);
    this.accept();
  }

  receiveJson(content) {
    if (typeof content?.text !== 'string') {
      this.sendJson({ type: 'error', detail: 'send {"text": "..."}' });
      return;
    }
    const from = this.scope.user.name ?? 'anonymous';
    this.groupSend(this.group, { type: 'room.message', text: content.text, from });
  }

  room_message(event) {
    this.sendJson({ text: event.text, from: event.from });
  }

  // Invalid JSON from a client would otherwise close its connection (1011).
  decodeJson(text) {
    try {
      return JSON.parse(text);
    } catch {
      return undefined;
    }
  }
}
