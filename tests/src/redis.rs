//! A real Redis server for one test: Debian's `redis-server` (installed by
//! scripts/setup-databases.sh), on 127.0.0.1 at a free port, a password
//! required, its files (an append-only log fsynced on every write, so that
//! what it acknowledged survives a restart) in a temporary directory.
//! Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A Redis server.
pub struct Redis {
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The `default` user's password.
    pub password: String,
}

impl Redis {
    /// Start a server; panics with its log when it does not answer.
    pub fn start(name: &str) -> Redis {
        let (dir, port) = crate::server_dir_and_port("redis", name);
        let redis = Redis {
            dir,
            child: Mutex::new(None),
            port,
            password: format!("redis-pw-{}-{port}", std::process::id()),
        };
        redis.start_server();
        redis
    }

    /// Start the server (again, after [`Redis::stop`]), on the same port
    /// and files; waits until it answers PING.
    pub fn start_server(&self) {
        let config = format!(
            "bind 127.0.0.1\nport {}\nrequirepass {}\ndir {}\nappendonly yes\nappendfsync always\nsave \"\"\nlogfile {}\ndaemonize no\nprotected-mode yes\n",
            self.port,
            self.password,
            self.dir.display(),
            self.dir.join("log").display()
        );
        std::fs::write(self.dir.join("redis.conf"), config).unwrap();
        let child = Command::new("redis-server")
            .arg(self.dir.join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup-databases.sh)");
        *self.child.lock().unwrap() = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if self.try_cli(&["PING"]).is_some_and(|o| o == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server did not answer on port {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stop the server the way a crash would not lose anything it
    /// acknowledged (SIGTERM; the append-only log is fsynced per write).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/DB`.
    pub fn url(&self, database: u32) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
            ])
            .args(["-a", &self.password])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run a command with redis-cli on database 0; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed (Debian's redis-tools)"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
