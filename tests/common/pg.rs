//! A private PostgreSQL server for a test: `initdb` into a temporary directory, started with
//! `pg_ctl` on a free loopback port (and a socket directory of its own), password
//! authentication over TCP, stopped (`-m immediate`) when dropped. As root the server runs as
//! the `postgres` user, since PostgreSQL refuses to run as root. Where no server is installed
//! the tests skip with the reason, unless LEHR_REQUIRE_POSTGRES is set (scripts/test.sh sets it).

use std::path::PathBuf;
use std::process::Command;

pub const PASSWORD: &str = "s3cret-pg-pw";

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_user: Option<&'static str>,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LEHR_PG_BIN") {
        return Some(dir.into());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().or_else(|| {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        dir.join("initdb").exists().then_some(dir)
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// A running server, or `None` (with the reason printed) where PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or pg_config)";
            assert!(std::env::var_os("LEHR_REQUIRE_POSTGRES").is_none(), "{why}, and LEHR_REQUIRE_POSTGRES is set");
            eprintln!("skipping: {why}; apt-get install postgresql");
            return None;
        };
        let as_user = is_root().then_some("postgres");
        let dir = tempfile::tempdir().unwrap();
        if as_user.is_some() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown of the PostgreSQL test directory");
        }
        std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
        let pg = Postgres { port: super::free_port(), dir, bin, as_user };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-U",
                "lehr",
                "--pwfile",
                &pg.dir.path().join("pw").to_string_lossy(),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-l",
                &pg.dir.path().join("log").to_string_lossy(),
                "-o",
                &format!("-p {} -k {} -c listen_addresses=127.0.0.1", pg.port, pg.dir.path().display()),
                "-w",
                "start",
            ],
        );
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// A new database on this server: its URL (user `lehr`, with the password).
    pub fn database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://lehr:{PASSWORD}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in `db` through psql over the socket; its output (unaligned, tuples only).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "lehr", "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D"]).arg(self.data()).args(["-m", "immediate", "stop"]).output();
    }
}
