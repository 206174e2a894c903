//! Config file parsing: defaults, overrides, located errors and the reference config.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use tern::Config;
use tern::config::{ConfigError, reference_config};

fn parse_err(text: &str) -> String {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_gives_defaults() {
    let config = Config::from_toml_str("").expect("empty config parses");
    assert_eq!(config, Config::default());
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(
        config.listeners[0].bind,
        "127.0.0.1:1883".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.server.connect_timeout_secs, 10);
    assert_eq!(config.server.max_connections, 0);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.broker, tern_broker::BrokerConfig::default());
}

#[test]
fn overrides_keep_other_defaults() {
    let config = Config::from_toml_str(
        r#"
[[listener]]
bind = "0.0.0.0:1883"

[[listener]]
bind = "[::1]:0"

[server]
max_connections = 100

[broker]
max_packet_size = 4096
persistent_session_expiry = 3600
"#,
    )
    .expect("config parses");
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.bind.to_string())
        .collect();
    assert_eq!(binds, ["0.0.0.0:1883", "[::1]:0"]);
    assert_eq!(config.server.max_connections, 100);
    assert_eq!(config.server.connect_timeout_secs, 10);
    assert_eq!(config.broker.max_packet_size, 4096);
    assert_eq!(config.broker.persistent_session_expiry, Some(3600));
    assert_eq!(config.broker.receive_maximum, 1024);
    assert_eq!(config.log, Default::default());
}

#[test]
fn unknown_key_names_key_table_and_line() {
    let msg = parse_err("[server]\nmax_connections = 3\n\n[broker]\nmax_packet_sise = 10\n");
    assert!(
        msg.starts_with("<config>:5:1: unknown field `max_packet_sise` in [broker]"),
        "{msg}"
    );
    assert!(
        msg.contains("max_packet_size"),
        "lists the expected keys: {msg}"
    );
}

#[test]
fn unknown_table_is_reported() {
    let msg = parse_err("[brokr]\nmax_packet_size = 10\n");
    assert!(msg.starts_with("<config>:1:"), "{msg}");
    assert!(msg.contains("brokr"), "{msg}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let msg = parse_err("# comment\n[server]\nconnect_timeout_secs = \"ten\"\n");
    assert!(
        msg.starts_with("<config>:3:24: `server.connect_timeout_secs`: "),
        "{msg}"
    );
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn bad_listener_address_names_key_and_line() {
    let msg = parse_err("[[listener]]\nbind = \"localhost\"\n");
    assert!(msg.starts_with("<config>:2:8: `listener.bind`: "), "{msg}");
}

#[test]
fn core_shards_is_read_and_kept_within_range() {
    assert_eq!(Config::default().server.core_shards, 1);
    let config = Config::from_toml_str("[server]\ncore_shards = 4\n").expect("parses");
    assert_eq!(config.server.core_shards, 4);
    for bad in ["0", "33"] {
        let msg = parse_err(&format!("[server]\n\ncore_shards = {bad}\n"));
        assert!(
            msg.starts_with("<config>:3:15: `server.core_shards`: "),
            "{msg}"
        );
        assert!(msg.contains("expected 1 to 32"), "{msg}");
    }
}

#[test]
fn syntax_error_has_line() {
    let msg = parse_err("[server]\nmax_connections = = 3\n");
    assert!(msg.starts_with("<config>:2:"), "{msg}");
}

#[test]
fn no_listeners_is_refused() {
    let err = Config::from_toml_str("listener = []\n").expect_err("empty listener list");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
}

#[test]
fn load_reports_the_file_name() {
    let dir = std::env::temp_dir().join(format!("tern-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, "[log]\nlevel = \"debug\"\n\n[server]\nbogus = 1\n").unwrap();
    let msg = Config::load(&path).expect_err("bogus key").to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:5:1: unknown field `bogus` in [server]",
            path.display()
        )),
        "{msg}"
    );

    std::fs::write(&path, "[log]\nlevel = \"debug\"\n").unwrap();
    assert_eq!(Config::load(&path).unwrap().log.level, "debug");

    let missing = Config::load(dir.join("missing.toml")).expect_err("missing file");
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reference_config_round_trips_to_defaults() {
    let text = reference_config();
    assert_eq!(
        Config::from_toml_str(&text).expect("reference config parses"),
        Config::default()
    );
}

/// Every key the config has appears in the reference config, documented by a comment line
/// just above it; keys without a TOML default (unset options) appear commented out.
#[test]
fn reference_config_documents_every_key() {
    let text = reference_config();
    let serialized = toml::to_string(&Config::default()).expect("default serializes");
    let value: toml::Table = toml::from_str(&serialized).unwrap();
    let mut keys = BTreeSet::new();
    for (name, item) in &value {
        match item {
            toml::Value::Table(t) => keys.extend(t.keys().map(|k| format!("{name}.{k}"))),
            toml::Value::Array(a) => {
                for t in a.iter().filter_map(toml::Value::as_table) {
                    keys.extend(t.keys().map(|k| format!("{name}.{k}")));
                }
            }
            _ => {
                keys.insert(name.clone());
            }
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    for key in keys
        .iter()
        .chain(&["broker.persistent_session_expiry".to_owned()])
    {
        let field = key.rsplit('.').next().unwrap();
        let at = lines
            .iter()
            .position(|l| {
                let l = l.trim_start_matches("# ");
                l.starts_with(&format!("{field} = "))
            })
            .unwrap_or_else(|| panic!("`{key}` missing from the reference config"));
        assert!(
            at > 0 && lines[at - 1].starts_with("# "),
            "`{key}` has no doc comment"
        );
    }
}
