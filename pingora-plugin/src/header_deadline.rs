//! A deadline for each request's header block (`[gateway]
//! header_timeout_secs`, docs/security.md "Limits"). Pingora's own timeout
//! is per read, so a client that sends one byte every few seconds holds a
//! connection (and its memory) forever: the slowloris attack. Here the whole
//! header block must arrive within the deadline, counted from the
//! connection's start for its first request and from the first read of each
//! later one that leaves its block unfinished; else the connection is closed.
//!
//! The deadline wraps the connection's byte stream, below Pingora's HTTP
//! parser: it only looks for the blank line (`\r\n\r\n`) that ends a header
//! block. After the block, bytes are the body's and no deadline applies; the
//! first response bytes end the request, and a `101 Switching Protocols`
//! answer turns the connection into a tunnel that is never cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A [`ServerApp`] (a proxy service's app, e.g. `pingora::proxy::http_proxy`)
/// whose connections each get a header deadline: a connection whose
/// request headers do not arrive whole in time is closed. Wrap your proxy
/// in it and serve it with `pingora::services::listening::Service::new`.
pub struct HeaderDeadlineApp<A> {
    inner: Arc<A>,
    limit: Duration,
}

impl<A> HeaderDeadlineApp<A> {
    /// `inner`'s connections, each header block due within `limit`.
    pub fn new(inner: A, limit: Duration) -> Self {
        HeaderDeadlineApp {
            inner: Arc::new(inner),
            limit,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeaderDeadlineApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // HTTP/2 frames have no blank line to find; its own settings apply.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.inner.process_new(stream, shutdown).await;
        }
        let mut guarded = Box::new(HeaderDeadline::new(stream, self.limit));
        // The first request's first byte is read here, before Pingora's
        // parser waits for it: Pingora drops a connection still waiting for
        // its request when the server stops, and a new connection's request
        // on its way at that instant would be lost. None within the
        // deadline: closed.
        if !guarded.first_byte().await {
            return None;
        }
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: the next request's first byte starts its deadline.
    Idle,
    /// Reading a header block, due by the deadline.
    Headers,
    /// The header block is in: the body, then the response.
    Body,
    /// Switched protocols (`101`): bytes both ways, no deadline.
    Tunnel,
}

/// A connection whose request header blocks must each arrive within a limit.
///
/// A request whose headers come in one read (the usual case) costs a scan
/// for the blank line and nothing else: the timer is only set while a read
/// waits in the middle of a header block, and is one per connection, reset
/// rather than made again.
#[derive(Debug)]
pub(crate) struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    /// When the current header block is due; a later request's is set
    /// when its first read leaves the block unfinished (no clock read for
    /// headers that come in one piece).
    due: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    scan: BlankLine,
    /// A request's first byte, read by [`HeaderDeadline::first_byte`] and
    /// not yet handed to the parser.
    stash: Option<u8>,
}

/// Finds the blank line (`\r\n\r\n`) that ends a header block in bytes
/// that come in pieces.
#[derive(Debug, Default)]
struct BlankLine {
    /// The last bytes seen (`len` of them, up to 3): a blank line may be
    /// split over two reads.
    tail: [u8; 3],
    len: usize,
}

impl BlankLine {
    /// Whether the blank line ends within `bytes`, the next piece.
    fn found_in(&mut self, bytes: &[u8]) -> bool {
        let blank_line = |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n");
        let mut seam = [0u8; 6];
        let head = bytes.len().min(3);
        seam[..self.len].copy_from_slice(&self.tail[..self.len]);
        seam[self.len..self.len + head].copy_from_slice(&bytes[..head]);
        let seam = &seam[..self.len + head];
        if blank_line(seam) || blank_line(bytes) {
            return true;
        }
        let last = if bytes.len() >= 3 { bytes } else { seam };
        let keep = &last[last.len().saturating_sub(3)..];
        self.tail[..keep.len()].copy_from_slice(keep);
        self.len = keep.len();
        false
    }
}

impl HeaderDeadline {
    fn new(inner: Stream, limit: Duration) -> Self {
        HeaderDeadline {
            inner,
            limit,
            phase: Phase::Headers,
            due: Some(tokio::time::Instant::now() + limit),
            timer: None,
            scan: BlankLine::default(),
            stash: None,
        }
    }

    /// Waits for the connection's first byte (kept for the next read):
    /// `false` on end of stream, an error or the header deadline.
    async fn first_byte(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let read = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut byte);
            match Pin::new(&mut *self).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(buf.filled().len()),
                Poll::Ready(Err(_)) => Poll::Ready(0),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if read == 1 {
            self.stash = Some(byte[0]);
        }
        read == 1
    }

    /// Follows a header block through newly read bytes.
    fn saw(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Headers;
            self.due = None;
            self.scan = BlankLine::default();
        }
        if self.phase == Phase::Headers && self.scan.found_in(bytes) {
            self.phase = Phase::Body;
        }
    }

    /// Follows the response through bytes written: its first bytes end the
    /// request (the next read starts another), and a `101` answer makes
    /// the connection a tunnel.
    fn wrote(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Body | Phase::Headers) && !bytes.is_empty() {
            let switched = bytes.starts_with(b"HTTP/1.1 101") || bytes.starts_with(b"HTTP/1.0 101");
            self.phase = if switched { Phase::Tunnel } else { Phase::Idle };
        }
    }

    /// Mid-header: `Ready` once the block is overdue, else the timer is set
    /// to wake this read at the deadline.
    fn overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let now = tokio::time::Instant::now();
        let due = *self.due.get_or_insert(now + self.limit);
        if now >= due {
            return true;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

fn too_slow() -> std::io::Error {
    tracing::info!("closed a connection whose request headers came too slowly");
    wechat_oauth::metrics::count_refused("header_timeout");
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "request headers not complete within header_timeout_secs",
    )
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(byte) = this.stash.take() {
            // Seen already (by `saw`); the parser reads the rest next.
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        let overdue = |due: Option<tokio::time::Instant>| {
            due.is_some_and(|due| tokio::time::Instant::now() >= due)
        };
        if this.phase == Phase::Headers && overdue(this.due) {
            return Poll::Ready(Err(too_slow()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.saw(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.phase == Phase::Headers && this.overdue(cx) => {
                Poll::Ready(Err(too_slow()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.wrote(buf);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.wrote(first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.stash.is_some() {
            // The first byte is read already: no peek of the stream itself.
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::BlankLine;

    #[test]
    fn the_blank_line_is_found_however_the_reads_split_it() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let end = request.len() - 4;
        for piece in 1..=request.len() {
            let mut scan = BlankLine::default();
            let found_at = request
                .chunks(piece)
                .scan(0, |read, chunk| {
                    *read += chunk.len();
                    Some((*read, scan.found_in(chunk)))
                })
                .find(|(_, found)| *found)
                .map(|(read, _)| read);
            let read = found_at.expect("found");
            assert!(
                read >= end && read < end + piece,
                "pieces of {piece}: at {read}"
            );
        }
        let mut scan = BlankLine::default();
        assert!(!scan.found_in(b"GET / HTTP/1.1\r\nX: \r\n"));
        assert!(!scan.found_in(b"\r"), "\\r\\n\\r is not yet the end");
        assert!(scan.found_in(b"\n"));
        let mut lone = BlankLine::default();
        assert!(!lone.found_in(b"\n\n\r\n\n\r\r\n"));
    }
}
