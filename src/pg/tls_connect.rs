//! The TLS connector handed to tokio-postgres: tokio-postgres-rustls's, plus what libpq's weak
//! sslmodes need from each handshake. No channel binding over a session whose certificate could
//! not be parsed (so nobody checked that the server holds its key), a clear refusal when
//! `channel_binding=require` meets one, and a record of a failed handshake for `prefer`'s retry
//! without TLS.

use std::error::Error;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::Result;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::target::{Target, Verification};
use super::tls::{encrypt_only, tls_config, Unproven};

const UNBOUND: &str = "channel_binding=require cannot be honoured: the server's certificate could \
    not be parsed (an X.509 version 1 certificate, for one), so the TLS handshake signature was \
    not checked and channel binding would prove nothing (hint: give the server a version 3 \
    certificate, or use channel_binding=prefer)";

type BoxError = Box<dyn Error + Send + Sync>;
type Rustls<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
type RustlsStream<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;

/// Makes one TLS connector per host that tokio-postgres tries.
#[derive(Clone)]
pub(super) struct MakeConnect {
    config: ClientConfig,
    /// Each handshake gets its own encrypt-only verifier, to report what it could not check.
    encrypt_only: bool,
    binding_required: bool,
    handshake_failed: Arc<AtomicBool>,
}

impl MakeConnect {
    pub(super) fn new(target: &Target) -> Result<Self> {
        Ok(MakeConnect {
            config: tls_config(target)?,
            encrypt_only: target.verification == Verification::None,
            binding_required: target.channel_binding_required(),
            handshake_failed: Arc::default(),
        })
    }

    /// Whether a TLS handshake made by this connector (or a clone of it) has failed.
    pub(super) fn handshake_failed(&self) -> bool {
        self.handshake_failed.load(Ordering::SeqCst)
    }
}

impl<S> MakeTlsConnect<S> for MakeConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<RustlsStream<S>>;
    type TlsConnect = Connect<Rustls<S>>;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let unproven = Unproven::default();
        let mut config = self.config.clone();
        if self.encrypt_only {
            config
                .dangerous()
                .set_certificate_verifier(encrypt_only(unproven.clone()));
        }
        let inner =
            MakeTlsConnect::<S>::make_tls_connect(&mut MakeRustlsConnect::new(config), domain)?;
        Ok(Connect {
            inner,
            unproven,
            binding_required: self.binding_required,
            handshake_failed: self.handshake_failed.clone(),
        })
    }
}

/// One handshake.
pub(super) struct Connect<T> {
    inner: T,
    unproven: Unproven,
    binding_required: bool,
    handshake_failed: Arc<AtomicBool>,
}

impl<S, T> TlsConnect<S> for Connect<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
{
    type Stream = Stream<T::Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, BoxError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let Connect {
            inner,
            unproven,
            binding_required,
            handshake_failed,
        } = self;
        let handshake = inner.connect(stream);
        Box::pin(async move {
            let stream = handshake.await.map_err(|e| {
                handshake_failed.store(true, Ordering::SeqCst);
                e.into()
            })?;
            if binding_required && unproven.get() {
                return Err(UNBOUND.into());
            }
            Ok(Stream {
                inner: stream,
                unproven,
            })
        })
    }
}

/// A TLS session that offers channel binding only when the server's key was checked.
pub(super) struct Stream<T> {
    inner: T,
    unproven: Unproven,
}

impl<T: TlsStream + Unpin> TlsStream for Stream<T> {
    fn channel_binding(&self) -> ChannelBinding {
        if self.unproven.get() {
            ChannelBinding::none()
        } else {
            self.inner.channel_binding()
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
