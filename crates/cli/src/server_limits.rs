//! The `[limits]` table of the server's config file, and the flags that override the limits
//! operators change most (connection caps, the registration cost, invite codes).

use std::time::Duration;

use anyhow::Context as _;
use chapar_server::Limits;
use clap::Args;

/// Limit flags of `chapar server`. Every limit can also be set in the config file's
/// `[limits]` table (see `docs/limits.md`).
#[derive(Args, Default)]
pub struct LimitArgs {
    /// Most connections open at once [default: 10000]
    #[arg(long, env = "CHAPAR_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    /// Most connections open at once from one address [default: 256]
    #[arg(long, env = "CHAPAR_CONNECTIONS_PER_ADDRESS_MAX")]
    connections_per_address_max: Option<usize>,
    /// Leading zero bits of registration's proof of work, 0 to 24; each doubles the work
    /// (20 is about a second on a phone) [default: 20]
    #[arg(long, env = "CHAPAR_REGISTRATION_POW_BITS")]
    registration_pow_bits: Option<u8>,
    /// An invite code a registration must carry (repeatable); with none, anyone may register.
    #[arg(
        long = "invite-code",
        env = "CHAPAR_INVITE_CODES",
        value_delimiter = ','
    )]
    invite_codes: Vec<String>,
}

/// The `[limits]` table.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    connections_max: Option<usize>,
    connections_per_address_max: Option<usize>,
    connections_per_device_max: Option<usize>,
    handshake_timeout: Option<String>,
    login_timeout: Option<String>,
    idle_timeout: Option<String>,
    write_timeout: Option<String>,
    connection_bytes_max: Option<usize>,
    registration_pow_bits: Option<u8>,
    registrations_per_address_per_hour: Option<u32>,
    invite_codes: Option<Vec<String>>,
    account_bytes_per_day: Option<u64>,
    key_package_bytes_per_account_max: Option<u64>,
    claims_per_account_pair_per_hour: Option<u32>,
    one_time_claims_per_account_per_hour: Option<u32>,
    device_changes_per_account_per_hour: Option<u32>,
    links_per_address_per_hour: Option<u32>,
}

fn duration(value: Option<&String>, key: &str) -> anyhow::Result<Option<Duration>> {
    value
        .map(|text| {
            humantime::parse_duration(text)
                .with_context(|| format!("config key limits.{key}: {text:?} is not a duration"))
        })
        .transpose()
}

/// The limits in force: each from its flag (or environment variable), else the file, else
/// the default; then checked.
pub fn resolve(args: &LimitArgs, file: LimitsFile) -> anyhow::Result<Limits> {
    let d = Limits::default();
    let limits = Limits {
        connections_max: args
            .connections_max
            .or(file.connections_max)
            .unwrap_or(d.connections_max),
        connections_per_address_max: args
            .connections_per_address_max
            .or(file.connections_per_address_max)
            .unwrap_or(d.connections_per_address_max),
        connections_per_device_max: file
            .connections_per_device_max
            .unwrap_or(d.connections_per_device_max),
        handshake_timeout: duration(file.handshake_timeout.as_ref(), "handshake_timeout")?
            .unwrap_or(d.handshake_timeout),
        login_timeout: duration(file.login_timeout.as_ref(), "login_timeout")?
            .unwrap_or(d.login_timeout),
        idle_timeout: duration(file.idle_timeout.as_ref(), "idle_timeout")?
            .unwrap_or(d.idle_timeout),
        write_timeout: duration(file.write_timeout.as_ref(), "write_timeout")?
            .unwrap_or(d.write_timeout),
        connection_bytes_max: file.connection_bytes_max.unwrap_or(d.connection_bytes_max),
        registration_pow_bits: args
            .registration_pow_bits
            .or(file.registration_pow_bits)
            .unwrap_or(d.registration_pow_bits),
        registrations_per_address_per_hour: file
            .registrations_per_address_per_hour
            .unwrap_or(d.registrations_per_address_per_hour),
        invite_codes: if args.invite_codes.is_empty() {
            file.invite_codes.unwrap_or(d.invite_codes)
        } else {
            args.invite_codes.clone()
        },
        account_bytes_per_day: file
            .account_bytes_per_day
            .unwrap_or(d.account_bytes_per_day),
        key_package_bytes_per_account_max: file
            .key_package_bytes_per_account_max
            .unwrap_or(d.key_package_bytes_per_account_max),
        claims_per_account_pair_per_hour: file
            .claims_per_account_pair_per_hour
            .unwrap_or(d.claims_per_account_pair_per_hour),
        one_time_claims_per_account_per_hour: file
            .one_time_claims_per_account_per_hour
            .unwrap_or(d.one_time_claims_per_account_per_hour),
        device_changes_per_account_per_hour: file
            .device_changes_per_account_per_hour
            .unwrap_or(d.device_changes_per_account_per_hour),
        links_per_address_per_hour: file
            .links_per_address_per_hour
            .unwrap_or(d.links_per_address_per_hour),
    };
    limits.validate()?;
    Ok(limits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the report

    use super::*;

    #[test]
    fn the_file_sets_limits_and_flags_win() {
        let file: LimitsFile = toml::from_str(
            r#"
            connections_max = 500
            idle_timeout = "2m"
            registration_pow_bits = 12
            invite_codes = ["from-file"]
            "#,
        )
        .unwrap();
        let args = LimitArgs {
            registration_pow_bits: Some(16),
            ..LimitArgs::default()
        };
        let limits = resolve(&args, file).unwrap();
        assert_eq!(limits.connections_max, 500);
        assert_eq!(limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(limits.registration_pow_bits, 16, "the flag wins");
        assert_eq!(limits.invite_codes, ["from-file"]);
        assert_eq!(
            resolve(&LimitArgs::default(), LimitsFile::default()).unwrap(),
            Limits::default()
        );
        let zero: LimitsFile = toml::from_str("login_timeout = \"0s\"").unwrap();
        assert!(resolve(&LimitArgs::default(), zero).is_err());
    }
}
