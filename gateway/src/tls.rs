//! The gateway's TLS certificate, read again on SIGHUP: each handshake
//! takes the certificate (and its chain) and key loaded last, so a renewed
//! certificate (certbot, an ACME client) is served without a restart or a
//! dropped connection. A file that does not load keeps the running one.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

/// A certificate chain (leaf first) and its key.
struct Loaded {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// The PEM files of `[gateway] tls_cert` and `tls_key`, as last loaded.
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<Loaded>>,
}

fn load(cert_path: &PathBuf, key_path: &PathBuf) -> Result<Loaded, String> {
    let named = |path: &PathBuf, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let pem = std::fs::read(cert_path).map_err(|e| named(cert_path, &e))?;
    let chain = X509::stack_from_pem(&pem).map_err(|e| named(cert_path, &e))?;
    if chain.is_empty() {
        return Err(named(cert_path, &"no certificate in the file"));
    }
    let pem = std::fs::read(key_path).map_err(|e| named(key_path, &e))?;
    let key = PKey::private_key_from_pem(&pem).map_err(|e| named(key_path, &e))?;
    let leaf_key = chain[0].public_key().map_err(|e| named(cert_path, &e))?;
    if !leaf_key.public_eq(&key) {
        return Err(named(key_path, &"not the key of the certificate"));
    }
    Ok(Loaded { chain, key })
}

impl ReloadableCert {
    /// Loads the certificate chain and its key.
    ///
    /// Errors: a message naming the file that can't be read or parsed, or
    /// a key that is not the certificate's.
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Arc<ReloadableCert>, String> {
        let loaded = load(&cert_path, &key_path)?;
        Ok(Arc::new(ReloadableCert {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Reads the files again; on failure the running certificate stays.
    ///
    /// Errors: as [`ReloadableCert::load`].
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }
}

/// The handshake callback: the certificate loaded last.
pub struct CurrentCert(pub Arc<ReloadableCert>);

#[async_trait]
impl TlsAccept for CurrentCert {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let loaded = self
            .0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut chain = loaded.chain.iter();
        if let Some(leaf) = chain.next() {
            let _ = ext::ssl_use_certificate(ssl, leaf);
        }
        for intermediate in chain {
            let _ = ext::ssl_add_chain_cert(ssl, intermediate);
        }
        let _ = ext::ssl_use_private_key(ssl, &loaded.key);
    }

    /// Keeps the server name the client asked for (SNI), so a request is
    /// answered only by the site of that name ([`crate::sites::site_of`]).
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let name = ssl.servername(pingora::tls::ssl::NameType::HOST_NAME)?;
        Some(Arc::new(crate::sites::ServerName(
            name.to_ascii_lowercase(),
        )))
    }
}
