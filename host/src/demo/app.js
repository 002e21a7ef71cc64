// The chat page: two panes, each an ordinary chat client.
//
// A pane gets its user's access token from the demo API and opens
// ws/<conversation>/?token=..., sends {"event": "chat_message", "data": ...}
// and shows what comes back: chat frames {"body", "name", "id", "created_at"},
// error frames {"type": "error", "code", "detail"}, close codes. No
// framework, no build step: this file is served as it is written.
'use strict';

/** What close codes mean, as the server uses them. */
const CLOSE_CODES = {
  1000: 'normal closure',
  1001: 'going away (the server is shutting down)',
  1002: 'protocol error',
  1005: 'no status',
  1006: 'the connection dropped without a close frame',
  1007: 'a text frame that is not UTF-8',
  1009: 'message too big ([limits] max_message_bytes)',
  1011: 'the consumer failed (trap, deadline or memory)',
  1013: 'the node is overloaded: try again later',
  4003: 'no longer a member of the conversation',
  4008: 'too slow: the queue towards this client filled up',
  4401: 'the login expired (token expired, or user removed)',
};

/** The demo API's answer, or an Error saying what the server refused. */
async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(`/demo/api/${path}`, options);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    // Not JSON: the status says enough.
  }
  if (!response.ok) {
    const why = (data && data.error) || response.statusText;
    const error = new Error(`${method} /demo/api/${path} was refused: HTTP ${response.status}: ${why}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

const state = { info: null, users: [], panes: [] };

function timeOf(date) {
  return date.toTimeString().slice(0, 8);
}

class Pane {
  constructor(root, index) {
    this.root = root;
    this.index = index;
    this.me = null;
    this.conversation = null;
    this.socket = null;
    root.id = `pane-${index}`;
    this.el('title').textContent = `Pane ${index + 1}`;
    this.el('me').addEventListener('change', () => this.pickMe(this.el('me').value));
    this.el('refresh').addEventListener('click', () => this.guard(refreshUsers));
    this.el('new-user').addEventListener('submit', (event) => {
      event.preventDefault();
      this.guard(() => this.makeUser(this.el('new-name').value));
    });
    this.el('open').addEventListener('click', () => this.guard(() => this.openWith(this.el('other').value)));
    this.el('conversations').addEventListener('change', () => {
      const chosen = this.conversations.find((c) => c.id === this.el('conversations').value);
      if (chosen) this.guard(() => this.connect(chosen));
    });
    this.el('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      this.sendMessage(this.el('body').value);
    });
    this.el('raw-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.sendRaw(this.el('raw').value);
    });
    this.el('bad-token').addEventListener('click', () => {
      if (this.conversation) this.guard(() => this.connect(this.conversation, { tamper: true }));
      else this.log('error', 'open a conversation first');
    });
    this.el('disconnect').addEventListener('click', () => this.disconnect());
    this.conversations = [];
  }

  el(role) {
    return this.root.querySelector(`[data-role="${role}"]`);
  }

  /** Runs an action; what fails is shown in the log, not thrown away. */
  async guard(action) {
    try {
      await action();
    } catch (error) {
      this.log('error', error.message);
    }
  }

  log(kind, text) {
    const item = document.createElement('li');
    item.className = kind;
    item.textContent = `${timeOf(new Date())} ${text}`;
    const log = this.el('log');
    log.prepend(item);
    while (log.children.length > 200) log.lastChild.remove();
  }

  setStatus(text, kind) {
    const status = this.el('status');
    status.textContent = text;
    status.dataset.state = kind;
  }

  renderUsers() {
    for (const [role, exclude] of [['me', null], ['other', this.me && this.me.id]]) {
      const select = this.el(role);
      const chosen = select.value;
      select.replaceChildren(new Option('(pick a user)', ''));
      for (const user of state.users) {
        if (user.id === exclude) continue;
        select.add(new Option(`${user.name} (${user.id.slice(0, 8)})`, user.id));
      }
      select.value = state.users.some((user) => user.id === chosen) ? chosen : '';
    }
  }

  async makeUser(name) {
    const user = await api('POST', 'users', { name: name.trim() });
    this.log('info', `made user ${user.name} (${user.id})`);
    this.el('new-name').value = '';
    await refreshUsers();
    if (!this.me) {
      this.el('me').value = user.id;
      await this.pickMe(user.id);
    }
  }

  async pickMe(id) {
    this.disconnect();
    this.me = state.users.find((user) => user.id === id) || null;
    this.renderUsers();
    this.el('messages').replaceChildren();
    if (this.me) {
      this.log('info', `you are ${this.me.name}`);
      await this.guard(() => this.loadConversations());
    }
  }

  async loadConversations() {
    // Loads may overlap (a refresh while a user is picked): the last one
    // started is the one shown.
    this.loads = (this.loads || 0) + 1;
    const ticket = this.loads;
    const me = this.me;
    const answer = me
      ? await api('GET', `conversations?user=${encodeURIComponent(me.id)}`)
      : { conversations: [] };
    if (ticket !== this.loads || me !== this.me) return;
    this.conversations = answer.conversations;
    const options = [new Option('(your conversations)', '')];
    for (const conversation of this.conversations) {
      const others = conversation.members.filter((m) => m.id !== me.id).map((m) => m.name);
      options.push(new Option(`with ${others.join(', ') || 'nobody'}`, conversation.id));
    }
    const select = this.el('conversations');
    select.replaceChildren(...options);
    if (this.conversation) select.value = this.conversation.id;
  }

  async openWith(otherId) {
    if (!this.me) throw new Error('pick who you are first');
    if (!otherId) throw new Error('pick whom to talk to');
    const conversation = await api('POST', 'conversations', { users: [this.me.id, otherId] });
    this.log('info', `${conversation.created ? 'made' : 'reopened'} conversation ${conversation.id}`);
    await this.loadConversations();
    await this.connect(conversation);
  }

  /** Opens the conversation's socket, as any client would. */
  async connect(conversation, { tamper = false } = {}) {
    this.disconnect();
    this.conversation = conversation;
    this.el('conversations').value = conversation.id;
    const others = conversation.members.filter((m) => m.id !== this.me.id);
    this.el('messages').replaceChildren();
    const history = await api('GET',
      `conversations/${conversation.id}/messages?user=${encodeURIComponent(this.me.id)}`);
    for (const message of history.messages) this.showMessage(message, true);
    let { token } = await api('POST', 'token', { user: this.me.id });
    if (tamper) {
      // Another signature: the server must not take it for a login.
      const last = token.slice(-1) === 'A' ? 'B' : 'A';
      token = token.slice(0, -1) + last;
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const path = state.info.socket_path.replace('{conversation}', conversation.id);
    const url = `${scheme}://${location.host}${path}?${state.info.token_param}=${encodeURIComponent(token)}`;
    const shown = url.replace(/=[^&]+$/, '=…');
    this.log('info', `connecting to ${shown}${tamper ? ' with a tampered token' : ''}`);
    this.setStatus(`connecting with ${others.map((m) => m.name).join(', ')}…`, 'connecting');
    const socket = new WebSocket(url);
    this.socket = socket;
    let opened = false;
    socket.addEventListener('open', () => {
      opened = true;
      this.setStatus(`connected: talking with ${others.map((m) => m.name).join(', ')}`, 'open');
      this.log('info', 'connected');
    });
    socket.addEventListener('message', (event) => this.received(event.data));
    socket.addEventListener('close', (event) => {
      if (this.socket === socket) this.socket = null;
      if (!opened) {
        // A browser does not let a page read the HTTP status of a refused
        // upgrade; the server's log has it, with the reason.
        this.log('error', 'handshake refused: the server answered the upgrade with an HTTP ' +
          'error instead of 101 (403: no valid login or not a member; 429: too many ' +
          'connections of this user; 503: the node is full)');
        this.setStatus('refused', 'refused');
        return;
      }
      const meaning = CLOSE_CODES[event.code] || 'closed by the consumer';
      const reason = event.reason ? `, "${event.reason}"` : '';
      this.log(event.code === 1000 ? 'close' : 'error', `closed with ${event.code}: ${meaning}${reason}`);
      this.setStatus(`closed (${event.code})`, 'closed');
    });
  }

  disconnect() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, 'left');
      this.log('close', 'disconnected');
      this.setStatus('not connected', 'idle');
    }
  }

  received(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      this.log('frame', `a frame that is not JSON: ${text}`);
      return;
    }
    if (frame.type === 'error') {
      this.log('error', `error frame: ${frame.code}: ${frame.detail}`);
    } else if (typeof frame.body === 'string') {
      this.showMessage(frame, false);
      this.log('frame', `message ${frame.id} from ${frame.name}`);
    } else {
      this.log('frame', text);
    }
  }

  showMessage(message, old) {
    const item = document.createElement('li');
    item.className = old ? 'message history' : 'message';
    item.dataset.id = message.id || '';
    const who = document.createElement('strong');
    who.textContent = message.name || '(no name)';
    const when = document.createElement('time');
    when.textContent = (message.created_at || '').slice(11, 19);
    const body = document.createElement('span');
    body.className = 'body';
    body.textContent = message.body;
    item.append(when, ' ', who, ': ', body);
    const list = this.el('messages');
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }

  sendMessage(body) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      this.log('error', 'not connected: open a conversation first');
      return;
    }
    const others = this.conversation.members.filter((m) => m.id !== this.me.id);
    this.socket.send(JSON.stringify({
      event: 'chat_message',
      data: {
        conversation_id: this.conversation.id,
        sent_to_id: others.length ? others[0].id : this.me.id,
        name: this.me.name,
        body,
      },
    }));
    this.el('body').value = '';
  }

  sendRaw(text) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      this.log('error', 'not connected: open a conversation first');
      return;
    }
    this.socket.send(text);
    this.log('info', `sent a raw frame: ${text}`);
  }
}

async function refreshUsers() {
  const answer = await api('GET', 'users');
  state.users = answer.users;
  for (const pane of state.panes) {
    pane.renderUsers();
    if (pane.me) await pane.guard(() => pane.loadConversations());
  }
}

async function start() {
  const template = document.getElementById('pane-template');
  const main = document.getElementById('panes');
  for (let index = 0; index < 2; index += 1) {
    main.append(template.content.cloneNode(true));
    state.panes.push(new Pane(main.lastElementChild, index));
  }
  try {
    state.info = await api('GET', 'info');
    await refreshUsers();
    document.body.dataset.ready = 'true';
  } catch (error) {
    for (const pane of state.panes) pane.log('error', error.message);
  }
}

start();
