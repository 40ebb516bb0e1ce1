//! Apache httpd (event MPM, Debian's build, default settings) as the
//! trusted peer: one virtual host proxying plainly, one behind
//! mod_auth_openidc logged in against the bench's OpenID provider
//! (`oidc.rs`), both to the same upstream.

use std::path::Path;
use std::process::Command;

/// Debian's module directory.
const MODULES: &str = "/usr/lib/apache2/modules";

/// The configuration: `proxy` proxies plainly, `oidc` behind
/// mod_auth_openidc with `provider` as its OpenID provider.
pub fn config(dir: &Path, proxy: u16, oidc: u16, upstream: u16, provider: &str) -> String {
    let d = dir.display();
    let run = dir.join("apache-run");
    std::fs::create_dir_all(&run).unwrap();
    // The children run as www-data and keep their mutexes and caches here.
    let _ = Command::new("chown")
        .arg("www-data:www-data")
        .arg(&run)
        .status();
    let module =
        |name: &str, file: &str| format!("LoadModule {name}_module {MODULES}/mod_{file}.so\n");
    let mut conf = String::new();
    for (name, file) in [
        ("mpm_event", "mpm_event"),
        ("authn_core", "authn_core"),
        ("authz_core", "authz_core"),
        ("authz_user", "authz_user"),
        ("proxy", "proxy"),
        ("proxy_http", "proxy_http"),
        ("auth_openidc", "auth_openidc"),
    ] {
        conf.push_str(&module(name, file));
    }
    conf.push_str(&format!(
        "ServerRoot {d}\nServerName 127.0.0.1\nDefaultRuntimeDir {run}\nPidFile {d}/apache.pid\n\
ErrorLog {d}/apache-error.log\nLogLevel warn\nUser www-data\nGroup www-data\n\
Listen 127.0.0.1:{proxy}\nListen 127.0.0.1:{oidc}\n\
<VirtualHost 127.0.0.1:{proxy}>\n  ProxyPass / http://127.0.0.1:{upstream}/\n</VirtualHost>\n\
<VirtualHost 127.0.0.1:{oidc}>\n\
  OIDCProviderMetadataURL {provider}/.well-known/openid-configuration\n\
  OIDCClientID {id}\n  OIDCClientSecret {secret}\n\
  OIDCRedirectURI http://127.0.0.1:{oidc}/redirect_uri\n\
  OIDCCryptoPassphrase bench-apache-crypto-passphrase-0123456789\n\
  OIDCScope openid\n  OIDCSSLValidateServer Off\n\
  ProxyPass /redirect_uri !\n  ProxyPass / http://127.0.0.1:{upstream}/\n\
  <Location />\n    AuthType openid-connect\n    Require valid-user\n  </Location>\n\
</VirtualHost>\n",
        run = run.display(),
        id = crate::oidc::CLIENT_ID,
        secret = crate::oidc::CLIENT_SECRET,
    ));
    conf
}

/// Logs in through mod_auth_openidc at `base` (its OpenID provider
/// consents at once); returns its session cookie (`name=value`).
pub async fn login(client: &reqwest::Client, base: &str) -> String {
    let first = client
        .get(format!("{base}/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        first.status(),
        302,
        "mod_auth_openidc sends the browser to its provider"
    );
    let state = crate::cookie_of(&first, "mod_auth_openidc_state_");
    let consent = client.get(crate::location(&first)).send().await.unwrap();
    let back = client
        .get(crate::location(&consent))
        .header("Accept", "text/html")
        .header("Cookie", &state)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 302, "the redirect_uri ends the login");
    let session = crate::cookie_of(&back, "mod_auth_openidc_session=");
    crate::first_page(client, base, &session).await;
    session
}
