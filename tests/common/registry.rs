//! A real OCI registry for tests: Debian's docker-registry on a free
//! 127.0.0.1 port, with temporary storage, stopped on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A docker-registry on a free 127.0.0.1 port with temporary storage; stopped on drop.
pub struct Registry {
    child: Child,
    /// Its storage (`data/`) and configuration.
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Registry {
    pub fn start() -> Registry {
        let bin = ["/usr/bin/docker-registry", "docker-registry"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
            .expect("this test needs Debian's docker-registry package (apt-get install -y docker-registry)");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("config.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, dir, port }
    }

    /// The shared cache's location in it.
    pub fn url(&self) -> String {
        format!("127.0.0.1:{}/hpc/layers", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest digest (`sha256:...`) a reference names, as skopeo sees it.
pub fn skopeo_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
