//! What the fuzz targets share: reading an input as a little script ([`script`]), a real
//! service on a temporary store with identities the harness makes itself ([`server`]), each
//! target's body ([`codec`], [`dispatcher`], [`tus`], [`engine`]: the files under
//! `fuzz_targets/` only hand their input here), and the seed corpus ([`seeds`]).
//!
//! Seeds are written by the targets themselves: with `CHAPAR_FUZZ_WRITE_SEEDS=<dir>` set, a
//! target writes its seeds there and exits instead of fuzzing (see `README.md`), so no second
//! build of the whole tree is needed to make them.

pub mod codec;
pub mod dispatcher;
pub mod engine;
pub mod script;
pub mod seeds;
pub mod server;
pub mod tus;

/// Writes `target`'s seeds into `$CHAPAR_FUZZ_WRITE_SEEDS` and exits, if that is set.
/// Called from each target's `init`.
pub fn write_seeds_if_asked(target: &str) {
    let Some(dir) = std::env::var_os("CHAPAR_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    match seeds::write(target, &dir) {
        Ok(count) => {
            eprintln!("wrote {count} seeds for {target} into {}", dir.display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("cannot write seeds for {target}: {e}");
            std::process::exit(1);
        }
    }
}
