//! Server operations: health, metrics, config file, clean shutdown on SIGTERM.

use crate::harness::{BIN, Server, http_get};

#[test]
fn health_and_metrics_endpoints_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (status, body) = http_get(&server.addr, "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");

    let alice = server.register(dir.path(), "alice");
    server.register(dir.path(), "bob");
    alice.send("@bob", "count me");
    let (status, _) = http_get(&server.addr, "/metrics");
    assert!(
        status.contains("404"),
        "traffic figures are not on the public port: {status}"
    );
    let (status, metrics) = http_get(&server.metrics_addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    for name in [
        "chapar_connections_open",
        "chapar_connections_total",
        "chapar_messages_total",
        "chapar_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    let messages: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chapar_messages_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("messages counter");
    assert!(
        messages >= 2,
        "a text and a group-meta message were stored: {messages}"
    );
    assert!(server.terminate(), "SIGTERM must end the server cleanly");
}

#[test]
fn config_file_sets_listen_address_and_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-config");
    let config = dir.path().join("chapar.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ndata = {:?}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["server", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    assert!(
        data.join("chapar.db").exists(),
        "the config's data directory is used"
    );
    let _ = child.kill();
    let _ = child.wait();

    std::fs::write(&config, "lisen = \"typo\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["server", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
