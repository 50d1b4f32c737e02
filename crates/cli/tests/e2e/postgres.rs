//! Servers on PostgreSQL (`--database`): the durability promise holds there too, and two
//! server processes on one database serve one community, each client talking to its own
//! node. Each test gets a fresh database; without PostgreSQL they say so and pass (CI sets
//! `CHAPAR_REQUIRE_POSTGRES=1`, which makes that a failure).

use chapar_store::postgres::test_database::TestDatabase;

use crate::harness::Server;

/// A fresh database for one test, dropped when the test ends.
struct Database {
    runtime: tokio::runtime::Runtime,
    database: Option<TestDatabase>,
}

impl Database {
    fn create(test: &str) -> Option<Self> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let database = runtime.block_on(TestDatabase::create(test))?;
        Some(Self {
            runtime,
            database: Some(database),
        })
    }

    fn url(&self) -> &str {
        &self.database.as_ref().unwrap().url
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            self.runtime.block_on(database.drop_database());
        }
    }
}

#[test]
fn acknowledged_messages_survive_kill_9_on_postgres() {
    let Some(database) = Database::create("acknowledged_messages_survive_kill_9_on_postgres")
    else {
        return;
    };
    crate::durability::burst_survives_kill_9(&["--database", database.url()]);
}

#[test]
fn two_nodes_on_one_database_serve_one_community() {
    let Some(database) = Database::create("two_nodes_on_one_database_serve_one_community") else {
        return;
    };
    let options = ["--database", database.url()];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node_a = Server::start_with(dir_a.path(), "127.0.0.1:0", &options);
    // Nodes share the server's identity and file-token key (ARCHITECTURE.md): copy them.
    let data_b = dir_b.path().join("server-data");
    std::fs::create_dir_all(&data_b).unwrap();
    for key in ["server.id", "token.key"] {
        std::fs::copy(node_a.data.join(key), data_b.join(key)).unwrap();
    }
    let node_b = Server::start_with(dir_b.path(), "127.0.0.1:0", &options);

    let alice = node_a.register(dir_a.path(), "alice");
    let bob = node_b.register(dir_b.path(), "bob");
    alice.send("@bob", "from node a");
    bob.sync();
    assert_eq!(bob.texts("@alice"), ["from node a"]);
    bob.send("@alice", "from node b");
    alice.sync();
    assert_eq!(alice.texts("@bob"), ["from node a", "from node b"]);

    // A node dies: the other goes on, and the restarted one has everything.
    let addr_a = node_a.addr.clone();
    node_a.kill9();
    bob.send("@alice", "while node a was down");
    let _node_a = Server::start_with(dir_a.path(), &addr_a, &options);
    alice.sync();
    assert_eq!(
        alice.texts("@bob"),
        ["from node a", "from node b", "while node a was down"]
    );
    drop(node_b);
}
