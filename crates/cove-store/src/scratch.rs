//! A throwaway PostgreSQL database for the store's tests and benchmark:
//! made empty on a server where the caller may create databases, dropped
//! (with any connections still open) when the guard goes.

pub struct ScratchDatabase {
    server: String,
    name: String,
    /// The new database's URL.
    pub url: String,
}

impl ScratchDatabase {
    /// Makes `name` anew on the server at `server` (a URL naming any
    /// database there, such as `postgres`).
    pub fn create(server: &str, name: &str) -> anyhow::Result<ScratchDatabase> {
        let (base, _) = server
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("{server} is not a postgres:// URL"))?;
        let mut admin = ::postgres::Client::connect(server, ::postgres::NoTls)?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(ScratchDatabase {
            url: format!("{base}/{name}"),
            server: server.to_string(),
            name: name.to_string(),
        })
    }

    /// Runs `statements` in the database.
    pub fn sql(&self, statements: &str) -> anyhow::Result<()> {
        let mut c = ::postgres::Client::connect(&self.url, ::postgres::NoTls)?;
        c.batch_execute(statements)?;
        Ok(())
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&self.server, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A database of its own on the test PostgreSQL server named by
/// `COVE_TEST_POSTGRES` (see scripts/test-postgres.sh), called
/// `<prefix>_<pid>_<n>`; `None` (the test skips) when it is not set,
/// which CI does not allow.
pub fn from_env(prefix: &str) -> Option<ScratchDatabase> {
    let Ok(server) = std::env::var("COVE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL tests: set COVE_TEST_POSTGRES"
        );
        eprintln!("COVE_TEST_POSTGRES is not set: skipping a PostgreSQL test");
        return None;
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    Some(ScratchDatabase::create(&server, &name).expect("a scratch database"))
}
