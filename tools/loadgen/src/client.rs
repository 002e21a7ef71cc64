//! One simulated user: a task that owns its WebSocket, sends on schedule and
//! matches every delivery it receives to the send it came from.
//!
//! Nothing on the per-message path is shared between tasks: each task keeps
//! its own histogram and seen-bitsets, and only publishes running totals into
//! its own cache-line-aligned counters (single writer, relaxed stores) so
//! the main task can print progress and notice when deliveries have drained.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::plan::ClientSpec;

/// Longest a TCP connect plus WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a polite close may take once the run is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Sequence numbers past this are not ours: it bounds a seen-bitset to 2 MiB.
const MAX_SEQ: u64 = 1 << 24;
/// Significant figures of the latency histograms: 1% resolution keeps each
/// per-client histogram a few KiB, which matters at 100k clients.
pub const HISTOGRAM_SIGFIG: u8 = 2;
/// "Not yet" in the deploy timestamps.
pub const UNSET: u64 = u64::MAX;

/// How clients send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Connect and hold, send nothing.
    Idle,
    /// Open loop: one message every `period`.
    Rate {
        /// Time between two sends of one client.
        period: Duration,
        /// Every client sends at the same instants (rooms get bursts), or
        /// their sends are spread over the period.
        lockstep: bool,
    },
    /// Closed loop: at most `window` own messages in flight.
    Saturating {
        /// Own messages sent but not yet echoed back.
        window: u32,
    },
}

/// What the main task tells every client.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Connections are still being opened: read, do not send.
    Connecting,
    /// Everyone is connected: send by this schedule.
    Start(Schedule),
    /// The run is over: close and report.
    Stop,
}

/// The sending period, shared by all clients.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// When sending starts (warmup included).
    pub send_start: Instant,
    /// Sends stamped at or after this (microseconds since the epoch) count.
    pub warmup_end_us: u64,
    /// No send starts at or after this.
    pub send_end: Instant,
    /// A send still blocked at this point is abandoned (the server stopped
    /// reading), so a stuck socket cannot hold up the report.
    pub hard_end: Instant,
}

/// Running totals of one client, read by the progress printer.
#[repr(align(128))]
#[derive(Default)]
pub struct Counters {
    /// Messages sent, warmup included.
    pub sent: AtomicU64,
    /// Deliveries of loadgen messages received, duplicates and warmup included.
    pub received: AtomicU64,
    /// Deliveries owed for this client's tracked sends.
    pub expected: AtomicU64,
    /// Distinct deliveries of tracked messages received by this client.
    pub distinct: AtomicU64,
}

/// State shared by all clients and the main task, none of it per message
/// except the two deploy timestamps, which are read-mostly.
pub struct Shared {
    /// Time origin of every timestamp in a body.
    pub epoch: Instant,
    /// The server.
    /// Each node's address and base URL; a room's members go to them in turn.
    pub servers: Vec<(SocketAddr, String)>,
    /// `ws://host:port`, the prefix of every connection URL.
    /// Local addresses to bind, spread round-robin.
    pub sources: Vec<IpAddr>,
    /// Bounds the handshakes in progress.
    pub connect_permits: Semaphore,
    /// How to send.
    pub mode: Mode,
    /// One per client, indexed by client index.
    pub counters: Box<[Counters]>,
    /// Members of each room that connected, the deliveries a message is owed.
    pub room_connected: Box<[AtomicU32]>,
    /// Clients whose connection is open.
    pub connected: AtomicUsize,
    /// Clients whose connection failed.
    pub failed: AtomicUsize,
    /// Clients that will send no more (their `expected` is final).
    pub done_sending: AtomicUsize,
    /// Connected clients whose connection the server ended.
    pub ended: AtomicUsize,
    /// When the deploy request went out (µs since the epoch), or [`UNSET`].
    pub deploy_started_us: AtomicU64,
    /// When its answer came back, or [`UNSET`].
    pub deploy_finished_us: AtomicU64,
    /// Whether latencies are split into steady/during/after windows.
    pub deploy_windows: bool,
}

/// What one client reports at the end.
#[derive(Default)]
pub struct ClientResult {
    /// Why the connection could not be opened.
    pub connect_failure: Option<String>,
    /// Why the server ended the connection before the run was over.
    pub closed_early: Option<String>,
    /// Messages sent, warmup included.
    pub sent_total: u64,
    /// Messages sent after the warmup.
    pub sent_tracked: u64,
    /// Sends of the schedule skipped because the client fell a period behind
    /// (the server read from it more slowly: backpressure).
    pub skipped: u64,
    /// Deliveries owed for the tracked messages.
    pub expected: u64,
    /// Distinct deliveries of tracked messages received.
    pub distinct: u64,
    /// Deliveries of a tracked message received more than once.
    pub duplicated: u64,
    /// Error frames received.
    pub errors: u64,
    /// Error frames by `code`.
    pub error_codes: BTreeMap<String, u64>,
    /// Text frames that were not a delivery of a loadgen message of this room.
    pub unmatched: u64,
    /// Latencies in µs: one histogram, or steady/during/after with a deploy.
    pub histograms: Vec<Histogram<u32>>,
}

impl ClientResult {
    /// The result of a client that never connected.
    fn failed(reason: String) -> Self {
        Self {
            connect_failure: Some(reason),
            ..Self::default()
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

/// The fields of a received frame that matter, borrowed from the frame when
/// nothing in them is escaped.
#[derive(Deserialize)]
struct Frame<'a> {
    /// The chat message text: our stamp.
    #[serde(borrow, default)]
    body: Option<Text<'a>>,
    /// "error" on error answers.
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
}

/// A JSON string that borrows when it can. serde's own `Cow` always copies
/// inside an `Option`, which would cost an allocation per delivery.
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Runs one client from connect to close.
pub async fn run(
    spec: ClientSpec,
    shared: Arc<Shared>,
    control: watch::Receiver<Control>,
) -> ClientResult {
    let ws = match connect(&spec, &shared).await {
        Ok(ws) => ws,
        Err(reason) => {
            shared.failed.fetch_add(1, Ordering::AcqRel);
            return ClientResult::failed(reason);
        }
    };
    shared.room_connected[spec.room.index].fetch_add(1, Ordering::AcqRel);
    shared.connected.fetch_add(1, Ordering::AcqRel);
    Session::new(spec, shared).drive(ws, control).await
}

/// Opens the TCP connection from this client's source address and does the
/// WebSocket handshake; the error is a short reason for the report.
async fn connect(spec: &ClientSpec, shared: &Shared) -> Result<Ws, String> {
    let _permit = shared
        .connect_permits
        .acquire()
        .await
        .map_err(|_| "cancelled".to_string())?;
    let source = shared.sources[spec.index as usize % shared.sources.len()];
    let (server, base_url) = &shared.servers[spec.local as usize % shared.servers.len()];
    let url = format!("{base_url}/ws/{}/?token={}", spec.room.id, spec.token);
    let attempt = async {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|err| io_reason("socket", &err))?;
        // Earlier runs leave tens of thousands of our ports in TIME_WAIT;
        // without these, bind() scans the whole port range for a free port
        // on every connect (seconds of kernel CPU) and then fails.
        socket
            .set_reuseaddr(true)
            .map_err(|err| io_reason("reuseaddr", &err))?;
        bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|err| io_reason("bind", &err))?;
        let stream = socket
            .connect(*server)
            .await
            .map_err(|err| io_reason("connect", &err))?;
        // Messages are small and latency is what is measured: no Nagle.
        stream
            .set_nodelay(true)
            .map_err(|err| io_reason("nodelay", &err))?;
        // Small buffers: frames are a few hundred bytes, and the default
        // 128 KiB read buffer per connection would cost GiBs at 100k clients.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096);
        match tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config)).await
        {
            Ok((ws, _response)) => Ok(ws),
            Err(WsError::Http(response)) => Err(format!("http {}", response.status().as_u16())),
            Err(WsError::Io(err)) => Err(io_reason("handshake", &err)),
            Err(err) => Err(format!("handshake: {err}")),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_string()),
    }
}

/// Lets connect() pick the source port (IP_BIND_ADDRESS_NO_PORT), which only
/// needs the 4-tuple to be unique, instead of bind() reserving a port for any
/// destination. Best effort: without it the run still works, more slowly.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the fd is open for the duration of the call and `on` outlives
    // it; the kernel only reads sizeof(c_int) bytes.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A short, countable reason: the error kind, not the message with its addresses.
fn io_reason(step: &str, err: &std::io::Error) -> String {
    format!("{step}: {:?}", err.kind())
}

/// `<sender index>:<seq>:<µs since the epoch>`.
fn parse_body(body: &str) -> Option<(u32, u64, u64)> {
    let mut parts = body.splitn(3, ':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    Some((sender, seq, sent_us))
}

/// Where a client is in the run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Connected, waiting for everyone else.
    Waiting,
    /// Within the sending period.
    Sending,
    /// Sends no more; still receives until told to stop.
    Done,
}

/// A connected client's bookkeeping.
struct Session {
    spec: ClientSpec,
    shared: Arc<Shared>,
    /// The frame up to the body's first character, built once.
    prefix: String,
    phase: Phase,
    schedule: Option<Schedule>,
    /// Deliveries each of our messages is owed (connected room members).
    fan_out: u64,
    seq: u64,
    in_flight: u32,
    /// Per room member, a bit per seq already received from it.
    seen: Vec<Vec<u64>>,
    result: ClientResult,
    received: u64,
    reported_done: bool,
}

impl Session {
    /// Prepares the frame prefix once, so a send only formats the body.
    fn new(spec: ClientSpec, shared: Arc<Shared>) -> Self {
        let room = &spec.room;
        // The next member along gets the message; a lone member writes to itself.
        let to = &room.members[(spec.local as usize + 1) % room.members.len()];
        let prefix = format!(
            "{{\"event\":\"chat_message\",\"data\":{{\"conversation_id\":{},\"sent_to_id\":{},\"name\":\"x\",\"body\":\"",
            serde_json::Value::from(room.id.as_str()),
            serde_json::Value::from(to.as_str()),
        );
        let seen = vec![Vec::new(); room.members.len()];
        Self {
            spec,
            shared,
            prefix,
            phase: Phase::Waiting,
            schedule: None,
            fan_out: 0,
            seq: 0,
            in_flight: 0,
            seen,
            result: ClientResult::default(),
            received: 0,
            reported_done: false,
        }
    }

    /// This client's published totals.
    fn counters(&self) -> &Counters {
        &self.shared.counters[self.spec.index as usize]
    }

    /// Microseconds since the shared epoch, the unit of every body stamp.
    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.shared.epoch).as_micros() as u64
    }

    /// Stops sending for good and tells the main task this client's owed
    /// deliveries are final.
    fn finish_sending(&mut self) {
        if self.phase == Phase::Sending || self.phase == Phase::Waiting {
            self.phase = Phase::Done;
        }
        if !self.reported_done {
            self.reported_done = true;
            self.shared.done_sending.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The client's one loop: control, sends and frames, until stopped or closed.
    async fn drive(mut self, mut ws: Ws, mut control: watch::Receiver<Control>) -> ClientResult {
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let send_timer = tokio::time::sleep_until(far);
        let end_timer = tokio::time::sleep_until(far);
        tokio::pin!(send_timer, end_timer);
        let mode = self.shared.mode;
        let mut next_send = far;
        // A Start may already be waiting when this client connects late.
        control.mark_changed();
        let stopped = loop {
            let saturating_ready = match mode {
                Mode::Saturating { window } => {
                    self.phase == Phase::Sending && self.in_flight < window
                }
                _ => false,
            };
            let rate_armed = matches!(mode, Mode::Rate { .. }) && self.phase == Phase::Sending;
            tokio::select! {
                biased;
                changed = control.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                    let current = *control.borrow_and_update();
                    match current {
                        Control::Connecting => {}
                        Control::Stop => break true,
                        Control::Start(schedule) => {
                            if self.schedule.is_some() {
                                continue;
                            }
                            self.start(schedule);
                            end_timer.as_mut().reset(schedule.send_end.into());
                            if let Mode::Rate { period, lockstep } = mode {
                                // Staggered: first sends spread over one period
                                // (golden-ratio offsets). Lockstep: all at once,
                                // as a room of people answering the same thing.
                                let phase = if lockstep {
                                    0.0
                                } else {
                                    (self.spec.index as f64 * 0.618_033_988_75).fract()
                                };
                                next_send = tokio::time::Instant::from_std(schedule.send_start)
                                    + period.mul_f64(phase);
                                send_timer.as_mut().reset(next_send);
                            }
                        }
                    }
                }
                () = &mut end_timer, if self.phase == Phase::Sending => {
                    self.finish_sending();
                }
                () = &mut send_timer, if rate_armed => {
                    let Mode::Rate { period, .. } = mode else { unreachable!() };
                    if let Err(reason) = self.send(&mut ws, 1).await {
                        self.result.closed_early = Some(reason);
                        break false;
                    }
                    next_send += period;
                    let now = tokio::time::Instant::now();
                    // More than a period behind: the loadgen or the server cannot
                    // keep up; skip the missed sends rather than burst them.
                    if next_send + period < now {
                        let behind = now.duration_since(next_send).as_secs_f64();
                        self.result.skipped += (behind / period.as_secs_f64()) as u64;
                        next_send = now;
                    }
                    send_timer.as_mut().reset(next_send);
                }
                () = std::future::ready(()), if saturating_ready => {
                    let Mode::Saturating { window } = mode else { unreachable!() };
                    if let Err(reason) = self.send(&mut ws, window - self.in_flight).await {
                        self.result.closed_early = Some(reason);
                        break false;
                    }
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(Message::Binary(_))) => self.result.unmatched += 1,
                    Some(Ok(Message::Close(frame))) => {
                        self.result.closed_early = Some(match frame {
                            Some(frame) => format!("close {}", u16::from(frame.code)),
                            None => "close".to_string(),
                        });
                        break false;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        self.result.closed_early = Some(ws_reason(&err));
                        break false;
                    }
                    None => {
                        self.result.closed_early = Some("eof".to_string());
                        break false;
                    }
                },
            }
        };
        self.finish_sending();
        if !stopped {
            self.shared.ended.fetch_add(1, Ordering::AcqRel);
        }
        if stopped {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        }
        self.result.sent_total = self.seq;
        self.result
    }

    /// Takes the schedule; the fan-out is read now that every connect is done.
    fn start(&mut self, schedule: Schedule) {
        self.schedule = Some(schedule);
        self.fan_out =
            u64::from(self.shared.room_connected[self.spec.room.index].load(Ordering::Acquire));
        if self.shared.mode == Mode::Idle {
            self.phase = Phase::Done;
            self.finish_sending();
        } else {
            self.phase = Phase::Sending;
        }
    }

    /// Sends up to `count` messages and flushes once; stops at the end of
    /// the sending period. The error is a reason for `closed_early`.
    async fn send(&mut self, ws: &mut Ws, count: u32) -> Result<(), String> {
        let Some(schedule) = self.schedule else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::from_std(schedule.hard_end);
        for _ in 0..count {
            let now = Instant::now();
            if now >= schedule.send_end {
                self.finish_sending();
                break;
            }
            let message = self.compose(now, schedule.warmup_end_us);
            match tokio::time::timeout_at(deadline, ws.feed(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(ws_reason(&err)),
                Err(_) => {
                    self.finish_sending();
                    return Ok(());
                }
            }
        }
        match tokio::time::timeout_at(deadline, ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(ws_reason(&err)),
            Err(_) => {
                self.finish_sending();
                Ok(())
            }
        }
    }

    /// Builds the next message, stamped with `now`, and accounts for it.
    fn compose(&mut self, now: Instant, warmup_end_us: u64) -> Message {
        let sent_us = self.micros(now);
        let mut text = String::with_capacity(self.prefix.len() + 48);
        text.push_str(&self.prefix);
        let _ = write!(text, "{}:{}:{}", self.spec.index, self.seq, sent_us);
        text.push_str("\"}}");
        self.seq += 1;
        self.in_flight += 1;
        if sent_us >= warmup_end_us {
            self.result.sent_tracked += 1;
            self.result.expected += self.fan_out;
        }
        let counters = self.counters();
        counters.sent.store(self.seq, Ordering::Relaxed);
        counters
            .expected
            .store(self.result.expected, Ordering::Relaxed);
        Message::text(text)
    }

    /// Matches a delivery to its send: latency, duplicates, window slots.
    fn on_text(&mut self, text: &str) {
        let now_us = self.micros(Instant::now());
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            self.result.unmatched += 1;
            return;
        };
        if frame.kind.as_deref() == Some("error") {
            self.on_error(text);
            return;
        }
        let Some((sender, seq, sent_us)) = frame.body.as_deref().and_then(parse_body) else {
            self.result.unmatched += 1;
            return;
        };
        let room = &self.spec.room;
        let Some(local) = sender
            .checked_sub(room.base)
            .map(|local| local as usize)
            .filter(|&local| local < room.members.len())
        else {
            self.result.unmatched += 1;
            return;
        };
        if seq >= MAX_SEQ {
            self.result.unmatched += 1;
            return;
        }
        if sender == self.spec.index {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        self.received += 1;
        let counters = &self.shared.counters[self.spec.index as usize];
        counters.received.store(self.received, Ordering::Relaxed);
        let Some(schedule) = self.schedule else {
            return;
        };
        if sent_us < schedule.warmup_end_us {
            return;
        }
        let words = &mut self.seen[local];
        let word = (seq / 64) as usize;
        if word >= words.len() {
            words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if words[word] & bit != 0 {
            self.result.duplicated += 1;
            return;
        }
        words[word] |= bit;
        self.result.distinct += 1;
        counters
            .distinct
            .store(self.result.distinct, Ordering::Relaxed);
        let latency_us = now_us.saturating_sub(sent_us).max(1);
        let window = self.window_of(sent_us);
        if self.result.histograms.is_empty() {
            let count = if self.shared.deploy_windows { 3 } else { 1 };
            self.result.histograms = (0..count)
                .map(|_| Histogram::new(HISTOGRAM_SIGFIG).expect("valid sigfig"))
                .collect();
        }
        // Auto-resizing histograms take any value; a failure would only
        // drop one sample.
        let _ = self.result.histograms[window].record(latency_us);
    }

    /// Which deploy window a send at `sent_us` belongs to: 0 steady (before
    /// the deploy request), 1 during (until 1 s after its answer), 2 after.
    fn window_of(&self, sent_us: u64) -> usize {
        if !self.shared.deploy_windows {
            return 0;
        }
        if sent_us < self.shared.deploy_started_us.load(Ordering::Relaxed) {
            return 0;
        }
        let finished = self.shared.deploy_finished_us.load(Ordering::Relaxed);
        // No answer yet means the send went out before it: still "during".
        if finished == UNSET || sent_us < finished.saturating_add(1_000_000) {
            1
        } else {
            2
        }
    }

    /// Counts an error frame by code.
    fn on_error(&mut self, text: &str) {
        self.result.errors += 1;
        // An error answers one of our sends, which will then not come back.
        self.in_flight = self.in_flight.saturating_sub(1);
        let code = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|value| value.get("code").cloned())
            .map(|code| match code {
                serde_json::Value::String(code) => code,
                other => other.to_string(),
            })
            .unwrap_or_else(|| "none".to_string());
        *self.result.error_codes.entry(code).or_default() += 1;
    }
}

/// A short, countable reason for a broken connection.
fn ws_reason(err: &WsError) -> String {
    match err {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".to_string(),
        WsError::Io(err) => io_reason("io", err),
        WsError::Protocol(err) => format!("protocol: {err}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        assert_eq!(parse_body("12:34:56789"), Some((12, 34, 56789)));
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_body("1:2"), None);
        assert_eq!(parse_body("1:2:x"), None);
    }

    #[test]
    fn frame_borrows_plain_bodies() {
        let frame: Frame = serde_json::from_str(
            r#"{"id":"x","name":"User 1","body":"1:2:3","created_at":"now","version":2}"#,
        )
        .unwrap();
        assert!(matches!(
            frame.body.map(|text| text.0),
            Some(Cow::Borrowed("1:2:3"))
        ));
        assert!(frame.kind.is_none());
        let escaped: Frame = serde_json::from_str(r#"{"body":"a\"b","type":"x"}"#).unwrap();
        assert_eq!(escaped.body.as_deref(), Some("a\"b"));
        assert_eq!(escaped.kind.as_deref(), Some("x"));
    }
}
