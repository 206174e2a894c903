//! One client connection: read bytes, decode packets and hand them to the broker core; take the
//! packets and close requests the core gives this connection's [`ConnOutlet`], encode them and
//! write them out.
//!
//! This module only moves bytes and events. It never implements a protocol rule: what a packet
//! means, when to answer and when to close are the core's decisions.
//!
//! Shape: one task per connection runs one loop that does whatever its socket and its mailbox
//! allow without waiting (read and hand over, encode and write), then waits for any of them with
//! a single poll (socket readable, socket writable while output is pending, mail, the end of a
//! pause, the connect timeout). All of the connection's state lives in [`Connection`], not in
//! wait futures, so an idle connection's task is small (see "Connection memory" in
//! docs/performance.md).
//!
//! Close flow: the connection ends when the core raises the mailbox's ending flag (through
//! [`ConnOutlet::close`]), or on EOF, an IO error, a violation or the connect timeout. The
//! loop then stops reading and calls `handle_closed` exactly once; what is queued is sent (up
//! to and including a close request), the write half is shut down, and after a close request
//! the peer's FIN is awaited. All of that has [`CLOSE_GRACE`], after which the socket is
//! dropped.
//!
//! Idle memory: an idle connection holds no read or write buffer and an empty mailbox, so what
//! it costs is its task and its state in the core.
//!
//! Backpressure: when the core reports that the packets just handed over fed a backed-up
//! connection (`Broker::take_backpressure`), the connection stops reading until that connection
//! drains, at most [`MAX_PAUSE`] (see [`Backpressure`]), while it goes on writing; the core
//! decides, this module waits.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tern_broker::{ConnId, Frame, Outlet};
use tern_codec::{Packet, ProtocolVersion, Violation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Sleep;

use crate::mailbox::{self, Taken};
use crate::shared::{SharedBroker, Unrouted};
use crate::shutdown::TaskToken;

/// Read buffer size a connection reads into. An idle connection holds no buffer: it is
/// allocated when the socket is readable and given back once a read finds nothing more.
const READ_CHUNK: usize = 4 * 1024;
/// Encoded bytes gathered before a write is issued, when many packets are queued.
const WRITE_BATCH: usize = 64 * 1024;
/// Most packets handed to the core under one lock, so one busy connection cannot hold the
/// core for long.
const MAX_BATCH: usize = 64;
/// Deliveries (sent or dropped) after which a batch gives the core's lock up, so a client
/// publishing to many subscribers holds it for a few of its messages at a time, not for 64:
/// with 1000 subscribers about 4 publishes per lock instead of 64.
const MAX_DELIVERIES_PER_CALL: u64 = 4096;
/// Longest a client is left unread at a time because a connection it publishes to is backed
/// up (see [`Backpressure`]). A connection that does not drain within it counts as stalled and
/// pauses nobody until it drains again, so a subscriber that stops reading costs its publishers
/// one such pause, not a throttle; it also breaks any cycle of clients waiting on each other.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Time a connection has to finish (flush, linger for the peer's FIN) once it is ending.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the core asks a connection to send.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Send this packet.
    Frame(Frame),
    /// Send everything before this, then close.
    Close,
}

/// The core's handle on one connection: forwards to the connection's mailbox.
#[derive(Debug)]
pub(crate) struct ConnOutlet {
    tx: mailbox::Sender<Outbound>,
    /// The connection's backlog, and whether it is backed up, for the clients publishing to it.
    pub(crate) backpressure: Arc<Backpressure>,
}

/// How far behind a connection is: its socket backlog, and whether it is backed up, for the
/// readers of the clients that publish to it: they wait on it until it drains (or for
/// [`MAX_PAUSE`]).
#[derive(Debug)]
pub(crate) struct Backpressure {
    /// Packets handed to the connection and not yet written.
    backlog: AtomicUsize,
    /// Backlog at which the connection counts as congested.
    max_backlog: usize,
    /// Payload bytes of the PUBLISHes handed to the connection and not yet written.
    backlog_bytes: AtomicUsize,
    /// Payload bytes at which the connection counts as congested; 0 for no byte limit.
    max_backlog_bytes: usize,
    /// The session queue reached `pause_publishers_at` (set and cleared by the core).
    queued: AtomicBool,
    /// The socket backlog reached a limit and QoS 0 messages were dropped (set when the core
    /// finds the outlet congested, cleared by the connection's writing at half the limit).
    congested: AtomicBool,
    /// A publisher waited [`MAX_PAUSE`] without this connection draining: nobody waits for it
    /// again until it does.
    stalled: AtomicBool,
    drained: Notify,
}

impl Backpressure {
    fn new(max_backlog: usize, max_backlog_bytes: usize) -> Self {
        Backpressure {
            backlog: AtomicUsize::new(0),
            max_backlog: max_backlog.max(1),
            backlog_bytes: AtomicUsize::new(0),
            max_backlog_bytes,
            queued: AtomicBool::new(false),
            congested: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            drained: Notify::new(),
        }
    }

    /// `n` packets carrying `bytes` payload bytes were written: count them off the backlog,
    /// and clear the congestion once it is down to half of both limits.
    fn written(&self, n: usize, bytes: usize) {
        let left = self
            .backlog
            .fetch_sub(n, Ordering::Relaxed)
            .saturating_sub(n);
        let left_bytes = self
            .backlog_bytes
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        if left <= self.max_backlog / 2 && left_bytes <= self.max_backlog_bytes / 2 {
            self.set_congested(false);
        }
    }

    /// Whether the backlog is at either limit.
    fn over_limit(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) >= self.max_backlog
            || (self.max_backlog_bytes > 0
                && self.backlog_bytes.load(Ordering::Relaxed) >= self.max_backlog_bytes)
    }

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
    pub(crate) async fn wait(&self) {
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
        // A push that fails means the connection is gone: it is closing and the packet moot.
        let bytes = payload_len(&frame);
        if self.tx.push(Outbound::Frame(frame)) {
            let bp = &self.backpressure;
            bp.backlog.fetch_add(1, Ordering::Relaxed);
            if bytes > 0 {
                bp.backlog_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }

    fn is_congested(&self) -> bool {
        let bp = &self.backpressure;
        let congested = bp.over_limit();
        if congested {
            // The core drops QoS 0 messages for it now, and pauses the clients sending them.
            bp.set_congested(true);
        }
        congested
    }

    fn close(&mut self) {
        self.tx.push(Outbound::Close);
        self.tx.end();
    }

    fn set_backpressure(&mut self, on: bool) {
        self.backpressure.set_queued(on);
    }
}

impl ConnOutlet {
    /// End the connection without a close request: it sends what is already queued (within
    /// [`CLOSE_GRACE`]) and drops the socket. For a server that stops waiting for its
    /// connections.
    pub(crate) fn abandon(&self) {
        self.tx.end();
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
    /// Packets waiting for the socket at which a connection counts as congested (QoS 0
    /// messages to it are then dropped by the core).
    pub max_backlog: usize,
    /// Payload bytes waiting for the socket at which a connection counts as congested; 0 for
    /// no byte limit.
    pub max_backlog_bytes: usize,
}

/// Payload bytes of `frame`: what the byte limit of a connection's backlog counts.
fn payload_len(frame: &Frame) -> usize {
    match frame {
        Frame::Publish(p) => p.msg.payload.len(),
        _ => 0,
    }
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
    let backpressure = Arc::new(Backpressure::new(
        params.max_backlog,
        params.max_backlog_bytes,
    ));
    let outlet = ConnOutlet {
        tx,
        backpressure: backpressure.clone(),
    };
    let shared = params.shared.clone();
    let (shard, id) = shared.open(outlet);
    tracing::debug!(%peer, conn = id.0, "accepted connection");
    let mut conn = Connection {
        shared,
        id,
        shard: u8::try_from(shard).expect("at most MAX_SHARDS shards"),
        registered: true,
        stream,
        rx,
        backpressure,
        max_packet_size: params.max_packet_size,
        known: None,
        may_read: true,
        may_write: true,
        bufs: None,
        batch: VecDeque::new(),
        failed: None,
        pause: None,
        connect_timer: params
            .connect_timeout
            .map(|t| Box::pin(tokio::time::sleep(t))),
        _permit: permit,
        _token: token,
    };
    tokio::spawn(async move { conn.run().await });
}

/// One accepted connection, registered with the core: its socket, its mailbox, and where its
/// reading and writing stand.
struct Connection {
    shared: Arc<SharedBroker>,
    id: ConnId,
    /// The core's shard the connection lives in: where it opened, then the shard of its client
    /// id once its CONNECT is read.
    shard: u8,
    /// The core has not heard `handle_closed` for this connection yet.
    registered: bool,
    /// The socket (its peer address is asked for only when a line is logged).
    stream: TcpStream,
    rx: mailbox::Receiver<Outbound>,
    /// Shared with the outlet: the backlog, which writing counts down, and the congestion it
    /// clears.
    backpressure: Arc<Backpressure>,
    max_packet_size: u32,
    /// The client's protocol level: read from its first packet, or from the CONNECT that
    /// failed to decode. Packets are encoded with it (see [`Connection::version`]).
    known: Option<ProtocolVersion>,
    /// The buffers of a busy connection; `None` while idle (see [`Buffers`]).
    bufs: Option<Box<Buffers>>,
    /// Packets decoded and not yet handed to the core; kept across a pause.
    batch: VecDeque<Packet>,
    /// Input that failed to decode after `batch`, with the level it was read as.
    failed: Option<Box<(Violation, Option<ProtocolVersion>)>>,
    /// While set, a connection this one publishes to is backed up: nothing is read until it
    /// completes.
    pause: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Until the first packet is read: when to stop waiting for it.
    connect_timer: Option<Pin<Box<Sleep>>>,
    /// The socket may have input: false once a read found none, until it is readable again.
    may_read: bool,
    /// The socket may take output: false once a write was refused, until it is writable again.
    may_write: bool,
    /// The connection's place under `max_connections`, held until it ends.
    _permit: Option<OwnedSemaphorePermit>,
    /// Keeps the server's shutdown waiting for this connection.
    _token: TaskToken,
}

/// What a connection holds only while it has bytes or packets in hand. Boxed apart from
/// [`Connection`] and dropped when the connection goes idle with all of it empty, so the 100
/// bytes of it are not part of every idle task.
#[derive(Default)]
struct Buffers {
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// Taken from the mailbox and not yet encoded.
    queued: VecDeque<Outbound>,
    /// Encoded and not yet written.
    out: BytesMut,
    /// Packets encoded into `out` and not yet counted off the backlog.
    unwritten: usize,
    /// Their payload bytes.
    unwritten_bytes: usize,
}

impl Buffers {
    /// Encode queued frames into `out` until it holds [`WRITE_BATCH`] bytes, the queue is
    /// empty, or a close request is next (it stays queued).
    fn encode_queued(&mut self, version: ProtocolVersion) {
        while self.out.len() < WRITE_BATCH {
            match self.queued.front() {
                Some(Outbound::Frame(_)) => {
                    if let Some(Outbound::Frame(frame)) = self.queued.pop_front() {
                        frame.encode(version, &mut self.out);
                        self.unwritten += 1;
                        self.unwritten_bytes += payload_len(&frame);
                    }
                }
                Some(Outbound::Close) | None => break,
            }
        }
    }

    /// `out` was written in full: count its packets off the backlog.
    fn written(&mut self, backpressure: &Backpressure) {
        self.out.clear();
        backpressure.written(
            std::mem::take(&mut self.unwritten),
            std::mem::take(&mut self.unwritten_bytes),
        );
    }

    /// Gives back each buffer that is empty; true if all of them were (the box can go).
    fn shed(&mut self) -> bool {
        if self.input.is_empty() {
            self.input = BytesMut::new();
        }
        if self.queued.is_empty() {
            self.queued = VecDeque::new();
        }
        if self.out.is_empty() {
            self.out = BytesMut::new();
        }
        self.input.capacity() == 0 && self.queued.capacity() == 0 && self.out.capacity() == 0
    }

    /// Queue what was taken from the mailbox after what is already queued.
    fn queue(&mut self, items: VecDeque<Outbound>) {
        if self.queued.is_empty() {
            self.queued = items;
        } else {
            self.queued.extend(items);
        }
    }
}

/// Why the connection's loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed its side.
    Eof,
    /// Reading failed.
    ReadError,
    /// Writing failed.
    WriteError,
    /// The bytes broke the protocol; the core was told.
    Violation,
    /// No complete packet within the connect timeout.
    ConnectTimeout,
    /// The core asked to close, or let go of the connection.
    Closing,
}

/// What one round of writing did.
enum Wrote {
    /// Nothing was taken or written.
    Nothing,
    /// Bytes went out or packets were taken.
    Progress,
    /// Everything before a close request is out.
    CloseNext,
    /// The socket failed.
    Failed,
}

impl Connection {
    /// Serve the connection until it ends, then close it within [`CLOSE_GRACE`].
    async fn run(&mut self) {
        let end = self.serve().await;
        tracing::trace!(peer = ?peer(&self.stream), conn = self.id.0, ?end, "connection ending");
        self.unregister();
        // Boxed, timer included: the closing steps are taken once, and need not make every
        // idle task larger.
        let closing = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
            let closed = self.finish(end).await;
            // Our last packets are out; wait for the peer's FIN if it may still be sending.
            if closed && end != End::Eof && end != End::ReadError {
                linger(&mut self.stream).await;
            }
        }));
        if closing.await.is_err() {
            tracing::debug!(peer = ?peer(&self.stream), conn = self.id.0, "close took too long; dropping the connection");
        }
    }

    /// Read, hand over, encode and write until the connection ends; wait only when none of
    /// them can go on.
    async fn serve(&mut self) -> End {
        loop {
            if self.rx.is_ending() {
                return End::Closing;
            }
            let mut busy = false;
            if self.pause.is_none()
                && let Some(end) = self.hand_over()
            {
                return end;
            }
            if self.pause.is_none() && self.may_read {
                match self.read() {
                    Ok(true) => busy = true,
                    Ok(false) => {}
                    Err(end) => return end,
                }
            }
            match self.write() {
                Wrote::Nothing => {}
                Wrote::Progress => busy = true,
                Wrote::CloseNext => return End::Closing,
                Wrote::Failed => return End::WriteError,
            }
            if busy {
                // Non-blocking reads and writes do not count against the task's budget:
                // without this a connection that always has work would never let its worker
                // run others.
                tokio::task::consume_budget().await;
                continue;
            }
            // Idle: give the buffers and queues back unless they hold something.
            if self.batch.is_empty() {
                self.batch = VecDeque::new();
            }
            if self.bufs.as_mut().is_some_and(|bufs| bufs.shed()) {
                self.bufs = None;
            }
            if poll_fn(|cx| self.poll_wait(cx)).await {
                tracing::debug!(peer = ?peer(&self.stream), conn = self.id.0, "no CONNECT within the connect timeout");
                return End::ConnectTimeout;
            }
        }
    }

    /// Ready when something may go on: mail or the end, the pause over, the socket readable
    /// (unless paused) or writable (if output waits). True if the connect timeout ran out.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if let Some(timer) = &mut self.connect_timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(true);
        }
        let mut ready = self.rx.poll_ready(cx).is_ready();
        if let Some(pause) = &mut self.pause
            && pause.as_mut().poll(cx).is_ready()
        {
            self.pause = None;
            ready = true;
        }
        // An error counts as ready: the read or write that follows reports it.
        if self.pause.is_none() && self.stream.poll_read_ready(cx).is_ready() {
            self.may_read = true;
            ready = true;
        }
        let output_waits = self.bufs.as_ref().is_some_and(|b| !b.out.is_empty());
        if output_waits && self.stream.poll_write_ready(cx).is_ready() {
            self.may_write = true;
            ready = true;
        }
        if ready {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    }

    /// Decode the buffered input and hand it to the core, a batch per lock: the core is taken
    /// once for up to [`MAX_BATCH`] packets instead of once per packet (or until they have
    /// made [`MAX_DELIVERIES_PER_CALL`] deliveries). Stops when the input
    /// holds no complete packet, or at a pause. `Some` when the connection must end.
    fn hand_over(&mut self) -> Option<End> {
        loop {
            if self.batch.is_empty() && self.failed.is_none() {
                self.decode_batch();
                if self.batch.is_empty() && self.failed.is_none() {
                    return None;
                }
            }
            if self.rx.is_ending() {
                return Some(End::Closing);
            }
            let id = self.id;
            let shard = self.shard();
            let batch = &mut self.batch;
            let failed = &mut self.failed;
            let ((backed_up, violated), remote, unrouted) =
                self.shared.call_routed(shard, |b, now| {
                    b.take_backpressure();
                    let deliveries = b.deliveries();
                    while let Some(packet) = batch.pop_front() {
                        b.handle_packet(now, id, packet);
                        // What follows would only be dropped as well: keep it for after the wait.
                        // Or this batch has made enough deliveries: the rest under the next
                        // lock, so that other connections get the core in between.
                        if b.dropped_for_backpressure()
                            || b.deliveries() - deliveries >= MAX_DELIVERIES_PER_CALL
                        {
                            break;
                        }
                    }
                    let violated = batch.is_empty()
                        && failed.take().is_some_and(|failed| {
                            let (violation, peeked) = *failed;
                            b.handle_violation(now, id, violation, peeked);
                            true
                        });
                    // A queue these packets fed is backed up: read no more from this client until
                    // it drains (never for a queue of its own).
                    let backed_up = b
                        .take_backpressure()
                        .filter(|&to| to != id)
                        .and_then(|to| b.outlet(to))
                        .map(|outlet| outlet.backpressure.clone());
                    (backed_up, violated)
                });
            if let Some(rest) = unrouted {
                // Routing in another shard stopped at a backed-up connection: the rest goes on
                // as it drains, before any later packet of this client is handed over (or at
                // once, if the connection ends or there is no one to wait for).
                let unrouted = Unrouted::new(self.shared.clone(), rest);
                match (&remote, violated) {
                    (Some(backlog), false) => {
                        self.pause = Some(Box::pin(unrouted.run(backlog.clone())));
                        return None;
                    }
                    _ => drop(unrouted),
                }
            }
            if violated {
                return Some(End::Violation);
            }
            if let Some(backed_up) = backed_up.or(remote) {
                self.pause = Some(Box::pin(async move { backed_up.wait().await }));
                return None;
            }
        }
    }

    /// Decode up to [`MAX_BATCH`] packets from the input into `batch`, or up to the first
    /// undecodable bytes (into `failed`).
    fn decode_batch(&mut self) {
        let Some(bufs) = &mut self.bufs else {
            return;
        };
        let input = &mut bufs.input;
        while self.batch.len() < MAX_BATCH && !input.is_empty() {
            // Until the first packet, the version is what the CONNECT being read says.
            let peeked = self
                .known
                .or_else(|| tern_codec::peek_connect_version(input));
            let decode_as = peeked.unwrap_or(ProtocolVersion::V3_1_1);
            match tern_codec::decode(input, decode_as, self.max_packet_size) {
                Ok(None) => break,
                Ok(Some(mut packet)) => {
                    if let Packet::Publish(publish) = &mut packet {
                        // Here, not in the core: the copy is made outside its lock.
                        publish.detach();
                    }
                    if self.known.is_none() {
                        let version = match &packet {
                            Packet::Connect(connect) => {
                                // Into the shard of its client id before the core sees it.
                                let at = usize::from(self.shard);
                                let to = self.shared.place(self.id, at, &connect.client_id);
                                self.shard = u8::try_from(to).expect("at most MAX_SHARDS shards");
                                connect.protocol
                            }
                            _ => decode_as,
                        };
                        // The CONNACK must be encoded with this level.
                        self.known = Some(version);
                        self.connect_timer = None;
                    }
                    self.batch.push_back(packet);
                }
                Err(violation) => {
                    tracing::trace!(peer = ?peer(&self.stream), conn = self.id.0, %violation, "undecodable input");
                    // Nothing is decoded after this; the core's answer is encoded with it.
                    if peeked.is_some() {
                        self.known = peeked;
                    }
                    self.failed = Some(Box::new((violation, peeked)));
                    break;
                }
            }
        }
    }

    /// Read what the socket has without waiting: true if bytes arrived, false if none were
    /// there; `Err` at EOF or on an error.
    fn read(&mut self) -> Result<bool, End> {
        let input = &mut self.bufs.get_or_insert_with(Box::default).input;
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        match self.stream.try_read_buf(input) {
            Ok(0) => Err(End::Eof),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.may_read = false;
                Ok(false)
            }
            Err(e) => {
                tracing::debug!(peer = ?peer(&self.stream), conn = self.id.0, "read failed: {e}");
                Err(End::ReadError)
            }
        }
    }

    /// Take the mail, encode up to [`WRITE_BATCH`] bytes of it and write what the socket takes
    /// without waiting.
    fn write(&mut self) -> Wrote {
        let mut wrote = Wrote::Nothing;
        match self.rx.try_take() {
            Some(Taken::Items(items)) => {
                wrote = Wrote::Progress;
                self.bufs.get_or_insert_with(Box::default).queue(items);
            }
            // The core let go of the connection: there is nothing more to send.
            Some(Taken::Closed) => return Wrote::CloseNext,
            None => {}
        }
        let version = self.version();
        let Some(bufs) = &mut self.bufs else {
            return wrote;
        };
        bufs.encode_queued(version);
        if bufs.out.is_empty() {
            return match bufs.queued.front() {
                Some(Outbound::Close) => Wrote::CloseNext,
                _ => wrote,
            };
        }
        if !self.may_write {
            return wrote;
        }
        match self.stream.try_write(&bufs.out) {
            Ok(n) => {
                bufs.out.advance(n);
                if bufs.out.is_empty() {
                    bufs.written(&self.backpressure);
                }
                Wrote::Progress
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.may_write = false;
                wrote
            }
            Err(e) => {
                tracing::debug!(peer = ?peer(&self.stream), conn = self.id.0, "write failed: {e}");
                Wrote::Failed
            }
        }
    }

    /// Once the connection ends: send what is queued, and what the mailbox holds then, up to
    /// and including a close request. True if it ended by shutting the write half down at
    /// the core's request.
    async fn finish(&mut self, end: End) -> bool {
        if end == End::WriteError {
            return false;
        }
        let mut took = false;
        let version = self.version();
        let bufs = self.bufs.get_or_insert_with(Box::default);
        loop {
            bufs.encode_queued(version);
            if !bufs.out.is_empty() {
                if let Err(e) = self.stream.write_all(&bufs.out).await {
                    tracing::debug!(peer = ?peer(&self.stream), conn = self.id.0, "write failed: {e}");
                    return false;
                }
                bufs.written(&self.backpressure);
            }
            match bufs.queued.front() {
                Some(Outbound::Close) => {
                    let _ = self.stream.shutdown().await;
                    return true;
                }
                Some(Outbound::Frame(_)) => continue,
                None if took => return false,
                None => {}
            }
            took = true;
            match self.rx.try_take() {
                Some(Taken::Items(items)) => bufs.queue(items),
                Some(Taken::Closed) | None => return false,
            }
        }
    }

    /// The level packets are encoded with: the known one, v3.1.1 before it is known (what a v3
    /// client reads; packets sent then are CONNACKs refusing a connection whose level could
    /// not be read).
    fn version(&self) -> ProtocolVersion {
        self.known.unwrap_or(ProtocolVersion::V3_1_1)
    }

    /// The core's shard this connection lives in.
    fn shard(&self) -> usize {
        usize::from(self.shard)
    }

    /// Tell the core the connection is gone, once.
    fn unregister(&mut self) {
        if std::mem::take(&mut self.registered) {
            let id = self.id;
            self.shared
                .call(self.shard(), |b, now| b.handle_closed(now, id));
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The task was cut short (its runtime shut down): the core must still hear of it.
        // Calling into the core while unwinding could panic again and abort the process.
        if !std::thread::panicking() {
            self.unregister();
        }
    }
}

/// The peer's address, for a log line (asked of the socket: it is not kept).
fn peer(stream: &TcpStream) -> Option<SocketAddr> {
    stream.peer_addr().ok()
}

/// Read and discard until the peer closes, so dropping the socket with unread input does not
/// reset the connection before the peer has read our last packets. Bounded by [`CLOSE_GRACE`]
/// through the caller.
async fn linger(stream: &mut TcpStream) {
    let mut scratch = vec![0u8; 1024];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}
