//! Hostile clients against the real `chapar server` binary (issue 10, "Server hardening"):
//! thousands of half-open HTTP connections, WebSockets that never log in, oversized and garbage
//! frames, and logged-in clients that ask for large log pages and never read, while a
//! well-behaved pair chats through the real `chapar` CLI. It checks that every attack
//! connection is closed within its deadline plus a generous margin, that the pair loses
//! nothing, that the server's RSS stays under a bound, and that `/metrics` counts the limits
//! met; it prints the figures `docs/performance.md` quotes.
//!
//! The attack speaks raw TCP and hand-made WebSocket frames (a client library would refuse to
//! send what an attacker sends). It comes from 127.0.0.2 and up, so the per-address cap stays
//! at its default, and one address is pushed past that cap on purpose. Each attack slot opens
//! a connection, waits for the server to close it, and opens the next, until the pair is done:
//! the attack is at full strength for as long as the pair chats.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

#[path = "../e2e/harness.rs"]
mod harness;

mod attack;
mod connections;
mod kind;
mod measure;
mod pair;
mod setup;
mod spam;
mod verdict;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;

use attack::{
    ATTACK_MAX, Attack, CAP_EXTRA, FRAME_SLOTS_PER_KIND, HALF_OPEN_SLOTS, SILENT_SLOTS,
    SLOWLORIS_SLOTS, attack_source, fill_the_cap, slot,
};
use kind::{FRAME_KINDS, Kind};
use measure::{limit_hits, listen_overflows, memory, metric, metrics_text};
use setup::{CONNECTIONS_PER_ADDRESS_MAX, DESCRIPTORS_SPARE, raise_open_file_limit, server_pid};
use spam::{SPAMMERS, register_spammer, spam_slot};
use verdict::{RSS_BYTES_MAX, mib, ms, quantile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_cut_off_in_time_while_a_pair_keeps_chatting() {
    let test_started = Instant::now();
    // Room for every attack connection at once, in this process (the server raises its own).
    let descriptors = raise_open_file_limit();
    let wanted = HALF_OPEN_SLOTS
        + SLOWLORIS_SLOTS
        + SILENT_SLOTS
        + FRAME_KINDS.len() * FRAME_SLOTS_PER_KIND
        + CONNECTIONS_PER_ADDRESS_MAX
        + CAP_EXTRA
        + SPAMMERS;
    let scale = (descriptors.saturating_sub(DESCRIPTORS_SPARE) as f64 / wanted as f64).min(1.0);
    let scaled = |n: usize| ((n as f64 * scale) as usize).max(1);
    if scale < 1.0 {
        println!("hostile: open-file limit {descriptors}: attack scaled to {scale:.2}");
    }
    // Loopback answers on all of 127/8 on Linux; say so plainly if this machine does not.
    TcpSocket::new_v4()
        .unwrap()
        .bind(SocketAddr::from((attack_source(0), 0)))
        .expect("binding 127.0.0.2 (the attack spreads over 127.0.0.2 to 127.0.0.253)");

    let dir = tempfile::tempdir().unwrap();
    let server = setup::start_server(dir.path());
    let pid = server_pid(&server.data);
    let server_addr: SocketAddr = server.addr.parse().unwrap();
    let metrics_addr = server.metrics_addr.clone();

    // The sampler: the server's RSS every 100 ms, its open sockets with every other sample.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = measure::spawn_sampler(pid, metrics_addr.clone(), sampling.clone());

    // How late this process's own timers fire: a close seen late may be the test's lateness.
    let lag_max_micros = Arc::new(AtomicUsize::new(0));
    let canary = measure::spawn_canary(sampling.clone(), lag_max_micros.clone());

    // The pair: two accounts and their chat, through the real CLI, before the attack; then
    // `MESSAGES` sends, taking turns, once the attack is in place.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let mut pair = pair::spawn(server.clone(), dir.path().to_owned(), ready_tx, go_rx);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut spammers = Vec::new();
    for index in 0..SPAMMERS {
        spammers.push(register_spammer(server_addr, index).await);
    }
    if ready_rx.await.is_err() {
        // The pair failed before the attack: its panic says why.
        if let Err(e) = pair.await {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("the pair stopped before the attack");
    }

    let attack = Arc::new(Attack::new(server_addr));
    let attack_started = Instant::now();
    let overflows_before = listen_overflows();
    let (mut tasks, cap_answered) = fill_the_cap(&attack).await;
    let mut slots = 0;
    for (kind, count) in [
        (Kind::HalfOpen, scaled(HALF_OPEN_SLOTS)),
        (Kind::Slowloris, scaled(SLOWLORIS_SLOTS)),
        (Kind::Silent, scaled(SILENT_SLOTS)),
    ]
    .into_iter()
    .chain(FRAME_KINDS.map(|kind| (kind, scaled(FRAME_SLOTS_PER_KIND))))
    {
        for _ in 0..count {
            tasks.push(tokio::spawn(slot(attack.clone(), slots, kind, seed)));
            slots += 1;
        }
    }
    let spam_tasks: Vec<_> = spammers
        .into_iter()
        .map(|spammer| tokio::spawn(spam_slot(attack.clone(), spammer)))
        .collect();

    // The pair starts once nearly every slot holds a connection.
    let in_place = Instant::now() + Duration::from_secs(10);
    while attack.open.load(Ordering::Relaxed) < slots * 9 / 10 && Instant::now() < in_place {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    go_tx.send(()).unwrap();
    let attack_end = tokio::time::Instant::from_std(attack_started + ATTACK_MAX);
    let chatted = tokio::select! {
        chatted = &mut pair => Some(chatted),
        () = tokio::time::sleep_until(attack_end) => None,
    };
    attack.stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let overflows = listen_overflows().saturating_sub(overflows_before);
    let pair_outlasted_attack = chatted.is_none();
    let chatted = match chatted {
        Some(chatted) => chatted,
        None => pair.await,
    };
    let (alice, bob, texts, mut latencies) =
        chatted.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await.unwrap());
    }
    let mut spam_requests = 0;
    for task in spam_tasks {
        let (spam_records, requests) = task.await.unwrap();
        records.extend(spam_records);
        spam_requests += requests;
    }
    let all_closed_after = records
        .iter()
        .map(|r| r.ended.saturating_duration_since(stopped))
        .max()
        .unwrap_or_default();

    // Every socket the server counted is given back.
    let settled = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics_text(&metrics_addr).await;
        let open = (
            metric(&text, "chapar_sockets_open"),
            metric(&text, "chapar_connections_open"),
        );
        if open == (0, 0) || Instant::now() > settled {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    canary.await.unwrap();
    let (rss_bytes_after, rss_bytes_hwm) = memory(pid).expect("the server is still running");
    let rss_bytes_peak = samples.rss_bytes_peak.max(rss_bytes_hwm);

    // Nothing the pair said was lost, on either side, in order.
    let (alice_texts, bob_texts) = tokio::task::spawn_blocking(move || {
        alice.sync();
        bob.sync();
        (alice.texts("@bob"), bob.texts("@alice"))
    })
    .await
    .unwrap();

    // Judge every attack connection against its deadline, and `/metrics` against what it met.
    let (mut violations, mut tallies) =
        verdict::connections(&records, attack_started, overflows, cap_answered);
    verdict::metrics(&text, &tallies, &mut violations);
    if rss_bytes_peak > RSS_BYTES_MAX {
        violations.push(format!(
            "server RSS peaked at {:.1} MiB, over {:.0} MiB",
            mib(rss_bytes_peak),
            mib(RSS_BYTES_MAX)
        ));
    }
    if alice_texts != texts || bob_texts != texts {
        violations.push(format!(
            "the pair lost messages: sent {texts:?}\nalice has {alice_texts:?}\nbob has {bob_texts:?}"
        ));
    }

    // The figures for docs/performance.md.
    latencies.sort();
    let attempted = attack.attempted.load(Ordering::Relaxed);
    let attack_secs = (stopped - attack_started).as_secs_f64();
    for (kind, tally) in &mut tallies {
        tally.closed.sort();
        tally.refused.sort();
        let mut line = format!("hostile:   {kind:?}:");
        if !tally.closed.is_empty() {
            line += &format!(
                " {} closed after {}..{} ms (p50 {} ms; the slowest began {} ms into the attack)",
                tally.closed.len(),
                ms(tally.closed[0]),
                ms(quantile(&tally.closed, 1.0)),
                ms(quantile(&tally.closed, 0.5)),
                ms(tally.slowest_began),
            );
        }
        if !tally.refused.is_empty() {
            line += &format!(
                " {} refused unread after {}..{} ms",
                tally.refused.len(),
                ms(tally.refused[0]),
                ms(quantile(&tally.refused, 1.0)),
            );
        }
        if tally.unfinished > 0 {
            line += &format!(" {} failed or never closed", tally.unfinished);
        }
        println!("{line}");
    }
    println!(
        "hostile:   /metrics limit hits: {}; kernel listen-queue overflows during the attack: \
         {overflows}; this test's timers ran up to {} ms late",
        [
            "connections_per_address_max",
            "login_timeout",
            "write_timeout",
            "socket_write_timeout"
        ]
        .map(|limit| format!("{limit} {}", limit_hits(&text, limit)))
        .join(", "),
        lag_max_micros.load(Ordering::Relaxed) / 1000,
    );
    println!(
        "hostile: {attempted} attack connections in {attack_secs:.1} s ({slots} slots, \
         {SPAMMERS} FetchLog spammers writing {spam_requests} requests, \
         {CONNECTIONS_PER_ADDRESS_MAX} + {CAP_EXTRA} from one address), {} held at peak \
         ({} sockets open on the server); server RSS {:.1} MiB before, peak {:.1} MiB, \
         {:.1} MiB after (bound {:.0} MiB); pair delivered {}/{} with `chapar send` p50 {} ms, \
         p99 {} ms, max {} ms{}; all attack connections closed {:.1} s after the attack \
         stopped; test took {:.1} s (seed {seed})",
        attack.open_peak.load(Ordering::Relaxed),
        samples.sockets_open_peak,
        mib(samples.rss_bytes_first),
        mib(rss_bytes_peak),
        mib(rss_bytes_after),
        mib(RSS_BYTES_MAX),
        alice_texts.len().min(bob_texts.len()),
        texts.len(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(quantile(&latencies, 1.0)),
        if pair_outlasted_attack {
            " (it outlasted the attack)"
        } else {
            ""
        },
        all_closed_after.as_secs_f64(),
        test_started.elapsed().as_secs_f64(),
    );
    let log = server.log_text();
    let log_lines: Vec<&str> = log.lines().collect();
    assert!(
        violations.is_empty(),
        "{} violations, the first ones:\n{}\n--- server log tail\n{}",
        violations.len(),
        violations[..violations.len().min(20)].join("\n"),
        log_lines[log_lines.len().saturating_sub(30)..].join("\n")
    );
}
