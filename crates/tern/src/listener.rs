//! Accept loops: one per bound listener, handing each accepted socket to [`crate::conn`].
//!
//! This module owns accepting, the connection limit and backing off on accept errors. It must
//! not read or write a connection's bytes.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conn::{self, ConnParams};
use crate::shutdown::{Flag, TaskToken};

/// First pause after an accept error; doubled on each further error.
const BACKOFF_START: Duration = Duration::from_millis(5);
/// Longest pause after accept errors.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept connections on `listener` until `stop` is raised.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    params: Arc<ConnParams>,
    limit: Option<Arc<Semaphore>>,
    stop: Flag,
    token: TaskToken,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.raised() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = BACKOFF_START;
                let permit = match &limit {
                    None => None,
                    Some(limit) => match limit.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            tracing::warn!(%peer, "connection limit reached; closing new connection");
                            continue;
                        }
                    },
                };
                conn::spawn(&params, stream, peer, permit, token.clone());
            }
            // The peer gave up before we accepted: nothing wrong with the listener.
            Err(e) if is_per_connection(&e) => {
                tracing::debug!("accept: {e}");
            }
            Err(e) => {
                // Typically out of file descriptors: retrying at once would spin.
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = stop.raised() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
