//! Redis over TLS: a throwaway CA and server certificate made with the `openssl` CLI, and
//! a `redis-server --tls-port P --port 0` using them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::{
    reaper::{self, Daemon},
    resp::{free_port, wait_until},
};

/// A CA and, signed by it, a certificate for `127.0.0.1` (and `localhost`).
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Pki {
    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("read the CA certificate")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl not found ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA named `name` and a server certificate it signs, in `dir` (P-256 keys,
/// valid for a day).
pub fn make_pki(dir: &Path, name: &str) -> Pki {
    std::fs::create_dir_all(dir).expect("create the PKI directory");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca_key, ca_cert) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
    let (key, csr, cert) = (
        format!("{name}-server.key"),
        format!("{name}-server.csr"),
        format!("{name}-server.crt"),
    );
    let ca_subject = format!("/CN={name} test CA");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca_cert, "-days", "1"]);
    args.extend(["-subj", &ca_subject]);
    openssl(dir, &args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &args);
    let ext = format!("{name}-server.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
    Pki {
        ca_cert: dir.join(ca_cert),
        server_cert: dir.join(cert),
        server_key: dir.join(key),
    }
}

/// A `redis-server` that speaks only TLS, with a certificate from its own [`Pki`].
pub struct TlsServer {
    pub port: u16,
    pub pki: Pki,
    pub dir: PathBuf,
    daemon: Daemon,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TlsServer {
    /// Starts the server (blocking): TLS on a free port, no plain-text port, clients not
    /// asked for certificates.
    pub fn start() -> Self {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("trs-tls-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        reaper::remove_on_exit(&dir);
        let pki = make_pki(&dir, "server");
        let port = free_port();
        let path = |p: &Path| p.display().to_string();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &path(&pki.server_cert),
            "--tls-key-file",
            &path(&pki.server_key),
            "--tls-ca-cert-file",
            &path(&pki.ca_cert),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &path(&dir),
            "--logfile",
            &path(&dir.join("redis.log")),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut daemon = Daemon::spawn("redis-server", &args);
        let listening = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || daemon.has_exited()
        });
        assert!(
            listening && !daemon.has_exited(),
            "the TLS redis-server did not start; its log:\n{}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
        Self {
            port,
            pki,
            dir,
            daemon,
        }
    }

    /// `rediss://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fred TLS configuration (rustls) that trusts only the CA in `ca_pem`: what an app
/// sets as `Config::tls` to reach a Redis whose certificate a private CA signed.
#[cfg(feature = "enable-rustls")]
pub fn rustls_trusting(ca_pem: &[u8]) -> tower_redis_session::fred::types::config::TlsConfig {
    use tower_redis_session::fred::rustls::{
        pki_types::{pem::PemObject as _, CertificateDer},
        ClientConfig, RootCertStore,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable CA certificate");
    }
    ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
        .into()
}

/// The same with native-tls (OpenSSL on Linux).
#[cfg(feature = "enable-native-tls")]
pub fn native_tls_trusting(ca_pem: &[u8]) -> tower_redis_session::fred::types::config::TlsConfig {
    use tower_redis_session::fred::native_tls::{Certificate, TlsConnector};
    let mut builder = TlsConnector::builder();
    builder.add_root_certificate(Certificate::from_pem(ca_pem).expect("a PEM certificate"));
    tower_redis_session::fred::types::config::TlsConnector::try_from(builder)
        .expect("a native-tls connector")
        .into()
}
