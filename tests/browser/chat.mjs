// The chat page as a newcomer uses it, in Debian's chromium driven by
// Playwright: two tabs, two users, one conversation, messages both ways,
// an error frame, a refused handshake, the history in the second pane, and
// the close code every pane shows when the server shuts down.
//
// Run by tests/tests/browser.rs against a real server:
//   CHAT_URL=http://127.0.0.1:PORT BROWSER_MODULES=DIR node chat.mjs
// where DIR holds node_modules/playwright-core (installed from this
// folder's package-lock.json). Prints "SHUT DOWN NOW" on stdout and waits
// for a line on stdin (the server stopped), then one JSON line: the ids and
// the bodies sent, for the test to find in the database.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.CHAT_URL;
if (!base || !process.env.BROWSER_MODULES) {
  throw new Error('set CHAT_URL and BROWSER_MODULES');
}
const require = createRequire(join(process.env.BROWSER_MODULES, 'package.json'));
const { chromium } = require('playwright-core');

// The test and this script take turns: at "SHUT DOWN NOW" on stdout the
// test stops the server, then answers with a line on stdin.
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdin.once('line', resolve));

const started = Date.now();
function step(text) {
  process.stderr.write(`[browser ${((Date.now() - started) / 1000).toFixed(1)}s] ${text}\n`);
}

const problems = [];
function watch(page, name) {
  page.on('pageerror', (error) => problems.push(`${name}: uncaught ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().includes('WebSocket connection')) {
      problems.push(`${name}: console error: ${message.text()}`);
    }
  });
}

const profile = mkdtempSync(join(tmpdir(), 'consumer-host-chromium-'));
step(`chromium with a fresh profile in ${profile}`);
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  timeout: 60_000,
});
context.setDefaultTimeout(15_000);

try {
  const result = await run();
  if (problems.length) throw new Error(`the page reported errors:\n${problems.join('\n')}`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await context.close();
  stdin.close();
  rmSync(profile, { recursive: true, force: true });
}

async function openTab(name) {
  const page = await context.newPage();
  watch(page, name);
  await page.goto(`${base}/`);
  await page.locator('body[data-ready="true"]').waitFor();
  return page;
}

/**
 * Brings the pane's tab to the front before acting in it: chromium runs a
 * background tab's animation frames about once a second, and Playwright's
 * actions wait on them.
 */
async function on(pane) {
  await pane.page().bringToFront();
  return pane;
}

/** Makes a user in a pane; returns its id (the pane's "You are"). */
async function makeUser(pane, name) {
  await on(pane);
  await pane.locator('[data-role="new-name"]').fill(name);
  await pane.locator('[data-role="new-user"] button').click();
  const me = pane.locator('[data-role="me"]');
  await pane.locator('[data-role="me"] option:checked:not([value=""])').waitFor({ state: 'attached' });
  return me.inputValue();
}

/** Opens the conversation with `otherId` and waits until the socket is open. */
async function talkTo(pane, otherId) {
  await on(pane);
  await pane.locator('[data-role="refresh"]').click();
  await pane.locator(`[data-role="other"] option[value="${otherId}"]`).waitFor({ state: 'attached' });
  await pane.locator('[data-role="other"]').selectOption(otherId);
  await pane.locator('[data-role="open"]').click();
  await pane.locator('[data-role="status"][data-state="open"]').waitFor();
  return pane.locator('[data-role="conversations"]').inputValue();
}

async function send(pane, body) {
  await on(pane);
  await pane.locator('[data-role="body"]').fill(body);
  await pane.locator('[data-role="send"]').click();
}

function message(pane, body) {
  return pane.locator('[data-role="messages"] li.message .body', { hasText: body });
}

async function run() {
  step('tab 1: Alice');
  const tab1 = await openTab('tab 1');
  const alicePane = tab1.locator('#pane-0');
  const alice = await makeUser(alicePane, 'Alice');

  step('tab 2: Bob');
  const tab2 = await openTab('tab 2');
  const bobPane = tab2.locator('#pane-0');
  const bob = await makeUser(bobPane, 'Bob');

  step('Alice opens a conversation with Bob, Bob opens his with Alice');
  const conversation = await talkTo(alicePane, bob);
  const bobsConversation = await talkTo(bobPane, alice);
  if (conversation !== bobsConversation) {
    throw new Error(`two conversations: ${conversation} and ${bobsConversation}`);
  }

  const fromAlice = `Hello Bob, from Alice ${Date.now()}`;
  const fromBob = `Hi Alice, Bob here ${Date.now()}`;
  step('Alice -> Bob');
  await send(alicePane, fromAlice);
  await message(bobPane, fromAlice).waitFor();
  await message(alicePane, fromAlice).waitFor();
  step('Bob -> Alice');
  await send(bobPane, fromBob);
  await message(alicePane, fromBob).waitFor();
  await message(bobPane, fromBob).waitFor();
  const shownName = await bobPane
    .locator('[data-role="messages"] li.message', { hasText: fromAlice })
    .locator('strong')
    .textContent();
  if (shownName !== 'Alice') throw new Error(`Bob sees the author as ${shownName}`);

  step('an error frame: Alice sends an unknown event');
  await on(alicePane);
  await alicePane.locator('details summary').click();
  await alicePane.locator('[data-role="raw"]').fill('{"event": "nope", "data": {}}');
  await alicePane.locator('[data-role="raw-form"] button').click();
  const errorFrame = alicePane.locator('[data-role="log"] li.error', { hasText: 'error frame: unknown_event' });
  await errorFrame.waitFor();

  step('a refused handshake: Bob connects with a tampered token');
  await on(bobPane);
  await bobPane.locator('details summary').click();
  await bobPane.locator('[data-role="bad-token"]').click();
  await bobPane.locator('[data-role="log"] li.error', { hasText: 'handshake refused' }).waitFor();
  await bobPane.locator('[data-role="status"][data-state="refused"]').waitFor();

  step('the second pane of tab 1, as Bob: the history');
  const second = await on(tab1.locator('#pane-1'));
  await second.locator('[data-role="refresh"]').click();
  await second.locator(`[data-role="me"] option[value="${bob}"]`).waitFor({ state: 'attached' });
  await second.locator('[data-role="me"]').selectOption(bob);
  await second.locator(`[data-role="conversations"] option[value="${conversation}"]`).waitFor({ state: 'attached' });
  await second.locator('[data-role="conversations"]').selectOption(conversation);
  await second.locator('[data-role="status"][data-state="open"]').waitFor();
  await second.locator('li.message.history .body', { hasText: fromAlice }).waitFor();
  await second.locator('li.message.history .body', { hasText: fromBob }).waitFor();
  step('the second pane sends, and Alice in the first hears it live');
  const fromPane = `Bob again, from the second pane ${Date.now()}`;
  await send(second, fromPane);
  await message(alicePane, fromPane).waitFor();

  if (process.env.SCREENSHOT) {
    await tab1.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }

  step('the server shuts down: both panes of tab 1 show the close code');
  process.stdout.write('SHUT DOWN NOW\n');
  await nextLine();
  const goingAway = (pane) =>
    pane.locator('[data-role="log"] li', { hasText: 'closed with 1001: going away' });
  await on(alicePane);
  await goingAway(alicePane).waitFor();
  await goingAway(second).waitFor();
  await alicePane.locator('[data-role="status"][data-state="closed"]').waitFor();

  step('done');
  return {
    conversation,
    alice,
    bob,
    sent: [
      { body: fromAlice, by: alice, to: bob },
      { body: fromBob, by: bob, to: alice },
      { body: fromPane, by: bob, to: alice },
    ],
    error_shown: await errorFrame.textContent(),
    close_shown: await goingAway(alicePane).textContent(),
  };
}
