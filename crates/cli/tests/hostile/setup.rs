//! The server under attack and the machine it runs on: the server's deadlines and limits for
//! this test (small, so each is met within seconds), starting it with them, finding its
//! process, and raising this process's open-file limit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chapar_types::limits::FRAME_BYTES_MAX;

use crate::harness;

/// The server's deadlines for this test: small, so each is met within seconds.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer than any attack connection lives. (`chapar listen` would not outlive it: clients
/// ping after 60 s of quiet. The pair runs one-shot commands, each well under it.)
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// The smallest budget the server accepts (two frames): a client that does not read meets it
/// soonest.
const CONNECTION_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;
/// The server's default cap on connections from one address, left as it is.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 256;

/// Descriptors kept free for the server's log, the CLI's pipes and the test itself.
pub const DESCRIPTORS_SPARE: usize = 300;

/// Starts the server with this test's limits, its data, log and config under `dir`.
pub fn start_server(dir: &Path) -> Arc<harness::Server> {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nhandshake_timeout = \"{}s\"\nlogin_timeout = \"{}s\"\n\
             idle_timeout = \"{}s\"\nwrite_timeout = \"{}s\"\nconnection_bytes_max = {}\n\
             connections_per_address_max = {}\n",
            HANDSHAKE_TIMEOUT.as_secs(),
            LOGIN_TIMEOUT.as_secs(),
            IDLE_TIMEOUT.as_secs(),
            WRITE_TIMEOUT.as_secs(),
            CONNECTION_BYTES_MAX,
            CONNECTIONS_PER_ADDRESS_MAX,
        ),
    )
    .unwrap();
    let config_arg = config.to_string_lossy().into_owned();
    Arc::new(harness::Server::start_with(
        dir,
        "127.0.0.1:0",
        &["--config", &config_arg],
    ))
}

/// The id of the `chapar server` process keeping its data in `data`.
pub fn server_pid(data: &Path) -> u32 {
    let data = data.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "server") && args.contains(&data) {
            return pid;
        }
    }
    panic!("no server process with data directory {data}")
}

/// The open-file limit, raised as far as allowed; returns the soft limit now in force.
pub fn raise_open_file_limit() -> usize {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
    usize::try_from(soft).unwrap_or(usize::MAX)
}
