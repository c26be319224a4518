//! A test-only TLS front for the engine, as `dockerd --tlsverify` serves it
//! (docker docs, "Protect the Docker daemon socket"): TCP on 127.0.0.1, a
//! server certificate and a client certificate both signed by a test CA, and
//! only clients presenting a certificate from that CA let through to the
//! engine's unix socket.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The front; its thread ends with the test process.
pub struct TlsFront {
    /// `tcp://127.0.0.1:PORT`, for `DOCKER_HOST`.
    pub host: String,
    /// Folder with `ca.pem`, `cert.pem` and `key.pem` for the client, for `DOCKER_CERT_PATH`.
    pub cert_path: PathBuf,
    verified: Arc<AtomicUsize>,
}

impl TlsFront {
    /// Starts a front for the engine socket at `upstream`; writes the client's files under `dir`.
    pub fn start(dir: &Path, upstream: &Path) -> TlsFront {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["freshen-test-client".to_string()]).unwrap().signed_by(&client_key, &ca).unwrap();

        let cert_path = dir.join("docker-certs");
        std::fs::create_dir_all(&cert_path).unwrap();
        std::fs::write(cert_path.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(cert_path.join("cert.pem"), client_cert.pem()).unwrap();
        std::fs::write(cert_path.join("key.pem"), client_key.serialize_pem()).unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = format!("tcp://{}", listener.local_addr().unwrap());
        let verified = Arc::new(AtomicUsize::new(0));
        let (v, up) = (verified.clone(), upstream.to_path_buf());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (acceptor, v, up) = (acceptor.clone(), v.clone(), up.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        if tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                            v.fetch_add(1, Ordering::SeqCst);
                        }
                        let Ok(mut engine) = tokio::net::UnixStream::connect(&up).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
                    });
                }
            });
        });
        TlsFront { host, cert_path, verified }
    }

    /// Connections that completed the handshake with a verified client certificate.
    pub fn verified_connections(&self) -> usize {
        self.verified.load(Ordering::SeqCst)
    }
}
