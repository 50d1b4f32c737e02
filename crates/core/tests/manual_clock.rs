//! The engine keeps time only by the clock it is given: a request's deadline is set by it,
//! and only moving it makes the deadline pass.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use chapar_core::engine::REQUEST_TIMEOUT_MS;
use chapar_core::{CoreError, Engine, Env, ManualClock, Profile};
use chapar_wire::v1::{self, client_frame::Request};

const START_MS: u64 = 1_000_000;

#[test]
fn a_request_times_out_when_the_manual_clock_says_so_and_not_before() {
    let clock = ManualClock::new(START_MS);
    let mut engine = Engine::new(
        Profile::in_memory().unwrap(),
        Env::new(clock.clone(), [7; 32]),
    )
    .unwrap();
    engine.on_connected();
    let job = engine.register("test://server", "alice", "phone", "");
    let frame = engine.poll_transmit().expect("the handshake goes out");
    let frame: v1::ClientFrame = chapar_wire::decode(&frame).unwrap();
    assert!(matches!(frame.request, Some(Request::Hello(_))));
    assert_eq!(engine.next_timeout(), Some(START_MS + REQUEST_TIMEOUT_MS));

    // However much real time passes, nothing is due until the clock moves.
    std::thread::sleep(std::time::Duration::from_millis(20));
    engine.handle_timeout();
    assert!(engine.take_result(&job).is_none());
    clock.advance(REQUEST_TIMEOUT_MS - 1);
    engine.handle_timeout();
    assert!(engine.take_result(&job).is_none(), "one millisecond early");

    clock.advance(1);
    engine.handle_timeout();
    match engine.take_result(&job) {
        Some(Err(CoreError::Connection(why))) => assert!(why.contains("in time"), "{why}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(engine.next_timeout(), None, "nothing waits any more");
}

#[test]
fn without_a_connection_a_job_fails_at_once_instead_of_waiting() {
    let clock = ManualClock::new(START_MS);
    let mut engine = Engine::new(Profile::in_memory().unwrap(), Env::new(clock, [7; 32])).unwrap();
    let job = engine.register("test://server", "alice", "phone", "");
    assert!(engine.poll_transmit().is_none());
    assert!(matches!(
        engine.take_result(&job),
        Some(Err(CoreError::Connection(_)))
    ));
}
