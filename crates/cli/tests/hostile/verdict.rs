//! Judging the attack: every connection against its kind's deadline, the per-address cap, and
//! `/metrics` against what was seen; and the statistics the summary prints (`Tally`,
//! quantiles, units).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::attack::CAP_EXTRA;
use crate::kind::{Kind, NEVER_CLOSED, Outcome, Record};
use crate::measure::{limit_hits, metric};

/// The bound the server's resident memory must stay under during the attack.
pub const RSS_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// What became of the connections of one kind.
#[derive(Default)]
pub struct Tally {
    pub closed: Vec<Duration>,
    pub refused: Vec<Duration>,
    pub unfinished: usize,
    /// The longest one was held, and when it began (after the attack's start).
    slowest: Duration,
    pub slowest_began: Duration,
}

/// Judges every attack connection against its deadline, and the per-address cap by the extras
/// it refused (`cap_answered`: when the last was answered); `overflows` explains connections
/// never closed. Returns the violations and what became of each kind.
pub fn connections(
    records: &[Record],
    attack_started: Instant,
    overflows: u64,
    cap_answered: Instant,
) -> (Vec<String>, BTreeMap<Kind, Tally>) {
    let mut violations = Vec::new();
    let mut tallies: BTreeMap<Kind, Tally> = BTreeMap::new();
    for record in records {
        let tally = tallies.entry(record.kind).or_default();
        let (least, most) = record.kind.bounds();
        match &record.outcome {
            Outcome::Closed(after) => {
                if *after >= tally.slowest {
                    tally.slowest = *after;
                    tally.slowest_began =
                        (record.ended - *after).saturating_duration_since(attack_started);
                }
                tally.closed.push(*after);
                if *after < least || *after > most {
                    violations.push(format!(
                        "{:?} closed after {} ms, not within {}..{} ms",
                        record.kind,
                        ms(*after),
                        ms(least),
                        ms(most)
                    ));
                }
            }
            Outcome::Refused(after) => {
                tally.refused.push(*after);
                if record.kind != Kind::CapExtra {
                    violations.push(format!(
                        "{:?} refused after {} ms (no cap should be met)",
                        record.kind,
                        ms(*after)
                    ));
                }
            }
            Outcome::NeverClosed => {
                tally.unfinished += 1;
                violations.push(format!(
                    "{:?} still open {} s after it began (the kernel dropped {overflows} \
                     handshakes on full listen queues meanwhile: a connection the server never \
                     accepted, it cannot close)",
                    record.kind,
                    NEVER_CLOSED.as_secs()
                ));
            }
            Outcome::Failed(why) => {
                tally.unfinished += 1;
                violations.push(format!("{:?} failed: {why}", record.kind));
            }
        }
    }
    // Every extra past the cap is refused, unless a held one had closed by then.
    let refused_extras = tallies.get(&Kind::CapExtra).map_or(0, |t| t.refused.len());
    let freed = records
        .iter()
        .filter(|r| r.kind == Kind::CapHeld && r.ended <= cap_answered + Duration::from_millis(500))
        .count();
    if refused_extras + freed < CAP_EXTRA {
        violations.push(format!(
            "{refused_extras} of {CAP_EXTRA} connections past the per-address cap refused \
             ({freed} places freed meanwhile)"
        ));
    }
    (violations, tallies)
}

/// Checks that `/metrics` (its `text` once the attack is over) counts what the attack met, by
/// `tallies`, and that every socket it counted was given back.
pub fn metrics(text: &str, tallies: &BTreeMap<Kind, Tally>, violations: &mut Vec<String>) {
    let closed = |kinds: &[Kind]| -> usize {
        kinds
            .iter()
            .map(|k| tallies.get(k).map_or(0, |t| t.closed.len()))
            .sum()
    };
    let refused_extras = tallies.get(&Kind::CapExtra).map_or(0, |t| t.refused.len());
    // `/metrics` counts what the attack met. (Request heads cut off at the handshake deadline
    // and WebSocket protocol errors have no counter.)
    for (limit, seen) in [
        ("connections_per_address_max", refused_extras),
        (
            "login_timeout",
            closed(&[Kind::Silent, Kind::CapHeld, Kind::CapExtra]),
        ),
        ("write_timeout", closed(&[Kind::Spammer])),
    ] {
        // A stalled write is caught by the session's frame timeout or by the socket's own,
        // whichever comes first: both are the write timeout.
        let hits = match limit {
            "write_timeout" => limit_hits(text, limit) + limit_hits(text, "socket_write_timeout"),
            _ => limit_hits(text, limit),
        };
        if hits < seen as i64 {
            violations.push(format!(
                "/metrics counts {hits} hits of {limit}, fewer than the {seen} seen"
            ));
        }
    }
    for gauge in ["chapar_sockets_open", "chapar_connections_open"] {
        let open = metric(text, gauge);
        if open != 0 {
            violations.push(format!("{gauge} is {open} after the attack, not 0"));
        }
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The value at quantile `q` of sorted `values`.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let at = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[at]
}
