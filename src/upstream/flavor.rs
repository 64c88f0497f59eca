//! The two kinds of connection the request path keeps to a master: hyper's client
//! connection (requests with a body, upgrades) and our own HTTP/1 client's (body-less
//! replayable requests, see `super::h1`). The pool holds both, apart; opening, reusing
//! and pooling are written once for either through [`Flavor`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

use super::attachments::{Attachments, Kind};
use super::connect::{open_master, ConnectError};
use super::h1::RawConnection;
use super::UpstreamBody;
use crate::tls::MasterTls;

/// A connection in the idle pool.
pub enum Pooled {
    Hyper(SendRequest<UpstreamBody>),
    Raw(RawConnection),
}

impl Pooled {
    /// Known to be closed (the master closed it, or it was drained): not reusable.
    pub fn is_closed(&self) -> bool {
        match self {
            Pooled::Hyper(sender) => sender.is_closed(),
            Pooled::Raw(connection) => connection.is_drained(),
        }
    }
}

/// What to open a connection to a master with.
pub struct Opening<'a> {
    pub authority: &'a str,
    pub tls: Option<&'a MasterTls>,
    pub connect_timeout: Duration,
    pub attachments: &'a Arc<Attachments>,
    /// One of the master's `max_connections`, held for the connection's life.
    pub connection: OwnedSemaphorePermit,
    /// One of its `max_connects`, held until the connection is up.
    pub connect: OwnedSemaphorePermit,
}

/// One kind of pooled connection.
pub trait Flavor: Sized + Send + 'static {
    fn is(pooled: &Pooled) -> bool;
    fn from_pooled(pooled: Pooled) -> Option<Self>;
    fn into_pooled(self) -> Pooled;
    /// Opens a new connection.
    fn open(opening: Opening<'_>) -> impl Future<Output = Result<Self, ConnectError>> + Send + '_;
    /// Whether an idle connection just taken from the pool can carry a request.
    fn ready(&mut self) -> impl Future<Output = bool> + Send + '_;
}

/// How long a just-returned hyper connection may take to become ready.
const READY_WAIT: Duration = Duration::from_millis(50);

impl Flavor for SendRequest<UpstreamBody> {
    fn is(pooled: &Pooled) -> bool {
        matches!(pooled, Pooled::Hyper(_))
    }

    fn from_pooled(pooled: Pooled) -> Option<Self> {
        match pooled {
            Pooled::Hyper(sender) => Some(sender),
            Pooled::Raw(_) => None,
        }
    }

    fn into_pooled(self) -> Pooled {
        Pooled::Hyper(self)
    }

    fn open(opening: Opening<'_>) -> impl Future<Output = Result<Self, ConnectError>> + Send + '_ {
        open_hyper(opening)
    }

    async fn ready(&mut self) -> bool {
        // Returned the moment its last response ended: ready within a poll of its
        // connection task, or closing (the master said so).
        self.is_ready()
            || matches!(
                tokio::time::timeout(READY_WAIT, self.ready()).await,
                Ok(Ok(()))
            )
    }
}

impl Flavor for RawConnection {
    fn is(pooled: &Pooled) -> bool {
        matches!(pooled, Pooled::Raw(_))
    }

    fn from_pooled(pooled: Pooled) -> Option<Self> {
        match pooled {
            Pooled::Raw(connection) => Some(connection),
            Pooled::Hyper(_) => None,
        }
    }

    fn into_pooled(self) -> Pooled {
        Pooled::Raw(self)
    }

    async fn open(opening: Opening<'_>) -> Result<Self, ConnectError> {
        let stream = open_master(
            opening.authority,
            opening.tls,
            opening.connect_timeout,
            true,
        )
        .await?;
        drop(opening.connect); // connected: the next connect may start
        let attachment = opening.attachments.attach(Kind::Http);
        Ok(RawConnection::new(stream, opening.connection, attachment))
    }

    async fn ready(&mut self) -> bool {
        self.usable()
    }
}

/// A new hyper HTTP/1 connection, its connection task spawned on this runtime and
/// counted in the master's attachments (which can close it: a drain). The task holds
/// the connection's permit until the connection ends.
async fn open_hyper(opening: Opening<'_>) -> Result<SendRequest<UpstreamBody>, ConnectError> {
    let Opening {
        authority,
        tls,
        connect_timeout,
        attachments,
        connection: held,
        connect,
    } = opening;
    let stream = open_master(authority, tls, connect_timeout, true).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake {
            authority: authority.to_owned(),
            source,
        })?;
    drop(connect); // connected: the next connect may start
    let authority = authority.to_owned();
    let attachment = attachments.attach(Kind::Http);
    tokio::spawn(async move {
        let _held = held;
        // Upgrades stay possible: a 101 hands the socket to the tunnel.
        // Biased: polled on every wakeup of the connection; no random pick.
        tokio::select! {
            biased;
            ended = connection.with_upgrades() => if let Err(error) = ended {
                tracing::debug!(%authority, %error, "upstream connection ended with an error");
            },
            // Drained: dropping the connection closes the socket, and any
            // response still streaming from it ends with an error.
            () = attachment.closed() => {}
        }
    });
    Ok(sender)
}
