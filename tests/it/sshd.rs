//! A private OpenSSH sshd for interop tests: its own config, host key, authorized_keys and a free
//! loopback port; never the system's sshd. Missing sshd fails the test under `CI`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

/// The user sshd will log us in as: whoever runs the tests.
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a real sshd is available; panics under `CI` when it is not.
pub fn available() -> bool {
    if Path::new(SSHD).exists() && Path::new("/usr/bin/ssh-keygen").exists() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "OpenSSH's sshd is required in CI: apt-get install openssh-server");
    eprintln!("{SSHD} not installed: skipping this OpenSSH interop test outside CI");
    false
}

impl Sshd {
    /// Starts sshd with `authorized_keys` as its only authorized keys file, and room for many
    /// connections at once.
    pub fn start(authorized_keys: &str) -> Sshd {
        Self::start_with(authorized_keys, "1000:30:2000")
    }

    /// Like [`Sshd::start`], with this `MaxStartups` (OpenSSH's default is `10:30:100`).
    pub fn start_with(authorized_keys: &str, max_startups: &str) -> Sshd {
        Self::start_configured(authorized_keys, max_startups, "")
    }

    /// Like [`Sshd::start`], with `first` at the top of sshd_config (sshd takes the first value
    /// of an option it reads, so these override the defaults below them).
    pub fn start_configured(authorized_keys: &str, max_startups: &str, first: &str) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("host_ed25519");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(ok.success());
        std::fs::write(dir.path().join("authorized_keys"), authorized_keys).unwrap();
        // Privilege separation needs it; creating it is harmless when it exists.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut last_log = String::new();
        for _ in 0..10 {
            let port = free_port();
            write_config(dir.path(), port, max_startups, first);
            let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start sshd");
            if wait_listening(port, &mut child) {
                return Sshd { dir, port, child };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        }
        panic!("sshd did not start:\n{last_log}");
    }

    /// The `[127.0.0.1]:PORT ssh-ed25519 …` line for a client's known_hosts.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        let mut parts = public.split_whitespace();
        format!("[127.0.0.1]:{} {} {}\n", self.port, parts.next().unwrap(), parts.next().unwrap())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// sshd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, port: u16, max_startups: &str, first: &str) {
    let root_login = if current_user() == "root" { "PermitRootLogin forced-commands-only\n" } else { "" };
    let config = format!(
        "{first}ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_ed25519\nPidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nMaxStartups {max_startups}\nMaxSessions 1000\n\
         ExposeAuthInfo yes\nLogLevel INFO\n{root_login}",
        dir = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
}

/// sshd cannot bind port 0: take a port the kernel hands out and release it (retried on a clash).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
