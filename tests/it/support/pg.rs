//! A PostgreSQL database of its own for one test, on the machine's server, dropped afterwards
//! (even when the test panics). A test that cannot reach PostgreSQL fails and says how to start
//! it; it never skips.

/// The server the tests use: `CONNECTOR_TEST_DATABASE_URL`, or the local one.
pub fn server_url() -> String {
    std::env::var("CONNECTOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!(
            "lpc_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (client, conn) =
            match tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await {
                Ok(c) => c,
                Err(e) => panic!(
                    "PostgreSQL is not reachable at {} ({e}). These tests need it: start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                     (apt-get install postgresql), or point CONNECTOR_TEST_DATABASE_URL at one.",
                    server_url()
                ),
            };
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        TestDb { name }
    }

    /// The URL a connector is given as `CONNECTOR_STATE_URL`.
    pub fn url(&self) -> String {
        let base = server_url();
        let cut = base.rfind('/').expect("a database in the URL");
        format!("{}/{}", &base[..cut], self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
