//! gRPC over a Unix socket for clients built on gRPC's C core (grpcio, so tritonclient), unchanged.
//!
//! Such a client dialling `unix:///run/infergate/grpc.sock` sends the socket's path, percent-encoded, as the
//! HTTP/2 `:authority` (`run%2Finfergate%2Fgrpc.sock`). That is no valid authority (a `%` may appear only in its
//! user part), and the server's HTTP/2 layer resets every such stream. On gRPC connections over a Unix socket,
//! [`AuthorityFix`] reads the first header block the client sends. When its authority is valid (any client but
//! those), the block and the rest of the connection pass through untouched, read straight into the server's
//! buffer. Otherwise that block and every later one are decoded with the client's HPACK context and encoded again
//! with one the server's decoder mirrors, with every byte of `:authority` that an authority may not hold replaced
//! by `_` (on a socket the authority names nothing); other frames pass through untouched, long payloads read
//! straight into the server's buffer. A connection that does not start with the HTTP/2 preface passes through.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use fluke_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, Take};

/// The client's connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts; rewritten blocks are split into frames of this size.
const MAX_FRAME: usize = 16_384;
/// The dynamic table size both HPACK contexts start with, and the most the client may ask for (the server
/// announces no other).
const TABLE_SIZE: usize = 4_096;
/// A header block larger than this closes the connection (the server's own limit is far lower).
const MAX_BLOCK: usize = 1 << 20;
/// How much is read at a time when frames are parsed: many small frames (a gRPC call is several) come in one read.
const READ_CHUNK: usize = 16_384;
/// A payload at least this long still to come is read straight into the server's buffer, not through ours.
const DIRECT_READ: usize = 16_384;
/// HPACK dynamic table size updates to 0, then back to 4096: the server's decoder forgets the client's entries
/// before the first block encoded by this side.
const EMPTY_TABLE: [u8; 4] = [0x20, 0x3f, 0xe1, 0x1f];

/// The bytes an authority may hold (RFC 3986: unreserved, sub-delims, `:`, `[`, `]`; `@` and `%` only with a user
/// part, which this one has none of).
fn authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]".contains(&b)
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// Where the reader is in the client's byte stream.
enum State {
    /// Checking the preface; this many bytes of it are left.
    Preface(usize),
    /// Between frames, or inside a payload being passed through (this many bytes of it are left).
    Frames { passthrough: usize },
    /// Not HTTP/2: everything passes through.
    Transparent,
}

/// A gRPC connection over a Unix socket, with the client's `:authority` made valid.
pub struct AuthorityFix<S> {
    inner: Take<S>,
    state: State,
    /// Bytes read from the client and not yet handled.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    block: Option<Block>,
    decoder: Decoder<'static>,
    /// Set from the first block that needed a fix: every block is encoded again from then on.
    encoder: Option<Encoder<'static>>,
    /// Where reads land before they are parsed (allocated once, so never zeroed again).
    scratch: Box<[u8]>,
}

impl<S: AsyncRead + Unpin> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        AuthorityFix {
            inner: tokio::io::AsyncReadExt::take(inner, u64::MAX),
            state: State::Preface(PREFACE.len()),
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder,
            encoder: None,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// Moves what can be handled from `input` to `output`; false when more input is needed.
    fn process(&mut self) -> io::Result<bool> {
        match self.state {
            State::Transparent => {
                let all = self.input.split();
                let moved = !all.is_empty();
                self.output.unsplit(all);
                Ok(moved)
            }
            State::Preface(left) => {
                let n = left.min(self.input.len());
                let expected = &PREFACE[PREFACE.len() - left..][..n];
                let all = self.input.split_to(n);
                self.state = match (all.as_ref() == expected, left - n) {
                    (false, _) => State::Transparent,
                    (true, 0) => State::Frames { passthrough: 0 },
                    (true, left) => State::Preface(left),
                };
                self.output.unsplit(all);
                Ok(n > 0)
            }
            State::Frames { passthrough } if passthrough > 0 => {
                let n = passthrough.min(self.input.len());
                let payload = self.input.split_to(n);
                self.output.unsplit(payload);
                self.state = State::Frames { passthrough: passthrough - n };
                Ok(n > 0)
            }
            State::Frames { .. } => self.frame(),
        }
    }

    /// Handles the frame at the start of `input`; false when it has not arrived whole enough.
    fn frame(&mut self) -> io::Result<bool> {
        let Some(header) = self.input.get(..FRAME_HEADER) else { return Ok(false) };
        let length = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream: [u8; 4] = [header[5], header[6], header[7], header[8]];
        if kind != HEADERS && !(kind == CONTINUATION && self.block.is_some()) {
            let header = self.input.split_to(FRAME_HEADER);
            self.output.unsplit(header);
            self.state = State::Frames { passthrough: length };
            return Ok(true);
        }
        if length > MAX_BLOCK {
            return Err(malformed("a header frame larger than 1 MiB"));
        }
        if self.input.len() < FRAME_HEADER + length {
            return Ok(false);
        }
        self.input.advance(FRAME_HEADER);
        let mut payload = self.input.split_to(length);
        if kind == HEADERS {
            let padding = if flags & PADDED != 0 { usize::from(take_u8(&mut payload)?) } else { 0 };
            let priority = if flags & PRIORITY != 0 {
                let bytes = payload.get(..5).ok_or_else(|| malformed("HEADERS priority"))?;
                let priority = [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]];
                payload.advance(5);
                Some(priority)
            } else {
                None
            };
            let end = payload.len().checked_sub(padding).ok_or_else(|| malformed("HEADERS padding"))?;
            payload.truncate(end);
            self.block = Some(Block { stream, end_stream: flags & END_STREAM != 0, priority, fragment: Vec::new() });
        }
        let block = self.block.as_mut().ok_or_else(|| malformed("CONTINUATION"))?;
        if block.fragment.len() + payload.len() > MAX_BLOCK {
            return Err(malformed("a header block larger than 1 MiB"));
        }
        block.fragment.extend_from_slice(&payload);
        if flags & END_HEADERS != 0 {
            let block = self.block.take().ok_or_else(|| malformed("END_HEADERS"))?;
            self.rewrite(block)?;
        }
        Ok(true)
    }

    /// Decodes a whole header block, fixes its `:authority` and writes it out again as HEADERS (and
    /// CONTINUATION) frames: as it came while no block needed a fix, encoded again from the first that did.
    fn rewrite(&mut self, block: Block) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut fixed = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value = if name.as_ref() == b":authority" && !value.iter().all(|&b| authority_byte(b)) {
                    fixed = true;
                    Cow::Owned(value.iter().map(|&b| if authority_byte(b) { b } else { b'_' }).collect())
                } else {
                    value
                };
                headers.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|e| malformed(&format!("HPACK: {e:?}")))?;
        let encoded = match (&mut self.encoder, fixed) {
            (None, false) => {
                // A client with a valid authority: the rest of its connection passes through untouched.
                self.state = State::Transparent;
                block.fragment.clone()
            }
            (encoder, _) => {
                let mut encoded = Vec::new();
                if encoder.is_none() {
                    encoded.extend_from_slice(&EMPTY_TABLE);
                }
                let encoder = encoder.get_or_insert_with(Encoder::new);
                encoded.extend(encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))));
                encoded
            }
        };
        let priority = block.priority.map(|p| p.to_vec()).unwrap_or_default();
        let mut rest: &[u8] = &encoded;
        let mut first = true;
        loop {
            let room = if first { MAX_FRAME - priority.len() } else { MAX_FRAME };
            let (chunk, after) = rest.split_at(rest.len().min(room));
            let mut flags = if after.is_empty() { END_HEADERS } else { 0 };
            if first {
                flags |= if block.end_stream { END_STREAM } else { 0 };
                flags |= if block.priority.is_some() { PRIORITY } else { 0 };
            }
            let length = chunk.len() + if first { priority.len() } else { 0 };
            self.output.put_uint(length as u64, 3);
            self.output.put_u8(if first { HEADERS } else { CONTINUATION });
            self.output.put_u8(flags);
            self.output.put_slice(&block.stream);
            if first {
                self.output.put_slice(&priority);
            }
            self.output.put_slice(chunk);
            rest = after;
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

fn take_u8(payload: &mut BytesMut) -> io::Result<u8> {
    if payload.is_empty() {
        return Err(malformed("HEADERS padding"));
    }
    Ok(payload.get_u8())
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed HTTP/2 from a gRPC client on a Unix socket: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            // Past the first header block of a client that needs no fix, everything is read straight.
            if matches!(this.state, State::Transparent) && this.input.is_empty() {
                this.inner.set_limit(u64::MAX);
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // A long payload passed through is read straight into the caller's buffer, up to its end.
            if let State::Frames { passthrough } = this.state
                && passthrough >= DIRECT_READ
                && this.input.is_empty()
            {
                this.inner.set_limit(passthrough as u64);
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let n = buf.filled().len() - before;
                this.state = State::Frames { passthrough: passthrough - n };
                return Poll::Ready(Ok(()));
            }
            if this.process()? {
                continue;
            }
            this.inner.set_limit(u64::MAX);
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client closed: what is left of a frame is handed on for the server to judge.
                let rest = this.input.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.output.unsplit(rest);
                this.state = State::Transparent;
                continue;
            }
            this.input.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.inner.get_mut()).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner.get_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.get_ref().is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.get_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
