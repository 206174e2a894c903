//! The result of a bench run: figures and parameters, as a table or as JSON.

use std::fmt;

use serde::Serialize;

use super::{BenchConfig, Latency};

/// Everything a run measured, with the parameters it ran with.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The parameters.
    pub parameters: BenchConfig,
    /// Connection set-up.
    pub connections: ConnStats,
    /// Message figures (absent for `conn`).
    pub messages: Option<MessageStats>,
    /// Wall time of the whole run, seconds.
    pub elapsed_secs: f64,
}

/// Connection set-up figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnStats {
    /// Connections attempted.
    pub attempted: usize,
    /// Connections that got a successful CONNACK.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Seconds from the first attempt to the last CONNACK.
    pub connect_secs: f64,
    /// Connections opened per second.
    pub connect_rate: f64,
    /// Time from TCP connect to CONNACK, per connection, microseconds.
    pub connect_latency_us: Latency,
    /// Connections still open at the end of the hold (or of the run).
    pub open_at_end: usize,
}

/// Message figures; only messages sent after the warm-up count.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageStats {
    /// Messages published after the warm-up.
    pub sent: u64,
    /// Messages published in all, warm-up included.
    pub sent_total: u64,
    /// `sent` per measured second, all publishers together.
    pub send_rate: f64,
    /// Deliveries expected by the subscribers (each message times its receivers).
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub received: u64,
    /// `received` per measured second, all subscribers together.
    pub recv_rate: f64,
    /// Expected deliveries that never arrived: sequence gaps for QoS 1 and 2, `expected` minus
    /// distinct deliveries for QoS 0.
    pub lost: u64,
    /// Deliveries of a message already received.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message of the same publisher.
    pub out_of_order: u64,
    /// Publish calls that failed (connection closed or publish rejected).
    pub publish_errors: u64,
    /// Publisher to subscriber latency, microseconds.
    pub latency_us: Latency,
}

impl BenchReport {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn latency_row(f: &mut fmt::Formatter<'_>, name: &str, l: &Latency) -> fmt::Result {
    writeln!(
        f,
        "  {name:<20} p50 {} us   p90 {} us   p99 {} us   max {} us   (mean {:.1} us, {} samples)",
        l.p50, l.p90, l.p99, l.max, l.mean, l.count
    )
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parameters;
        writeln!(
            f,
            "tern bench {} -> {} (MQTT {}, QoS {}, {} B payloads)",
            p.scenario.name(),
            p.addr,
            match p.mqtt {
                3 => "3.1",
                4 => "3.1.1",
                _ => "5",
            },
            p.qos,
            p.size
        )?;
        let (publishers, subscribers) = p.roles();
        match self.messages {
            None => writeln!(
                f,
                "  {:<20} {}   hold {} s",
                "connections", p.connections, p.duration_secs
            )?,
            Some(_) => writeln!(
                f,
                "  {:<20} {}, {}, rate {}, warm-up {} s, measured {} s",
                "clients",
                plural(publishers, "publisher"),
                plural(subscribers, "subscriber"),
                if p.rate == 0 {
                    "max".to_string()
                } else {
                    format!("{}/s per publisher", p.rate)
                },
                p.warmup_secs,
                p.duration_secs
            )?,
        }
        let c = &self.connections;
        writeln!(
            f,
            "  {:<20} {} opened, {} failed in {:.3} s ({:.0} conn/s), {} open at end",
            "connect", c.opened, c.failed, c.connect_secs, c.connect_rate, c.open_at_end
        )?;
        if let Some(e) = &c.first_error {
            writeln!(f, "  {:<20} {e}", "first failure")?;
        }
        latency_row(f, "connect latency", &c.connect_latency_us)?;
        if let Some(m) = &self.messages {
            writeln!(
                f,
                "  {:<20} {} ({:.0} msg/s), {} with warm-up",
                "sent", m.sent, m.send_rate, m.sent_total
            )?;
            writeln!(
                f,
                "  {:<20} {} of {} expected ({:.0} msg/s)",
                "received", m.received, m.expected, m.recv_rate
            )?;
            writeln!(
                f,
                "  {:<20} lost {}   duplicated {}   out of order {}   publish errors {}",
                "integrity", m.lost, m.duplicated, m.out_of_order, m.publish_errors
            )?;
            latency_row(f, "latency", &m.latency_us)?;
        }
        writeln!(f, "  {:<20} {:.3} s", "elapsed", self.elapsed_secs)
    }
}
