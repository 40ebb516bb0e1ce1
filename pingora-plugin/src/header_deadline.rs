//! A deadline for each request's header block (`[gateway]
//! header_timeout_secs`, docs/security.md "Limits"). Pingora's own timeout
//! is per read, so a client that sends one byte every few seconds holds a
//! connection (and its memory) forever: the slowloris attack. Here the whole
//! header block must arrive within the deadline, counted from the
//! connection's start for its first request and from the first byte of each
//! later one; else the connection is closed.
//!
//! The deadline wraps the connection's byte stream, below Pingora's HTTP
//! parser: it only looks for the blank line (`\r\n\r\n`) that ends a header
//! block. After the block, bytes are the body's and no deadline applies; the
//! first response bytes end the request, and a `101 Switching Protocols`
//! answer turns the connection into a tunnel that is never cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A [`ServerApp`] whose connections each get a [`HeaderDeadline`].
pub(crate) struct HeaderDeadlineApp<A> {
    inner: Arc<A>,
    limit: Duration,
}

impl<A> HeaderDeadlineApp<A> {
    /// `inner`'s connections, each header block due within `limit`.
    pub(crate) fn new(inner: A, limit: Duration) -> Self {
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
        let guarded: Stream = Box::new(HeaderDeadline::new(stream, self.limit));
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
#[derive(Debug)]
pub(crate) struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    phase: Phase,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last bytes of the header block so far (up to 3), so a blank
    /// line split over two reads is found.
    tail: Vec<u8>,
}

impl HeaderDeadline {
    fn new(inner: Stream, limit: Duration) -> Self {
        HeaderDeadline {
            inner,
            limit,
            phase: Phase::Headers,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            tail: Vec::with_capacity(3),
        }
    }

    /// Follows a header block through newly read bytes.
    fn saw(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Headers;
            self.deadline = Some(Box::pin(tokio::time::sleep(self.limit)));
            self.tail.clear();
        }
        if self.phase != Phase::Headers {
            return;
        }
        let blank_line = |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n");
        // The old tail and the new bytes' first three: a blank line split by the reads.
        let mut seam = std::mem::take(&mut self.tail);
        seam.extend_from_slice(&bytes[..bytes.len().min(3)]);
        if blank_line(&seam) || blank_line(bytes) {
            self.phase = Phase::Body;
            self.deadline = None;
        } else {
            let last = if bytes.len() >= 3 { bytes } else { &seam };
            self.tail = last[last.len().saturating_sub(3)..].to_vec();
        }
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.phase == Phase::Headers {
            if let Some(deadline) = this.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    tracing::info!("closed a connection whose request headers came too slowly");
                    wechat_oauth::metrics::count_refused("header_timeout");
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request headers not complete within header_timeout_secs",
                    )));
                }
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.saw(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.phase, Phase::Body | Phase::Headers) && !buf.is_empty() {
            let switched = buf.starts_with(b"HTTP/1.1 101") || buf.starts_with(b"HTTP/1.0 101");
            this.phase = if switched { Phase::Tunnel } else { Phase::Idle };
            this.deadline = None;
        }
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
            if matches!(this.phase, Phase::Body | Phase::Headers) {
                let switched =
                    first.starts_with(b"HTTP/1.1 101") || first.starts_with(b"HTTP/1.0 101");
                this.phase = if switched { Phase::Tunnel } else { Phase::Idle };
                this.deadline = None;
            }
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
        self.inner.try_peek(buf).await
    }
}
