//! Acknowledged means durable: SIGKILL the server during a burst of sends; after a restart on
//! the same data directory, every acknowledged message is delivered exactly once, in order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::Server;

#[test]
fn acknowledged_messages_survive_kill_9() {
    burst_survives_kill_9(&[]);
}

/// Sends a burst, kills the server (started with `options`) mid-burst, restarts it and checks
/// that every acknowledged message arrives once, in order.
pub fn burst_survives_kill_9(options: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), "127.0.0.1:0", options);
    let alice = Arc::new(server.register(dir.path(), "alice"));
    let bob = server.register(dir.path(), "bob");
    alice.send("@bob", "warm-up");

    // Send in the background; record every text whose send exited 0 (was acknowledged).
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (alice, acked) = (alice.clone(), acked.clone());
        std::thread::spawn(move || {
            for i in 0..2_000 {
                let text = format!("burst {i:04}");
                if !alice.run(&["send", "@bob", &text]).status.success() {
                    break;
                }
                acked.lock().unwrap().push(text);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 15 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    sender.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 15,
        "only {} sends were acknowledged before the kill",
        acked.len()
    );

    // Restart on the same address and data: clients keep their server URL.
    let addr = server.addr.clone();
    let restarted = Server::start_with(dir.path(), &addr, options);
    assert_eq!(restarted.url, server.url);
    bob.sync();
    let texts = bob.texts("@alice");
    let burst: Vec<&String> = texts.iter().filter(|t| t.starts_with("burst")).collect();
    // Every acknowledged message is there, in order, once. (The one in flight at the kill may
    // or may not have been stored; it was never acknowledged, so either is correct.)
    assert!(
        burst.len() >= acked.len(),
        "lost messages: acked {} delivered {}",
        acked.len(),
        burst.len()
    );
    for (i, text) in acked.iter().enumerate() {
        assert_eq!(
            burst[i], text,
            "order or duplicate problem at {i}: {burst:?}"
        );
    }
    assert!(burst.len() <= acked.len() + 1, "duplicates: {burst:?}");
}
