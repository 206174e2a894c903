//! Rule tests of the broker core on a simulated clock, one file per area. Each test names the
//! behaviour it proves and the spec rules it covers (`[MQTT-x.y.z-n]`), which
//! `docs/conformance.md` cites.

mod harness;

mod connect;
mod durable;
mod flows;
mod limits;
mod publish;
mod shards;
mod subscribe;
mod subscriptions;
mod v5;
mod will;
