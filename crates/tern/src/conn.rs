//! One client connection: read bytes, decode packets and hand them to the broker core; take the
//! packets and close requests the core gives this connection's [`ConnOutlet`], encode them and
//! write them out.
//!
//! This module only moves bytes and events. It never implements a protocol rule: what a packet
//! means, when to answer and when to close are the core's decisions.
//!
//! Close flow: whoever ends the connection first raises its `ending` flag — the core (through
//! [`ConnOutlet::close`]), the reader (EOF, IO error, violation, connect timeout) or the writer
//! (IO error). The reader then stops and calls `handle_closed` exactly once; the writer sends what
//! is queued (up to and including a close request), shuts its half down, and stops. Once the
//! flag is up the connection has [`CLOSE_GRACE`] to finish, after which the socket is dropped.
//!
//! Idle memory: an idle connection holds no read or write buffer and an empty mailbox, so what
//! it costs is its task and its state in the core.
//!
//! Backpressure: when the core reports that the packets just handed over fed a backed-up
//! connection (`Broker::take_backpressure`), the reader stops reading until that connection
//! drains, at most [`MAX_PAUSE`] (see [`Backpressure`]); the core decides, this module waits.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tern_broker::{ConnId, Frame, Outlet};
use tern_codec::{Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::mailbox::{self, Taken};
use crate::shared::SharedBroker;
use crate::shutdown::{Flag, TaskToken};

/// Read buffer size a connection reads into. An idle connection holds no buffer: it is
/// allocated when the socket is readable and given back once a read finds nothing more.
const READ_CHUNK: usize = 4 * 1024;
/// Encoded bytes gathered before a write is issued, when many packets are queued.
const WRITE_BATCH: usize = 64 * 1024;
/// Most packets handed to the core under one lock, so one busy connection cannot hold the
/// core for long.
const MAX_BATCH: usize = 64;
/// Longest a client is left unread at a time because a connection it publishes to is backed
/// up (see [`Backpressure`]). A connection that does not drain within it counts as stalled and
/// pauses nobody until it drains again, so a subscriber that stops reading costs its publishers
/// one such pause, not a throttle; it also breaks any cycle of clients waiting on each other.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Time a connection has to finish (flush, linger for the peer's FIN) once it is ending.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the core asks a connection's writer to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Send this packet.
    Frame(Frame),
    /// Send everything before this, then close.
    Close,
}

/// The core's handle on one connection: forwards to the connection's writer.
#[derive(Debug)]
pub(crate) struct ConnOutlet {
    tx: mailbox::Sender<Outbound>,
    ending: Flag,
    /// Packets handed to the writer and not yet written.
    backlog: Arc<AtomicUsize>,
    /// Backlog at which the connection counts as congested.
    max_backlog: usize,
    /// Whether this connection's session queue is backed up, for the clients publishing to it.
    backpressure: Arc<Backpressure>,
}

/// Whether a connection is backed up, for the readers of the clients that publish to it: they
/// wait on it until it drains (or for [`MAX_PAUSE`]).
#[derive(Debug, Default)]
pub(crate) struct Backpressure {
    /// The session queue reached `pause_publishers_at` (set and cleared by the core).
    queued: AtomicBool,
    /// The socket backlog reached its limit and QoS 0 messages were dropped (set when the core
    /// finds the outlet congested, cleared by the writer at half the limit).
    congested: AtomicBool,
    /// A publisher waited [`MAX_PAUSE`] without this connection draining: nobody waits for it
    /// again until it does.
    stalled: AtomicBool,
    drained: Notify,
}

impl Backpressure {
    fn set_queued(&self, on: bool) {
        self.set(&self.queued, on);
    }

    fn set_congested(&self, on: bool) {
        self.set(&self.congested, on);
    }

    /// Sets one of the two conditions; clearing one that was set means the connection drained:
    /// it is not stalled, and whoever waits may go on.
    fn set(&self, condition: &AtomicBool, on: bool) {
        if condition.swap(on, Ordering::AcqRel) && !on {
            self.stalled.store(false, Ordering::Release);
            self.drained.notify_waiters();
        }
    }

    fn backed_up(&self) -> bool {
        (self.queued.load(Ordering::Acquire) || self.congested.load(Ordering::Acquire))
            && !self.stalled.load(Ordering::Acquire)
    }

    /// Waits until the connection has drained, at most [`MAX_PAUSE`]; after a wait that ran
    /// out, it counts as stalled.
    async fn wait(&self) {
        let drained = self.drained.notified();
        tokio::pin!(drained);
        // Registered before the check, so a drain in between is not missed.
        drained.as_mut().enable();
        if self.backed_up() && tokio::time::timeout(MAX_PAUSE, drained).await.is_err() {
            self.stalled.store(true, Ordering::Release);
        }
    }
}

impl Drop for ConnOutlet {
    fn drop(&mut self) {
        // The connection is gone: nobody should wait for it any more.
        self.backpressure.set_queued(false);
        self.backpressure.set_congested(false);
    }
}

impl Outlet for ConnOutlet {
    fn send(&mut self, frame: Frame) {
        // A send error means the writer is gone: the connection is closing and the packet moot.
        if self.tx.push(Outbound::Frame(frame)) {
            self.backlog.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_congested(&self) -> bool {
        let congested = self.backlog.load(Ordering::Relaxed) >= self.max_backlog;
        if congested {
            // The core drops QoS 0 messages for it now, and pauses the clients sending them.
            self.backpressure.set_congested(true);
        }
        congested
    }

    fn close(&mut self) {
        self.tx.push(Outbound::Close);
        self.ending.raise();
    }

    fn set_backpressure(&mut self, on: bool) {
        self.backpressure.set_queued(on);
    }
}

/// Everything a connection task needs from the server.
pub(crate) struct ConnParams {
    /// The shared broker core.
    pub shared: Arc<SharedBroker>,
    /// Close connections whose first packet does not arrive within this.
    pub connect_timeout: Option<Duration>,
    /// Largest packet the decoder accepts.
    pub max_packet_size: u32,
    /// Raised when the server gives up waiting for connections at shutdown.
    pub abandon: Flag,
    /// Packets waiting for the socket at which a connection counts as congested (QoS 0
    /// messages to it are then dropped by the core).
    pub max_backlog: usize,
}

/// Register an accepted socket with the core and spawn the task that drives it.
pub(crate) fn spawn(
    params: &ConnParams,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    token: TaskToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "could not set TCP_NODELAY: {e}");
    }
    let (tx, rx) = mailbox::mailbox();
    let ending = Flag::new();
    let backlog = Arc::new(AtomicUsize::new(0));
    let backpressure = Arc::new(Backpressure::default());
    let max_backlog = params.max_backlog.max(1);
    let outlet = ConnOutlet {
        tx,
        ending: ending.clone(),
        backlog: backlog.clone(),
        max_backlog,
        backpressure: backpressure.clone(),
    };
    let shared = params.shared.clone();
    let id = shared.call(|broker, now| broker.open(now, outlet));
    tracing::debug!(%peer, conn = id.0, "accepted connection");
    let conn = Connection {
        shared,
        id,
        peer,
        ending,
        version: Arc::new(AtomicU8::new(0)),
        backlog,
        max_backlog,
        backpressure,
        connect_timeout: params.connect_timeout,
        max_packet_size: params.max_packet_size,
    };
    let abandon = params.abandon.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _token = token;
        conn.run(stream, rx, abandon).await;
    });
}

/// One accepted connection, registered with the core.
struct Connection {
    shared: Arc<SharedBroker>,
    id: ConnId,
    peer: SocketAddr,
    /// Raised once the connection is ending, by the core, the reader or the writer.
    ending: Flag,
    /// Protocol level for encoding: 0 until known, else a `ProtocolVersion` as `u8`.
    version: Arc<AtomicU8>,
    /// Packets handed over by the core and not yet written (shared with the outlet).
    backlog: Arc<AtomicUsize>,
    /// Backlog at which the connection counts as congested.
    max_backlog: usize,
    /// Shared with the outlet; the writer clears its congestion.
    backpressure: Arc<Backpressure>,
    connect_timeout: Option<Duration>,
    max_packet_size: u32,
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The peer closed its side.
    Eof,
    /// Reading failed.
    Error,
    /// The bytes broke the protocol; the core was told.
    Violation,
    /// No complete packet within the connect timeout.
    ConnectTimeout,
    /// The connection was ending for another reason.
    Stopped,
}

impl Connection {
    async fn run(self, stream: TcpStream, rx: mailbox::Receiver<Outbound>, abandon: Flag) {
        let (mut rd, wr) = stream.into_split();
        let mut registration = Registration {
            shared: &self.shared,
            id: self.id,
            open: true,
        };
        let body = async {
            let reader = async {
                let end = self.read_loop(&mut rd).await;
                self.ending.raise();
                registration.closed();
                end
            };
            let (end, closed) = tokio::join!(reader, self.write_loop(wr, rx));
            tracing::trace!(peer = %self.peer, conn = self.id.0, ?end, "connection ended");
            // Our last packets are out; wait for the peer's FIN if it may still be sending.
            if closed && end != ReadEnd::Eof && end != ReadEnd::Error {
                linger(&mut rd).await;
            }
        };
        let grace = async {
            self.ending.raised().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        };
        tokio::select! {
            () = body => {}
            () = grace => tracing::debug!(peer = %self.peer, conn = self.id.0, "close took too long; dropping the connection"),
            () = abandon.raised() => {}
        }
        // `registration` drops here: the core hears `handle_closed` if the reader did not say it.
    }

    /// Decode packets and hand them to the core until the connection ends.
    async fn read_loop(&self, rd: &mut OwnedReadHalf) -> ReadEnd {
        let mut buf = BytesMut::new();
        let mut known: Option<ProtocolVersion> = None;
        let connect_deadline = self
            .connect_timeout
            .map(|t| tokio::time::Instant::now() + t);
        loop {
            // Hand over every complete packet already buffered, a batch per lock: the core is
            // taken once for up to MAX_BATCH packets instead of once per packet.
            while !buf.is_empty() {
                if self.ending.is_raised() {
                    return ReadEnd::Stopped;
                }
                let mut batch = VecDeque::new();
                let mut failed = None;
                while batch.len() < MAX_BATCH && !buf.is_empty() {
                    // Until the first packet, the version is what the CONNECT being read says.
                    let peeked = known.or_else(|| tern_codec::peek_connect_version(&buf));
                    let decode_as = peeked.unwrap_or(ProtocolVersion::V3_1_1);
                    match tern_codec::decode(&mut buf, decode_as, self.max_packet_size) {
                        Ok(None) => break,
                        Ok(Some(packet)) => {
                            if known.is_none() {
                                let version = match &packet {
                                    Packet::Connect(connect) => connect.protocol,
                                    _ => decode_as,
                                };
                                known = Some(version);
                                // The writer must encode the CONNACK with this level.
                                self.version.store(version as u8, Ordering::Release);
                            }
                            batch.push_back(packet);
                        }
                        Err(violation) => {
                            tracing::trace!(peer = %self.peer, conn = self.id.0, %violation, "undecodable input");
                            if let Some(version) = peeked {
                                self.version.store(version as u8, Ordering::Release);
                            }
                            failed = Some((violation, peeked));
                            break;
                        }
                    }
                }
                if batch.is_empty() && failed.is_none() {
                    break;
                }
                while !batch.is_empty() || failed.is_some() {
                    let (backed_up, violated) = self.shared.call(|b, now| {
                        b.take_backpressure();
                        while let Some(packet) = batch.pop_front() {
                            b.handle_packet(now, self.id, packet);
                            // What follows would only be dropped as well: keep it for after
                            // the wait.
                            if b.dropped_for_backpressure() {
                                break;
                            }
                        }
                        let violated = batch.is_empty()
                            && failed.take().is_some_and(|(violation, peeked)| {
                                b.handle_violation(now, self.id, violation, peeked);
                                true
                            });
                        // A queue these packets fed is backed up: read no more from this client
                        // until it drains (never for a queue of its own).
                        let backed_up = b
                            .take_backpressure()
                            .filter(|&to| to != self.id)
                            .and_then(|to| b.outlet(to))
                            .map(|outlet| outlet.backpressure.clone());
                        (backed_up, violated)
                    });
                    if violated {
                        return ReadEnd::Violation;
                    }
                    if let Some(backed_up) = backed_up {
                        tokio::select! {
                            biased;
                            () = self.ending.raised() => return ReadEnd::Stopped,
                            () = backed_up.wait() => {}
                        }
                    }
                }
            }
            // Read what the socket has without waiting; only an idle connection waits, and it
            // gives its buffer back first unless it holds part of a packet.
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            match rd.try_read_buf(&mut buf) {
                Ok(0) => return ReadEnd::Eof,
                Ok(_) => {
                    // `try_read_buf` does not count against the task's budget: without this a
                    // connection that always has input would never let its worker run others.
                    tokio::task::consume_budget().await;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, conn = self.id.0, "read failed: {e}");
                    return ReadEnd::Error;
                }
            }
            if buf.is_empty() {
                buf = BytesMut::new();
            }
            let deadline = if known.is_none() {
                connect_deadline
            } else {
                None
            };
            let readable = async {
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, rd.readable()).await.ok(),
                    None => Some(rd.readable().await),
                }
            };
            let result = tokio::select! {
                biased;
                () = self.ending.raised() => return ReadEnd::Stopped,
                result = readable => result,
            };
            match result {
                None => {
                    tracing::debug!(peer = %self.peer, conn = self.id.0, "no CONNECT within the connect timeout");
                    return ReadEnd::ConnectTimeout;
                }
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(peer = %self.peer, conn = self.id.0, "read failed: {e}");
                    return ReadEnd::Error;
                }
            }
        }
    }

    /// Encode and write what the core queued, a whole queue per round, until a close request,
    /// a write error, or the connection ending with the queue drained. Returns true if it ended
    /// by closing the write half at the core's request.
    async fn write_loop(
        &self,
        mut wr: OwnedWriteHalf,
        mut rx: mailbox::Receiver<Outbound>,
    ) -> bool {
        // Like the read buffer, the write buffer exists only while there is something to write.
        let mut out = BytesMut::new();
        let mut ready = None;
        loop {
            let (taken, done) = match ready.take() {
                Some(taken) => (taken, false),
                None => {
                    out = BytesMut::new();
                    tokio::select! {
                        biased;
                        taken = rx.take() => (taken, false),
                        () = self.ending.raised() => (rx.try_take().unwrap_or(Taken::Closed), true),
                    }
                }
            };
            let items = match taken {
                Taken::Items(items) => items,
                Taken::Closed => return false,
            };
            let version = self.version();
            let mut close = false;
            let mut unwritten = 0;
            for item in items {
                match item {
                    Outbound::Frame(frame) => {
                        frame.encode(version, &mut out);
                        unwritten += 1;
                    }
                    Outbound::Close => {
                        close = true;
                        break;
                    }
                }
                if out.len() >= WRITE_BATCH && !self.flush(&mut wr, &mut out, &mut unwritten).await
                {
                    return false;
                }
            }
            if !self.flush(&mut wr, &mut out, &mut unwritten).await {
                return false;
            }
            if close {
                let _ = wr.shutdown().await;
                self.ending.raise();
                return true;
            }
            if done {
                return false;
            }
            // More may have arrived while writing: go on with it before waiting (and before
            // giving the buffer back).
            ready = rx.try_take();
        }
    }

    /// Write `out` and count its `unwritten` packets off the backlog; false if the write failed.
    async fn flush(
        &self,
        wr: &mut OwnedWriteHalf,
        out: &mut BytesMut,
        unwritten: &mut usize,
    ) -> bool {
        if out.is_empty() {
            return true;
        }
        if let Err(e) = wr.write_all(out).await {
            tracing::debug!(peer = %self.peer, conn = self.id.0, "write failed: {e}");
            self.ending.raise();
            return false;
        }
        out.clear();
        let written = std::mem::take(unwritten);
        let before = self.backlog.fetch_sub(written, Ordering::Relaxed);
        if before.saturating_sub(written) <= self.max_backlog / 2 {
            self.backpressure.set_congested(false);
        }
        true
    }

    fn version(&self) -> ProtocolVersion {
        match self.version.load(Ordering::Acquire) {
            5 => ProtocolVersion::V5,
            3 => ProtocolVersion::V3_1,
            // Before the level is known, v3.1.1 encoding is what a v3 client reads, and packets
            // sent then are CONNACKs refusing a connection whose level could not be read.
            _ => ProtocolVersion::V3_1_1,
        }
    }
}

/// Read and discard until the peer closes, so dropping the socket with unread input does not
/// reset the connection before the peer has read our last packets. Bounded by [`CLOSE_GRACE`]
/// through the caller.
async fn linger(rd: &mut OwnedReadHalf) {
    // On the heap: a buffer here would be part of every connection's task, idle or not.
    let mut scratch = vec![0u8; 1024];
    while let Ok(n) = rd.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

/// The connection's registration with the core: ensures `handle_closed` is called exactly once,
/// even when the connection task is cut short.
struct Registration<'a> {
    shared: &'a SharedBroker,
    id: ConnId,
    open: bool,
}

impl Registration<'_> {
    fn closed(&mut self) {
        if std::mem::take(&mut self.open) {
            self.shared.call(|b, now| b.handle_closed(now, self.id));
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // Calling into the core while unwinding could panic again and abort the process.
        if !std::thread::panicking() {
            self.closed();
        }
    }
}
