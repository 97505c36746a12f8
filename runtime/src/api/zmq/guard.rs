//! A ZMTP-aware TCP relay in front of the ROUTER socket.
//!
//! zeromq 0.7's decoder reserves a frame's declared length before any byte of it arrives, so a
//! peer that declares a 2^46-byte frame makes the server allocate 64 TiB and the process aborts;
//! and it collects every frame of a multipart message before it delivers any, so a peer that
//! sends frames marked "more" without end fills the server's memory. The crate has no option to
//! bound either. The guard listens on the endpoint the caller asked for, relays each connection
//! to the ROUTER (bound on 127.0.0.1, ephemeral port; zeromq 0.7 has no in-process transport,
//! and its `ipc` one brings a second I/O reactor), and reads the ZMTP framing of what clients
//! send: the 64-byte greeting, then per frame a flags byte, a 1- or 8-byte length and the body.
//! A connection that declares a frame, or the frames of one message together, longer than its
//! limit is closed before the declaration reaches zeromq. It also holds the number of
//! connections to [`Limits::max_connections`](crate::wire::transport::Limits::max_connections),
//! as the TCP transport does.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// ZMTP 3's greeting length: every connection starts with it, before any frame.
const GREETING_LEN: u64 = 64;
/// Flag bit of a frame header: more frames of the same message follow.
const MORE_FLAG: u8 = 0b0000_0001;
/// Flag bit of a frame header: the length that follows is 8 bytes (else 1).
const LONG_FLAG: u8 = 0b0000_0010;
/// Flag bit of a frame header: a command (the handshake), not part of a message.
const COMMAND_FLAG: u8 = 0b0000_0100;

/// Why the guard closed a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Oversized {
    /// The length the peer declared: of one frame, or of the frames of one message so far.
    pub(crate) declared: u64,
}

/// Reads the ZMTP framing of one direction of a connection, a chunk at a time.
#[derive(Debug)]
pub(crate) struct FrameScanner {
    state: Scan,
    limit: u64,
    /// The flags of the frame being read.
    flags: u8,
    /// The bytes declared by the frames of the message being read, this one included.
    message: u64,
}

#[derive(Debug, Clone, Copy)]
enum Scan {
    /// Bytes of the greeting still to come.
    Greeting(u64),
    /// The next byte is a frame's flags.
    Flags,
    /// Inside a long frame's 8-byte length: the bytes read so far and their value.
    LongLen { read: u8, value: u64 },
    /// The next byte is a short frame's length.
    ShortLen,
    /// Bytes of a frame's body still to come.
    Body(u64),
}

impl FrameScanner {
    /// A scanner for a new connection that refuses frames, and messages (all their frames
    /// together), longer than `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            state: Scan::Greeting(GREETING_LEN),
            limit,
            flags: 0,
            message: 0,
        }
    }

    /// Reads the next bytes of the stream; fails at the first frame declared over the limit.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Oversized> {
        while let Some((&byte, rest)) = bytes.split_first() {
            self.state = match self.state {
                Scan::Greeting(left) | Scan::Body(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    if left > 0 {
                        match self.state {
                            Scan::Greeting(_) => Scan::Greeting(left),
                            _ => Scan::Body(left),
                        }
                    } else {
                        Scan::Flags
                    }
                }
                Scan::Flags => {
                    bytes = rest;
                    self.flags = byte;
                    if byte & LONG_FLAG != 0 {
                        Scan::LongLen { read: 0, value: 0 }
                    } else {
                        Scan::ShortLen
                    }
                }
                Scan::ShortLen => {
                    bytes = rest;
                    self.body(u64::from(byte))?
                }
                Scan::LongLen { read, value } => {
                    bytes = rest;
                    let value = (value << 8) | u64::from(byte);
                    if read == 7 {
                        self.body(value)?
                    } else {
                        Scan::LongLen {
                            read: read + 1,
                            value,
                        }
                    }
                }
            };
        }
        Ok(())
    }

    fn body(&mut self, declared: u64) -> Result<Scan, Oversized> {
        if declared > self.limit {
            return Err(Oversized { declared });
        }
        if self.flags & COMMAND_FLAG == 0 {
            self.message = self.message.saturating_add(declared);
            if self.message > self.limit {
                return Err(Oversized {
                    declared: self.message,
                });
            }
            if self.flags & MORE_FLAG == 0 {
                self.message = 0;
            }
        }
        Ok(if declared == 0 {
            Scan::Flags
        } else {
            Scan::Body(declared)
        })
    }
}

/// Accepts connections on `listener` and relays each to `inner`, until the task is aborted; the
/// relays still open end with it.
pub(crate) async fn relay(
    listener: TcpListener,
    inner: SocketAddr,
    frame_limit: u64,
    max_connections: usize,
) {
    // Never shut down from here: the serving task aborts this one, which drops the relays.
    let never = std::future::pending::<()>();
    let cap = std::sync::Arc::new(tokio::sync::Semaphore::new(
        crate::net::conn::connection_cap(max_connections),
    ));
    crate::net::conn::accept_connections(listener, cap, None, "zmq", never, |conn, peer| {
        let (stream, slot) = conn.into_parts();
        async move {
            if let Err(e) = relay_one(stream, inner, frame_limit).await {
                tracing::debug!(%peer, error = %e, "zmq connection ended");
            }
            drop(slot);
        }
    })
    .await;
}

async fn relay_one(client: TcpStream, inner: SocketAddr, frame_limit: u64) -> io::Result<()> {
    let peer = client.peer_addr()?;
    let server = TcpStream::connect(inner).await?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let inbound = async {
        let mut scanner = FrameScanner::new(frame_limit);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            if let Err(Oversized { declared }) = scanner.feed(&buf[..n]) {
                tracing::warn!(%peer, declared, limit = frame_limit, "closing a zmq connection that declared an oversized frame or message");
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "oversized frame declared",
                ));
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let outbound = tokio::io::copy(&mut server_read, &mut client_write);
    // Either direction ending ends the relay: dropping both halves closes both sockets.
    tokio::select! {
        result = inbound => result,
        result = outbound => result.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Vec<u8> {
        let mut g = vec![0u8; 64];
        g[0] = 0xff;
        g
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_chunking() {
        let mut stream = greeting();
        stream.extend([0x04, 3, b'a', b'b', b'c']); // short command frame
        stream.extend([0x02, 0, 0, 0, 0, 0, 0, 1, 0]); // long frame of 256 bytes
        stream.extend(vec![7u8; 256]);
        stream.extend([0x00, 0]); // empty frame
        for chunk in [1, 3, 7, 64, 1000] {
            let mut scanner = FrameScanner::new(256);
            for piece in stream.chunks(chunk) {
                assert_eq!(scanner.feed(piece), Ok(()), "chunk size {chunk}");
            }
            assert!(matches!(scanner.state, Scan::Flags), "chunk size {chunk}");
        }
    }

    #[test]
    fn a_message_whose_frames_together_exceed_the_limit_is_refused() {
        let mut stream = greeting();
        stream.extend([0x04, 3, b'a', b'b', b'c']); // commands do not count
        for _ in 0..3 {
            // Three whole messages of two 100-byte frames each: each within the limit.
            stream.extend([0x01, 100]);
            stream.extend([1u8; 100]);
            stream.extend([0x00, 100]);
            stream.extend([1u8; 100]);
        }
        let mut scanner = FrameScanner::new(256);
        assert_eq!(scanner.feed(&stream), Ok(()));
        // Frames marked "more" without end: refused once they add up past the limit.
        let mut refused = None;
        for i in 0..2000u64 {
            let mut frame = vec![0x01, 100];
            frame.extend([1u8; 100]);
            if let Err(e) = scanner.feed(&frame) {
                refused = Some((i, e));
                break;
            }
        }
        assert_eq!(refused, Some((2, Oversized { declared: 300 })));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_in_its_header() {
        let mut stream = greeting();
        stream.extend([0x02, 0, 0, 0x40, 0, 0, 0, 0, 0]);
        let mut scanner = FrameScanner::new(1 << 20);
        assert_eq!(scanner.feed(&stream), Err(Oversized { declared: 1 << 46 }));
        let mut short = FrameScanner::new(100);
        let mut stream = greeting();
        stream.extend([0x00, 200]);
        assert_eq!(short.feed(&stream), Err(Oversized { declared: 200 }));
    }
}
