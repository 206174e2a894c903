//! [`Client`]: connect, subscribe, publish (awaited or pipelined), receive, disconnect.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_codec::{
    ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{ClientError, ConnectOptions, conn};

/// How many packets the caller may queue for the connection task before `send` waits.
const COMMAND_CAPACITY: usize = 64;

/// How long [`Client::disconnect`] waits for the connection task to finish.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);

/// A connected MQTT client. Dropping it closes the connection without a DISCONNECT.
///
/// Received messages queue (up to [`ConnectOptions::incoming_capacity`]) until taken with
/// [`Client::recv`]; while that queue is full the connection stops reading, so a caller that
/// subscribes must keep calling `recv` or acknowledgments of its own publishes stall too.
pub struct Client {
    version: ProtocolVersion,
    commands: mpsc::Sender<Packet>,
    incoming: mpsc::Receiver<Publish>,
    shared: Arc<Shared>,
    task: JoinHandle<Result<(), ClientError>>,
}

/// Completion of one publish: resolves when the QoS flow ends (at once for QoS 0, on PUBACK for
/// QoS 1, on PUBCOMP for QoS 2). Dropping it does not cancel the publish.
#[derive(Debug)]
#[must_use = "a PublishToken reports whether the publish completed"]
pub struct PublishToken {
    rx: Option<oneshot::Receiver<Result<(), ClientError>>>,
}

impl Future for PublishToken {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.rx.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(ClientError::Closed))),
        }
    }
}

/// State shared by the [`Client`] handle and its connection task.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// One permit per QoS 1 or 2 publish allowed in flight.
    window: Arc<Semaphore>,
    window_size: u32,
}

struct State {
    next_id: u16,
    waiters: HashMap<u16, Waiter>,
    closed: bool,
}

/// Who waits for the answer to a packet identifier.
pub(crate) enum Waiter {
    /// A QoS 1 or 2 publish; the permit returns to the window when the flow ends.
    Publish {
        tx: oneshot::Sender<Result<(), ClientError>>,
        _permit: OwnedSemaphorePermit,
    },
    /// A SUBSCRIBE.
    Subscribe(oneshot::Sender<SubAck>),
    /// An UNSUBSCRIBE.
    Unsubscribe(oneshot::Sender<UnsubAck>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Allocates a free packet identifier for `waiter`.
    fn register(&self, waiter: Waiter) -> Result<PacketId, ClientError> {
        let mut st = self.lock();
        if st.closed {
            return Err(ClientError::Closed);
        }
        if st.waiters.len() >= usize::from(u16::MAX) {
            return Err(ClientError::NoPacketId);
        }
        let id = loop {
            st.next_id = st.next_id.checked_add(1).unwrap_or(1);
            if !st.waiters.contains_key(&st.next_id) {
                break st.next_id;
            }
        };
        st.waiters.insert(id, waiter);
        NonZeroU16::new(id).ok_or(ClientError::NoPacketId)
    }

    /// Removes and returns the waiter of `id`, if any.
    pub(crate) fn take(&self, id: PacketId) -> Option<Waiter> {
        self.lock().waiters.remove(&id.get())
    }

    /// Ends a publish flow for `id` with `reason`.
    pub(crate) fn complete_publish(&self, id: PacketId, reason: ReasonCode) {
        if let Some(Waiter::Publish { tx, .. }) = self.take(id) {
            let result = if reason.is_error() {
                Err(ClientError::PublishRejected(reason))
            } else {
                Ok(())
            };
            let _ = tx.send(result);
        }
    }

    /// Marks the connection closed: fails every waiter and closes the window.
    pub(crate) fn close(&self) {
        let waiters = {
            let mut st = self.lock();
            st.closed = true;
            std::mem::take(&mut st.waiters)
        };
        // Dropping the senders resolves every receiver with `Closed`.
        drop(waiters);
        self.window.close();
    }
}

impl Client {
    /// Opens a TCP connection to `addr`, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> Result<(Client, ConnAck), ClientError> {
        tokio::time::timeout(options.connect_timeout, Self::connect_inner(addr, options))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn connect_inner(
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> Result<(Client, ConnAck), ClientError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(local) = options.local_addr {
            socket.bind(local)?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let version = options.version;
        let max_packet_size = options.max_packet_size.unwrap_or(u32::MAX);
        let mut out = BytesMut::new();
        Packet::Connect(Box::new(connect_packet(&options))).encode(version, &mut out);
        stream.write_all(&out).await?;

        let mut buf = BytesMut::with_capacity(1024);
        let connack = read_connack(&mut stream, &mut buf, version, max_packet_size).await?;
        if connack.reason.is_error() {
            return Err(ClientError::Refused(connack.reason));
        }
        let window = connack
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(options.max_in_flight)
            .max(1);
        let keep_alive = connack
            .properties
            .server_keep_alive
            .unwrap_or(options.keep_alive);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 0,
                waiters: HashMap::new(),
                closed: false,
            }),
            window: Arc::new(Semaphore::new(usize::from(window))),
            window_size: u32::from(window),
        });
        let (commands, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (incoming_tx, incoming) = mpsc::channel(options.incoming_capacity.max(1));
        let task = tokio::spawn(conn::run(conn::Params {
            stream,
            buf,
            version,
            max_packet_size,
            keep_alive,
            shared: shared.clone(),
            commands: commands_rx,
            incoming: incoming_tx,
            on_message: options.on_message.clone(),
        }));
        let client = Client {
            version,
            commands,
            incoming,
            shared,
            task,
        };
        Ok((client, connack))
    }

    /// The protocol level of this connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The most QoS 1 and 2 publishes this client keeps in flight (the broker's Receive Maximum
    /// capped by [`ConnectOptions::max_in_flight`]).
    pub fn window(&self) -> u32 {
        self.shared.window_size
    }

    /// QoS 1 and 2 publishes sent and not yet completed.
    pub fn in_flight(&self) -> u32 {
        let available = u32::try_from(self.shared.window.available_permits()).unwrap_or(u32::MAX);
        self.shared.window_size.saturating_sub(available)
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Hands `packet` to the connection task.
    async fn send(&self, packet: Packet) -> Result<(), ClientError> {
        self.commands
            .send(packet)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Subscribes to `filter` with maximum `qos`; fails if the broker refuses it.
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<SubAck, ClientError> {
        let (tx, rx) = oneshot::channel();
        let packet_id = self.shared.register(Waiter::Subscribe(tx))?;
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
            properties: Properties::default(),
            filters: vec![(filter.into(), SubscriptionOptions::new(qos))],
        }))
        .await?;
        let suback = rx.await.map_err(|_| ClientError::Closed)?;
        match suback.reasons.iter().find(|r| r.is_error()) {
            Some(&reason) => Err(ClientError::SubscribeRejected(reason)),
            None => Ok(suback),
        }
    }

    /// Removes the subscription to `filter`.
    pub async fn unsubscribe(&self, filter: impl Into<String>) -> Result<UnsubAck, ClientError> {
        let (tx, rx) = oneshot::channel();
        let packet_id = self.shared.register(Waiter::Unsubscribe(tx))?;
        self.send(Packet::Unsubscribe(Unsubscribe {
            packet_id,
            properties: Properties::default(),
            filters: vec![filter.into()],
        }))
        .await?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Publishes and waits until the QoS flow completes (queued for QoS 0, PUBACK for QoS 1,
    /// PUBCOMP for QoS 2).
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        self.publish_pipelined(topic, payload, qos, retain)
            .await?
            .await
    }

    /// Sends a publish without waiting for its acknowledgment. Waits only for room: a slot of the
    /// in-flight window for QoS 1 and 2 (see [`Client::window`]), queue space for QoS 0. The
    /// returned token resolves when the flow completes.
    pub async fn publish_pipelined(
        &self,
        topic: impl Into<String>,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<PublishToken, ClientError> {
        let mut publish = Publish {
            qos,
            retain,
            topic: topic.into(),
            payload,
            ..Publish::default()
        };
        if qos == QoS::AtMostOnce {
            self.send(Packet::Publish(publish)).await?;
            return Ok(PublishToken { rx: None });
        }
        let permit = self
            .shared
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let (tx, rx) = oneshot::channel();
        publish.packet_id = Some(self.shared.register(Waiter::Publish {
            tx,
            _permit: permit,
        })?);
        self.send(Packet::Publish(publish)).await?;
        Ok(PublishToken { rx: Some(rx) })
    }

    /// Waits until no QoS 1 or 2 publish is in flight; fails if the connection closes first.
    pub async fn wait_in_flight(&self) -> Result<(), ClientError> {
        let _all = self
            .shared
            .window
            .acquire_many(self.shared.window_size)
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(())
    }

    /// The next message delivered by the broker; `None` once the connection is closed and every
    /// queued message has been taken. QoS 1 and 2 deliveries are acknowledged automatically.
    pub async fn recv(&mut self) -> Option<Publish> {
        self.incoming.recv().await
    }

    /// Sends DISCONNECT (normal disconnection) and waits for the connection to close.
    pub async fn disconnect(self) -> Result<(), ClientError> {
        let Client {
            commands, mut task, ..
        } = self;
        if commands
            .send(Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)))
            .await
            .is_err()
        {
            return Err(ClientError::Closed);
        }
        match tokio::time::timeout(DISCONNECT_WAIT, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                task.abort();
                Err(ClientError::Timeout)
            }
        }
    }
}

/// The CONNECT for `options`.
fn connect_packet(options: &ConnectOptions) -> Connect {
    let mut properties = Properties::default();
    if options.version.is_v5() {
        properties.session_expiry_interval = options.session_expiry;
        properties.receive_maximum = options.receive_maximum;
        properties.maximum_packet_size = options.max_packet_size;
    }
    Connect {
        protocol: options.version,
        clean_start: options.clean_start,
        keep_alive: options.keep_alive,
        properties,
        client_id: options.client_id.clone(),
        will: None,
        username: options.username.clone(),
        password: options.password.clone(),
    }
}

/// Reads until the CONNACK arrives.
async fn read_connack(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<ConnAck, ClientError> {
    loop {
        if let Some(packet) = tern_codec::decode(buf, version, max_packet_size)? {
            return match packet {
                Packet::ConnAck(ack) => Ok(ack),
                Packet::Disconnect(d) => Err(ClientError::Disconnected(d.reason)),
                other => Err(ClientError::Unexpected(other.packet_type())),
            };
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Closed);
        }
    }
}
