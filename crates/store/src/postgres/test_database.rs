//! Fresh PostgreSQL databases for tests, in this crate and in end-to-end tests of servers on
//! PostgreSQL (feature `conformance`).
//!
//! Each test creates its own database on the server named by `CHAPAR_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the machine's trust-auth server) and drops it
//! afterwards. Without a reachable server, [`TestDatabase::create`] says so and returns `None`
//! (the test passes as skipped), unless `CHAPAR_REQUIRE_POSTGRES=1` (CI sets it) makes that a
//! failure.
#![allow(clippy::expect_used)] // test support: a panic is the report

use tokio_postgres::NoTls;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, dropped when the test ends.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// Its address, for [`super::PgStore::connect`] or a server's `--database`.
    pub url: String,
}

impl TestDatabase {
    /// A fresh database, or `None` (with the reason printed) where no server answers.
    pub async fn create(test: &str) -> Option<Self> {
        let admin_url =
            std::env::var("CHAPAR_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let admin = match tokio_postgres::connect(&admin_url, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(e) => {
                let required = std::env::var("CHAPAR_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "CHAPAR_REQUIRE_POSTGRES=1 but PostgreSQL at {admin_url} is unreachable: {e}"
                );
                eprintln!(
                    "SKIPPED {test}: PostgreSQL at {admin_url} is unreachable ({e}); \
                     set CHAPAR_TEST_POSTGRES to a server's admin URL to run it"
                );
                return None;
            }
        };
        let name = format!(
            "chapar_test_{}_{}",
            std::process::id(),
            super::rand_below(u64::MAX)
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = with_database(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// Drops the database (closing any connection still open to it).
    pub async fn drop_database(self) {
        let (admin, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .expect("reconnect to drop the test database");
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .expect("drop the test database");
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[test]
fn the_test_database_replaces_only_the_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u@h/db?sslmode=disable", "t2"),
        "postgres://u@h/t2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "t3"), "postgres://u@h/t3");
}
