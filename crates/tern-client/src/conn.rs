//! The connection task: one per client, reading and writing the same socket.
//!
//! The reader decodes packets, completes the caller's requests and queues the acknowledgments
//! the client owes the broker; the writer encodes everything queued into one buffer and writes
//! it with one call, and sends PINGREQ when nothing was written for the keep alive.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tern_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::{Shared, Waiter};
use crate::{ClientError, MessageHandler};

/// A batch stops growing at this many bytes and is written.
const MAX_BATCH: usize = 64 * 1024;

/// How much room the read buffer keeps free before each read.
const READ_CHUNK: usize = 4096;

/// Everything the connection task owns.
pub(crate) struct Params {
    /// The connected socket, CONNECT/CONNACK done.
    pub stream: TcpStream,
    /// Bytes read after the CONNACK.
    pub buf: BytesMut,
    /// Protocol level.
    pub version: ProtocolVersion,
    /// Largest packet accepted from the broker.
    pub max_packet_size: u32,
    /// Seconds of idleness before a PINGREQ; 0 for none.
    pub keep_alive: u16,
    /// State shared with the handle.
    pub shared: Arc<Shared>,
    /// Packets from the handle.
    pub commands: mpsc::Receiver<Packet>,
    /// Messages for the handle.
    pub incoming: mpsc::Sender<Publish>,
    /// Takes the messages instead of `incoming`, if set.
    pub on_message: Option<MessageHandler>,
}

/// Runs the connection until the socket closes, the broker disconnects, or the handle sends
/// DISCONNECT or is dropped. Every pending request fails with `Closed` afterwards.
pub(crate) async fn run(params: Params) -> Result<(), ClientError> {
    let Params {
        mut stream,
        buf,
        version,
        max_packet_size,
        keep_alive,
        shared,
        commands,
        incoming,
        on_message,
    } = params;
    let (rd, wr) = stream.split();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let reader = Reader {
        rd,
        buf,
        version,
        max_packet_size,
        shared: &shared,
        acks: acks_tx,
        incoming,
        on_message,
        awaiting_rel: HashSet::new(),
    };
    let result = tokio::select! {
        r = reader.run() => r,
        w = write_loop(wr, version, keep_alive, commands, acks_rx) => w,
    };
    shared.close();
    result
}

/// The reading half and what it needs to answer the broker.
struct Reader<'a> {
    rd: ReadHalf<'a>,
    buf: BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
    shared: &'a Shared,
    acks: mpsc::UnboundedSender<Packet>,
    incoming: mpsc::Sender<Publish>,
    on_message: Option<MessageHandler>,
    /// QoS 2 deliveries received and not yet released: a repeat is not delivered again.
    awaiting_rel: HashSet<u16>,
}

impl Reader<'_> {
    async fn run(mut self) -> Result<(), ClientError> {
        loop {
            while let Some(packet) =
                tern_codec::decode(&mut self.buf, self.version, self.max_packet_size)?
            {
                self.handle(packet).await?;
            }
            self.buf.reserve(READ_CHUNK);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Queues `packet` for the writer; the writer lives as long as the reader.
    fn ack(&self, packet: Packet) {
        let _ = self.acks.send(packet);
    }

    /// Hands `publish` to the caller's handler or queue; dropped if the caller no longer
    /// listens.
    async fn deliver(&self, publish: Publish) {
        match &self.on_message {
            Some(handler) => handler.call(publish),
            None => {
                let _ = self.incoming.send(publish).await;
            }
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), ClientError> {
        match packet {
            Packet::Publish(p) => match (p.qos, p.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => {
                    self.deliver(p).await;
                    self.ack(Packet::PubAck(Ack::new(id)));
                }
                (QoS::ExactlyOnce, Some(id)) => {
                    if self.awaiting_rel.insert(id.get()) {
                        self.deliver(p).await;
                    }
                    self.ack(Packet::PubRec(Ack::new(id)));
                }
                _ => self.deliver(p).await,
            },
            Packet::PubRel(a) => {
                self.awaiting_rel.remove(&a.packet_id.get());
                self.ack(Packet::PubComp(Ack::new(a.packet_id)));
            }
            Packet::PubAck(a) | Packet::PubComp(a) => {
                self.shared.complete_publish(a.packet_id, a.reason);
            }
            Packet::PubRec(a) => {
                if a.reason.is_error() {
                    self.shared.complete_publish(a.packet_id, a.reason);
                } else {
                    self.ack(Packet::PubRel(Ack::new(a.packet_id)));
                }
            }
            Packet::SubAck(s) => {
                if let Some(Waiter::Subscribe(tx)) = self.shared.take(s.packet_id) {
                    let _ = tx.send(s);
                }
            }
            Packet::UnsubAck(u) => {
                if let Some(Waiter::Unsubscribe(tx)) = self.shared.take(u.packet_id) {
                    let _ = tx.send(u);
                }
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.reason)),
            other => return Err(ClientError::Unexpected(other.packet_type())),
        }
        Ok(())
    }
}

/// Writes queued packets, acknowledgments first, one write per batch; pings when idle.
async fn write_loop(
    mut wr: WriteHalf<'_>,
    version: ProtocolVersion,
    keep_alive: u16,
    mut commands: mpsc::Receiver<Packet>,
    mut acks: mpsc::UnboundedReceiver<Packet>,
) -> Result<(), ClientError> {
    let idle = (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive)));
    // Without a keep alive the timer is never polled, so its deadline does not matter.
    let ping = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(ping);
    let mut out = BytesMut::new();
    loop {
        let mut last = false;
        tokio::select! {
            biased;
            Some(p) = acks.recv() => p.encode(version, &mut out),
            p = commands.recv() => match p {
                Some(p) => {
                    last = matches!(p, Packet::Disconnect(_));
                    p.encode(version, &mut out);
                }
                // The handle is gone: close without DISCONNECT.
                None => return Ok(()),
            },
            () = &mut ping, if idle.is_some() => Packet::PingReq.encode(version, &mut out),
        }
        while !last && out.len() < MAX_BATCH {
            if let Ok(p) = acks.try_recv() {
                p.encode(version, &mut out);
            } else if let Ok(p) = commands.try_recv() {
                last = matches!(p, Packet::Disconnect(_));
                p.encode(version, &mut out);
            } else {
                break;
            }
        }
        wr.write_all(&out).await?;
        out.clear();
        if last {
            let _ = wr.shutdown().await;
            return Ok(());
        }
        if let Some(idle) = idle {
            ping.as_mut().reset(Instant::now() + idle);
        }
    }
}
