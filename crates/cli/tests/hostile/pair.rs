//! The well-behaved pair: two accounts that open a chat through the real `chapar` CLI before
//! the attack, then take turns sending while it runs, at a person's pace.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::{Server, User};

/// Messages the pair exchanges during the attack (besides the one that opens their chat).
pub const MESSAGES: usize = 50;

/// The pair sends at most one message per interval (people type): the attack then lasts
/// several rounds of every deadline.
pub const PAIR_INTERVAL: Duration = Duration::from_millis(300);

/// What the pair ends with: both users, every text sent in order (the first one before the
/// attack), and how long each `chapar send` took.
pub type Chatted = (User, User, Vec<String>, Vec<Duration>);

/// Registers the pair and opens their chat, says so on `ready`, waits for `go`, then sends
/// `MESSAGES` taking turns.
pub fn spawn(
    server: Arc<Server>,
    dir: PathBuf,
    ready_tx: oneshot::Sender<()>,
    go_rx: oneshot::Receiver<()>,
) -> JoinHandle<Chatted> {
    tokio::task::spawn_blocking(move || {
        let alice = server.register(&dir, "alice");
        let bob = server.register(&dir, "bob");
        alice.send("@bob", "before the attack");
        bob.sync();
        let _ = ready_tx.send(());
        go_rx.blocking_recv().unwrap();
        let mut latencies = Vec::new();
        let mut texts = vec!["before the attack".to_owned()];
        for i in 0..MESSAGES {
            let (from, to) = if i % 2 == 0 {
                (&alice, "@bob")
            } else {
                (&bob, "@alice")
            };
            let text = format!("message {i} from {}", from.name);
            let started = Instant::now();
            from.send(to, &text);
            latencies.push(started.elapsed());
            texts.push(text);
            std::thread::sleep((started + PAIR_INTERVAL).saturating_duration_since(Instant::now()));
        }
        (alice, bob, texts, latencies)
    })
}
