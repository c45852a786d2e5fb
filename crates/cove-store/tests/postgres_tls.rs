//! The store over TLS to a real PostgreSQL server of the test's own: a
//! cluster made in a temporary directory, with a certificate from a CA made
//! here, that accepts only encrypted connections (`hostssl`). Skipped where
//! PostgreSQL's server is not installed.

use cove_store::Store;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn server_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A server program, to run as the cluster's owner (`postgres` when we are
/// root: PostgreSQL refuses to run as root).
fn command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(bin: &Path, program: &str, args: &[&str]) {
    let out = command(bin, program)
        .args(args)
        .output()
        .expect("running a PostgreSQL program");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A CA and a certificate it issued for 127.0.0.1: (CA PEM, cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let cert = server.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = command(&self.bin, "pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a cluster that takes only TLS connections with `cert`.
fn start(bin: PathBuf, cert: &str, key: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let owner = |path: &Path| {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:", &path.to_string_lossy()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    };
    owner(dir.path());
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    run(
        &bin,
        "initdb",
        &[
            "-D",
            &data_arg,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    owner(dir.path());
    let port = free_port();
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        dir.path().display(),
        cert_path.display(),
        key_path.display()
    );
    let log = dir.path().join("server.log").to_string_lossy().into_owned();
    run(
        &bin,
        "pg_ctl",
        &[
            "-D", &data_arg, "-l", &log, "-w", "-t", "60", "start", "-o", &options,
        ],
    );
    Server {
        bin,
        data,
        port,
        dir,
    }
}

#[test]
fn the_store_connects_over_verified_tls_only() {
    let Some(bin) = server_bin() else {
        eprintln!("skipped: PostgreSQL's server is not installed");
        return;
    };
    let (ca, cert, key) = certificates();
    let server = start(bin, &cert, &key);
    let ca_path = server.dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    let root = ca_path.to_string_lossy().replace('/', "%2F");

    // Verified against the CA that issued the server's certificate.
    let store = Store::connect_postgres(&format!("{base}?sslmode=verify-full&sslrootcert={root}"))
        .expect("the store over TLS");
    store
        .write(|tx| {
            tx.mark_region_bootstrapped("123456789012", "us-east-1");
            Ok(())
        })
        .unwrap();
    drop(store);

    // The server takes no connection in the clear.
    let e = Store::connect_postgres(&base)
        .err()
        .expect("refused in the clear");
    assert!(format!("{e:#}").contains("no encryption"), "{e:#}");

    // Another CA's certificate is not this server's.
    let (other_ca, _, _) = certificates();
    let other = server.dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let other = other.to_string_lossy().replace('/', "%2F");
    let e = Store::connect_postgres(&format!("{base}?sslmode=require&sslrootcert={other}"))
        .err()
        .expect("refused: not our CA");
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");

    // Without a CA file, the host's bundle decides: it does not know ours.
    let e = Store::connect_postgres(&format!("{base}?sslmode=verify-full"))
        .err()
        .expect("refused: an unknown CA");
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");
}
