//! The gateway's TLS certificates, read again on SIGHUP: each handshake
//! takes the certificate (and its chain) and key loaded last, so a renewed
//! certificate (certbot, an ACME client) is served without a restart or a
//! dropped connection. A file that does not load keeps the running one.
//! A site with its own certificate gets it for the names in its `hosts`
//! (the client's SNI); every other name gets the listener's.

use std::collections::HashMap;
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

/// The handshake callback: for the client's SNI name, the certificate of
/// the site with that host name, else the listener's; each as loaded last.
/// Clones share the certificates.
#[derive(Clone)]
pub struct Certificates {
    listener: Arc<ReloadableCert>,
    by_host: HashMap<String, Arc<ReloadableCert>>,
    /// Every distinct certificate, the listener's first (for reloads).
    all: Vec<Arc<ReloadableCert>>,
}

impl Certificates {
    /// Loads the listener's certificate and the sites' own: `sites` holds
    /// each site's host names and its certificate files (the listener's
    /// files for a site without its own). A pair of files is loaded once.
    ///
    /// Errors: as [`ReloadableCert::load`].
    pub fn load(
        listener: &(PathBuf, PathBuf),
        sites: &[(Vec<String>, (PathBuf, PathBuf))],
    ) -> Result<Certificates, String> {
        let mut loaded: Vec<((PathBuf, PathBuf), Arc<ReloadableCert>)> = Vec::new();
        let mut get = |files: &(PathBuf, PathBuf)| -> Result<Arc<ReloadableCert>, String> {
            if let Some((_, cert)) = loaded.iter().find(|(f, _)| f == files) {
                return Ok(cert.clone());
            }
            let cert = ReloadableCert::load(files.0.clone(), files.1.clone())?;
            loaded.push((files.clone(), cert.clone()));
            Ok(cert)
        };
        let listener_cert = get(listener)?;
        let mut by_host = HashMap::new();
        for (hosts, files) in sites.iter().filter(|(_, files)| files != listener) {
            let cert = get(files)?;
            for host in hosts {
                by_host.insert(host.clone(), cert.clone());
            }
        }
        Ok(Certificates {
            listener: listener_cert,
            by_host,
            all: loaded.into_iter().map(|(_, cert)| cert).collect(),
        })
    }

    /// Reads every certificate's files again; one that fails keeps its
    /// running certificate (the others still change).
    ///
    /// Errors: the messages of those that failed.
    pub fn reload(&self) -> Result<(), String> {
        let failed: Vec<String> = self.all.iter().filter_map(|c| c.reload().err()).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

#[async_trait]
impl TlsAccept for Certificates {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let chosen = ssl
            .servername(pingora::tls::ssl::NameType::HOST_NAME)
            .and_then(|name| self.by_host.get(&name.to_ascii_lowercase()))
            .unwrap_or(&self.listener);
        let loaded = chosen
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
