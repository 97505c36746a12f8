//! Length-prefixed frames, the wire format of the [`tcp`](crate::api::tcp) transport.
//!
//! Every request and every reply travels as one frame:
//!
//! ```text
//! +----------------+-------------------+-----------+-------------------+
//! | length: u32 BE | request id: u64 BE| kind: u8  | payload           |
//! +----------------+-------------------+-----------+-------------------+
//!   4 bytes          8 bytes             1 byte      length - 9 bytes
//! ```
//!
//! - `length` counts everything after itself (id + kind + payload), so it is at least 9.
//! - `request id` is chosen by the client; the server copies it into the reply, which lets many
//!   requests be in flight on one connection and complete in any order.
//! - `kind` is `0` for a command, `1` for a query (see [`CallKind`]) and `2` for a reply.
//! - `payload` is opaque to this crate.
//!
//! The reader decides from the 13-byte header alone whether a frame is too large
//! ([`TransportError::FrameTooLarge`]), so an oversized frame never makes it allocate or read the
//! body. A frame whose length is below 9 or whose kind byte is unknown is
//! [`TransportError::Malformed`]; a connection that ends in the middle of a frame gives
//! [`TransportError::Io`] with [`std::io::ErrorKind::UnexpectedEof`]; a connection that ends
//! cleanly between two frames gives `Ok(None)`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::CallKind;
use crate::wire::transport::TransportError;

/// Size of the length prefix, in bytes.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Size of the request id and kind that follow the length prefix, in bytes.
pub const ID_AND_KIND_LEN: usize = 9;
/// Size of the whole header (length prefix, request id and kind), in bytes.
pub const HEADER_LEN: usize = LENGTH_PREFIX_LEN + ID_AND_KIND_LEN;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A request: a command or a query.
    Call(CallKind),
    /// The reply to the request with the same id.
    Reply,
}

impl FrameKind {
    /// The byte that stands for this kind on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            FrameKind::Call(kind) => kind.to_byte(),
            FrameKind::Reply => 2,
        }
    }

    /// The kind a wire byte stands for, or `None` for an unknown byte.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            2 => Some(FrameKind::Reply),
            other => match CallKind::from_byte(other) {
                Some(kind) => Some(FrameKind::Call(kind)),
                None => None,
            },
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The request id (a reply carries the id of its request).
    pub id: u64,
    /// What the frame carries.
    pub kind: FrameKind,
    /// The opaque payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's size as counted by the length prefix (and by [`crate::wire::transport::Limits::max_frame`]).
    pub fn size(&self) -> usize {
        ID_AND_KIND_LEN + self.payload.len()
    }

    /// The frame's bytes on the wire, length prefix included.
    ///
    /// Fails with [`TransportError::FrameTooLarge`] if the frame does not fit the 32-bit length.
    pub fn encode(&self) -> Result<Vec<u8>, TransportError> {
        encode(self.id, self.kind, &self.payload)
    }
}

/// A frame's header: what the reader knows before it reads the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The declared length: id + kind + payload, in bytes (at least 9).
    pub len: u32,
    /// The request id.
    pub id: u64,
    /// The raw kind byte, not yet checked; see [`FrameHeader::kind`].
    pub kind_byte: u8,
}

impl FrameHeader {
    /// The frame's size in bytes, as counted by [`crate::wire::transport::Limits::max_frame`].
    pub fn size(&self) -> usize {
        self.len as usize
    }

    /// The payload's length in bytes.
    pub fn payload_len(&self) -> usize {
        self.size().saturating_sub(ID_AND_KIND_LEN)
    }

    /// The frame's kind, or [`TransportError::Malformed`] for an unknown kind byte.
    pub fn kind(&self) -> Result<FrameKind, TransportError> {
        FrameKind::from_byte(self.kind_byte).ok_or_else(|| {
            TransportError::Malformed(format!(
                "unknown frame kind {} in frame {}",
                self.kind_byte, self.id
            ))
        })
    }

    /// [`TransportError::FrameTooLarge`] if the frame is larger than `max` bytes.
    pub fn check_size(&self, max: usize) -> Result<(), TransportError> {
        if self.size() > max {
            Err(TransportError::FrameTooLarge {
                size: self.size(),
                limit: max,
            })
        } else {
            Ok(())
        }
    }
}

/// Reads one frame's header.
///
/// Returns `Ok(None)` when the reader ends cleanly before the first byte of a frame, and
/// [`TransportError::Malformed`] when the declared length is below 9. The kind byte and the size
/// are not checked here (see [`FrameHeader::kind`] and [`FrameHeader::check_size`]), so that a
/// server can still answer a refused frame by its id.
pub async fn read_header<R>(reader: &mut R) -> Result<Option<FrameHeader>, TransportError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut prefix = [0u8; LENGTH_PREFIX_LEN];
    let mut filled = 0;
    while filled < prefix.len() {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(unexpected_eof("inside a frame's length prefix"));
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix);
    if (len as usize) < ID_AND_KIND_LEN {
        return Err(TransportError::Malformed(format!(
            "declared frame length {len} is below the minimum of {ID_AND_KIND_LEN}"
        )));
    }
    let mut rest = [0u8; ID_AND_KIND_LEN];
    read_exact(reader, &mut rest, "inside a frame's header").await?;
    let [i0, i1, i2, i3, i4, i5, i6, i7, kind_byte] = rest;
    let id = u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]);
    Ok(Some(FrameHeader { len, id, kind_byte }))
}

/// Reads the payload that follows `header`.
///
/// The caller is expected to have checked the size first ([`FrameHeader::check_size`]): this
/// allocates [`FrameHeader::payload_len`] bytes.
pub async fn read_payload<R>(
    reader: &mut R,
    header: &FrameHeader,
) -> Result<Vec<u8>, TransportError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut payload = vec![0u8; header.payload_len()];
    read_exact(reader, &mut payload, "inside a frame's payload").await?;
    Ok(payload)
}

/// Reads one whole frame of at most `max` bytes (as counted by the length prefix).
///
/// - `Ok(None)`: the reader ended cleanly between frames.
/// - [`TransportError::FrameTooLarge`]: the declared length exceeds `max`; decided from the
///   header, without reading the body.
/// - [`TransportError::Malformed`]: the declared length is below 9, or the kind byte is unknown.
/// - [`TransportError::Io`] with [`std::io::ErrorKind::UnexpectedEof`]: the reader ended inside a
///   frame.
pub async fn read_frame<R>(reader: &mut R, max: usize) -> Result<Option<Frame>, TransportError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let Some(header) = read_header(reader).await? else {
        return Ok(None);
    };
    let kind = header.kind()?;
    header.check_size(max)?;
    let payload = read_payload(reader, &header).await?;
    Ok(Some(Frame {
        id: header.id,
        kind,
        payload,
    }))
}

/// Writes one frame (length prefix included). Does not flush.
pub async fn write_frame<W>(
    writer: &mut W,
    id: u64,
    kind: FrameKind,
    payload: &[u8],
) -> Result<(), TransportError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let len = frame_len(payload.len())?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4..12].copy_from_slice(&id.to_be_bytes());
    header[12] = kind.to_byte();
    writer.write_all(&header).await?;
    writer.write_all(payload).await?;
    Ok(())
}

/// A frame's bytes on the wire, length prefix included.
///
/// Fails with [`TransportError::FrameTooLarge`] if the frame does not fit the 32-bit length.
pub fn encode(id: u64, kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
    let len = frame_len(payload.len())?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(kind.to_byte());
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

fn frame_len(payload_len: usize) -> Result<u32, TransportError> {
    let size = payload_len.saturating_add(ID_AND_KIND_LEN);
    u32::try_from(size).map_err(|_| TransportError::FrameTooLarge {
        size,
        limit: u32::MAX as usize,
    })
}

async fn read_exact<R>(reader: &mut R, buf: &mut [u8], place: &str) -> Result<(), TransportError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(unexpected_eof(place)),
        Err(e) => Err(e.into()),
    }
}

fn unexpected_eof(place: &str) -> TransportError {
    TransportError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("connection ended {place}"),
    ))
}
