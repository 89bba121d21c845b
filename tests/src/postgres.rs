//! A real PostgreSQL server for one test: Debian's `postgresql` package
//! (installed by scripts/setup-databases.sh), a fresh cluster in a
//! temporary directory, listening on 127.0.0.1 at a free port with
//! password (SCRAM) authentication, run as the unprivileged `postgres`
//! user when the test runs as root (the server refuses root). Stopped and
//! removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL server.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// TLS on (`ssl=on`), and required of every TCP connection.
    tls: bool,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The superuser `polytrace`'s password.
    pub password: String,
}

/// The newest PostgreSQL server's programs under /usr/lib/postgresql.
fn server_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server under /usr/lib/postgresql: run scripts/setup-databases.sh")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Create a cluster and start it; panics with the server's log when
    /// it does not start.
    pub fn start(name: &str) -> Postgres {
        Self::create(name, None)
    }

    /// Like [`Postgres::start`], serving TLS with `pki`'s server
    /// certificate (for `localhost` and `127.0.0.1`) and refusing every
    /// TCP connection without it.
    pub fn start_tls(name: &str, pki: &crate::pki::Pki) -> Postgres {
        Self::create(name, Some(pki))
    }

    fn create(name: &str, pki: Option<&crate::pki::Pki>) -> Postgres {
        let (dir, port) = crate::server_dir_and_port("pg", name);
        let password = format!("pw-{}-{port}", std::process::id());
        std::fs::write(dir.join("pwfile"), &password).unwrap();
        let pg = Postgres {
            dir,
            bin: server_bin(),
            tls: pki.is_some(),
            port,
            password,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown of {}", pg.dir.display());
        }
        pg.run(
            "initdb",
            &[
                "--no-sync",
                "--auth=scram-sha-256",
                "--username=polytrace",
                "--encoding=UTF8",
                "--locale=C",
            ],
            &[
                format!("--pwfile={}", pg.dir.join("pwfile").display()),
                format!("--pgdata={}", pg.data().display()),
            ],
        );
        if let Some(pki) = pki {
            let data = pg.data();
            std::fs::copy(&pki.server_cert, data.join("server.pem")).unwrap();
            std::fs::copy(&pki.server_key, data.join("server.key")).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if is_root() {
                let status = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Run one of the server's programs, as `postgres` when root.
    fn run(&self, program: &str, args: &[&str], more: &[String]) -> String {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).args(more).current_dir(&self.dir);
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start the server (again, after [`Postgres::stop`]).
    pub fn start_server(&self) {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=60",
            self.port,
            self.dir.display()
        );
        if self.tls {
            options += " -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key";
        }
        self.run(
            "pg_ctl",
            &["-w", "-t", "60", "start"],
            &[
                format!("--pgdata={}", self.data().display()),
                format!("--log={}", self.dir.join("log").display()),
                format!("--options={options}"),
            ],
        );
    }

    /// Stop the server (fast: sessions are ended, what was committed is kept).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-w", "-m", "fast", "stop"],
            &[format!("--pgdata={}", self.data().display())],
        );
    }

    /// `postgres://polytrace:PASSWORD@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://polytrace:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Run SQL with psql as the superuser on `database`; its unaligned,
    /// tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url(database))
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-tAc", sql])
            .output()
            .expect("psql (Debian's postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The directory the server's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = format!("--pgdata={}", self.data().display());
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(["-m", "immediate", "stop", &data])
                .output()
        } else {
            Command::new(&path)
                .args(["-m", "immediate", "stop", &data])
                .output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
