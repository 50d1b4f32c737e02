//! Attacks on group membership, each against the real server and real `chapar` client
//! processes, played by the kit's crafted client (`kit`). Every test says what the attack did
//! under the old rule (nothing checked the leaves of a group one joins or that others add)
//! and shows it failing now, with nothing lost for the victim.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

mod archive;
#[path = "../e2e/harness.rs"]
mod harness;
mod impostors;
mod keys;
mod kit;
mod lying;
mod server_identity;
