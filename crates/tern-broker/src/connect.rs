//! CONNECT and DISCONNECT: client identifiers, session takeover, clean start and session
//! expiry, keepalive negotiation, the CONNACK, and the resumption of a session's flows.

use std::sync::Arc;
use std::time::Instant;

use tern_codec::{
    ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode, Violation,
};

use crate::broker::{Broker, CloseHow, ConnId, Outlet, Timer};
use crate::session::{Session, SessionId, Will};

impl<O: Outlet> Broker<O> {
    /// Handles CONNECT on a connection that has none yet.
    pub(crate) fn handle_connect(&mut self, now: Instant, conn: ConnId, connect: Connect) {
        let v5 = connect.protocol.is_v5();
        let props = &connect.properties;
        let mut ack = Properties::default();
        {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            c.version = connect.protocol;
        }

        // Enhanced authentication: no method is configured, so any method is refused.
        if let Some(method) = &props.authentication_method {
            tracing::info!(
                conn = conn.0,
                method,
                "refused CONNECT: unsupported authentication method"
            );
            return self.refuse(
                now,
                conn,
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                ReasonCode::BAD_AUTHENTICATION_METHOD.name(),
            );
        }

        // [MQTT-3.2.2-13] A retained will cannot be accepted when retain is not available.
        if v5 && !self.config.retain_available && connect.will.as_ref().is_some_and(|w| w.retain) {
            return self.refuse(
                now,
                conn,
                ReasonCode::RETAIN_NOT_SUPPORTED,
                ReasonCode::RETAIN_NOT_SUPPORTED.name(),
            );
        }

        // Client identifier [MQTT-3.1.3-6..9].
        let mut client_id = connect.client_id.clone();
        if client_id.is_empty() {
            let allowed = match connect.protocol {
                ProtocolVersion::V5 => true,
                // [MQTT-3.1.3-7] 3.1.1 accepts an empty id only with Clean Session = 1.
                ProtocolVersion::V3_1_1 => connect.clean_start,
                // 3.1 requires 1 to 23 characters.
                ProtocolVersion::V3_1 => false,
            };
            if !allowed {
                return self.refuse(
                    now,
                    conn,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID.name(),
                );
            }
            client_id = self.assign_client_id();
            if v5 {
                ack.assigned_client_identifier = Some(client_id.clone());
            }
        }

        // Keep alive: v5 is told the server's value, v3 cannot be and is refused above the limit.
        let max_ka = self.config.max_keepalive;
        let mut keep_alive = connect.keep_alive;
        if max_ka < u16::MAX && (keep_alive > max_ka || keep_alive == 0) {
            if v5 {
                keep_alive = max_ka;
                ack.server_keep_alive = Some(max_ka);
            } else if keep_alive > max_ka {
                return self.refuse(
                    now,
                    conn,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID.name(),
                );
            }
        }

        // Session expiry: v5 from the property (0 when absent), v3 from Clean Session.
        let expiry = if v5 {
            let asked = props.session_expiry_interval.unwrap_or(0);
            let granted = asked.min(self.config.max_session_expiry);
            if granted != asked {
                ack.session_expiry_interval = Some(granted);
            }
            granted
        } else if connect.clean_start {
            0
        } else {
            self.config.persistent_session_expiry.unwrap_or(u32::MAX)
        };

        // Takeover [MQTT-3.1.4-3]: the existing connection of this client id is closed.
        let existing = self.by_client_id.get(client_id.as_str()).copied();
        if let Some(old_sid) = existing {
            self.take_over(now, old_sid, &connect);
        }

        // Clean start discards the old session [MQTT-3.1.2-4]; otherwise it is resumed [MQTT-3.1.2-5].
        let resumed = match existing {
            Some(old) if !connect.clean_start && self.sessions.contains_key(&old) => Some(old),
            Some(old) => {
                self.end_session(now, old);
                None
            }
            None => None,
        };
        let session_present = resumed.is_some();
        let sid = match resumed {
            Some(sid) => sid,
            None => {
                let sid = self.new_session_id();
                let client_id: Arc<str> = client_id.clone().into();
                self.by_client_id.insert(client_id.clone(), sid);
                self.sessions.insert(
                    sid,
                    Box::new(Session::new(sid, client_id, connect.protocol)),
                );
                sid
            }
        };

        // Link session and connection.
        let config = self.config.clone();
        let s = self
            .sessions
            .get_mut(&sid)
            .expect("session just found or made");
        self.global.link(s, Some(conn));
        s.version = connect.protocol;
        s.expiry_interval = expiry;
        s.expires_at = None;
        // A reconnect cancels a delayed will [MQTT-3.1.3-9]; the new CONNECT brings its own.
        s.will_at = None;
        s.will = connect.will.clone().map(|will| {
            Box::new(Will {
                delay: will.properties.will_delay_interval.unwrap_or(0),
                will,
            })
        });

        let c = self.conns.get_mut(&conn).expect("connection checked above");
        c.session = Some(sid);
        c.keep_alive = keep_alive;
        c.client_receive_max = props.receive_maximum.unwrap_or(u16::MAX);
        c.client_max_packet = props.maximum_packet_size.unwrap_or(u32::MAX);
        c.client_alias_max = props.topic_alias_maximum.unwrap_or(0);
        c.problem_info = props.request_problem_information.unwrap_or(1) == 1;
        if let Some(ka) = c.silence_limit() {
            self.timers.insert((now + ka, Timer::KeepAlive(conn)));
        }

        if v5 {
            if config.receive_maximum != u16::MAX {
                ack.receive_maximum = Some(config.receive_maximum);
            }
            ack.maximum_packet_size = Some(config.max_packet_size);
            if config.topic_alias_maximum > 0 {
                ack.topic_alias_maximum = Some(config.topic_alias_maximum);
            }
            if !config.retain_available {
                ack.retain_available = Some(0);
            }
            if !config.wildcard_subscriptions {
                ack.wildcard_subscription_available = Some(0);
            }
            if !config.subscription_identifiers {
                ack.subscription_identifier_available = Some(0);
            }
            if !config.shared_subscriptions {
                ack.shared_subscription_available = Some(0);
            }
            if props.request_response_information == Some(1)
                && !config.response_information_prefix.is_empty()
            {
                ack.response_information = Some(format!(
                    "{}{}",
                    config.response_information_prefix, client_id
                ));
            }
        }
        tracing::info!(
            client_id,
            version = connect.protocol as u8,
            clean_start = connect.clean_start,
            keep_alive,
            session_present,
            "client connected"
        );
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present,
                reason: ReasonCode::SUCCESS,
                properties: ack,
            }),
        );
        // [MQTT-4.4.0-1] Resend unacknowledged PUBLISH (DUP=1) and PUBREL, in order, then the queue.
        self.persist_session(sid);
        self.resume_outbound(now, sid);
    }

    /// Refuses a CONNECT with `reason` in a CONNACK and closes [MQTT-3.2.2-6].
    pub(crate) fn refuse(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: ReasonCode,
        why: &'static str,
    ) {
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason,
                properties: Default::default(),
            }),
        );
        self.close_conn(
            now,
            conn,
            CloseHow {
                disconnect: None,
                will: false,
                why,
            },
        );
    }

    /// Closes the connection that currently holds session `sid`, for a new CONNECT of the same
    /// client id. Its will is published unless the new connection resumes the session and the
    /// will has a delay (v5 3.1.4: the reconnect cancels it).
    fn take_over(&mut self, now: Instant, sid: SessionId, new: &Connect) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(old_conn) = s.conn else { return };
        let send_will = s
            .will
            .as_ref()
            .is_some_and(|w| new.clean_start || w.delay == 0);
        tracing::info!(client_id = %s.client_id, "session taken over by a new connection");
        if send_will {
            // Not delayed: the session either ends or is resumed right away.
            self.publish_will(now, sid);
        } else {
            s.will = None;
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            self.global.link(s, None);
        }
        if let Some(c) = self.conns.get_mut(&old_conn) {
            c.session = None;
            if c.version.is_v5() {
                c.outlet.send(
                    Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)).into(),
                );
            }
            c.outlet.close();
        }
        self.conns.remove(&old_conn);
    }

    /// Handles DISCONNECT from the client.
    pub(crate) fn handle_disconnect(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        d: Disconnect,
    ) {
        if let Some(new_expiry) = d.properties.session_expiry_interval {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if s.expiry_interval == 0 && new_expiry != 0 {
                // [MQTT-3.14.2-2] Cannot turn a 0 expiry into a non-zero one at DISCONNECT.
                return self.violation(
                    now,
                    conn,
                    Violation::protocol(
                        "MQTT-3.14.2-2",
                        "DISCONNECT sets Session Expiry Interval after CONNECT had 0",
                    ),
                );
            }
            s.expiry_interval = new_expiry.min(self.config.max_session_expiry);
        }
        // [MQTT-3.14.4-3] A normal DISCONNECT discards the will; 0x04 asks for it to be sent.
        let will = d.reason == ReasonCode::DISCONNECT_WITH_WILL;
        self.close_conn(
            now,
            conn,
            CloseHow {
                disconnect: None,
                will,
                why: "client sent DISCONNECT",
            },
        );
    }
}
