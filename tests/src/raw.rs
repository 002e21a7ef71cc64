//! A WebSocket client that writes bytes by hand, to send what a well-behaved
//! client library never would: unmasked frames, bad UTF-8, reserved bits,
//! half a handshake.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It answered the handshake with this HTTP status.
    Status(u16),
    /// It sent a close frame with this code.
    Close(u16),
    /// It closed the TCP connection without a close frame or a response.
    Dropped,
    /// Nothing happened within the wait.
    Silent,
}

/// A raw connection.
pub struct RawWs {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// Writes an HTTP request by hand and reads the status line of the answer.
pub async fn handshake(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<RawWs, Outcome> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let defaults = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    // A header given replaces the default of the same name.
    for (name, value) in defaults {
        if !headers
            .iter()
            .any(|(given, _)| given.eq_ignore_ascii_case(name))
        {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut raw = RawWs {
        stream,
        buffer: Vec::new(),
    };
    raw.stream.write_all(request.as_bytes()).await.unwrap();
    match raw.read_response(Duration::from_secs(10)).await {
        Outcome::Status(101) => Ok(raw),
        other => Err(other),
    }
}

impl RawWs {
    /// Connects and writes arbitrary bytes, nothing else.
    pub async fn connect_and_write(addr: SocketAddr, bytes: &[u8]) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Reads an HTTP response head: its status, or what happened instead.
    pub async fn read_response(&mut self, wait: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 4);
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(0);
                return Outcome::Status(status);
            }
            match self.fill(deadline).await {
                Some(0) => return Outcome::Dropped,
                Some(_) => {}
                None => return Outcome::Silent,
            }
        }
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> Option<usize> {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => None,
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Some(n)
            }
            Ok(Err(_)) => Some(0),
        }
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Writes one frame: `first` is the FIN/RSV/opcode byte.
    pub async fn frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        self.write(&encode(first, payload, masked)).await;
    }

    /// Reads frames until the server closes; text and binary frames are skipped.
    pub async fn outcome(&mut self, wait: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some((opcode, payload)) = self.parse_frame() {
                if opcode == 0x8 {
                    let code = if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    };
                    return Outcome::Close(code);
                }
            }
            match self.fill(deadline).await {
                Some(0) => return Outcome::Dropped,
                Some(_) => {}
                None => return Outcome::Silent,
            }
        }
    }

    /// Text frames until the server closes (the outcome says how), or until
    /// it has been quiet for `quiet` after the first text (`Silent`: still
    /// open), or `wait` passes.
    pub async fn collect(&mut self, wait: Duration, quiet: Duration) -> (Outcome, Vec<String>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut texts = Vec::new();
        loop {
            while let Some((opcode, payload)) = self.parse_frame() {
                match opcode {
                    0x1 => texts.push(String::from_utf8_lossy(&payload).into_owned()),
                    0x8 => {
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        };
                        return (Outcome::Close(code), texts);
                    }
                    _ => {}
                }
            }
            let until = if texts.is_empty() {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + quiet)
            };
            match self.fill(until).await {
                Some(0) => return (Outcome::Dropped, texts),
                Some(_) => {}
                None => return (Outcome::Silent, texts),
            }
        }
    }

    /// The next text frame, if one arrives in time (and the server does not close).
    pub async fn text(&mut self, wait: Duration) -> Option<String> {
        let (_, texts) = self.collect(wait, Duration::ZERO).await;
        texts.into_iter().next()
    }

    fn parse_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buffer;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (usize::from(n), 2),
        };
        let masked = b[1] & 0x80 != 0;
        let key = if masked {
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(key) = key {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        self.buffer.drain(..at + len);
        Some((opcode, payload))
    }
}

/// One frame's bytes; clients must mask, so `masked: false` is a violation.
pub fn encode(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ key[i % 4]),
        );
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// FIN + text.
pub const TEXT: u8 = 0x81;
/// FIN + binary.
pub const BINARY: u8 = 0x82;
/// A text frame that is not the last of its message.
pub const TEXT_FIRST: u8 = 0x01;
/// A continuation frame that is not the last.
pub const CONTINUATION: u8 = 0x00;
/// The last continuation frame.
pub const CONTINUATION_LAST: u8 = 0x80;
