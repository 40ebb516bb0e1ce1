//! A small OpenID provider on loopback for the Apache + mod_auth_openidc
//! rows: the authorization code flow (OpenID Connect Core 1.0 §3.1) with
//! ID tokens signed HS256 with the client secret, enough for
//! mod_auth_openidc to log one user in. Part of the benchmark only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;

/// The relying party's client id at this provider.
pub const CLIENT_ID: &str = "bench-apache";
/// Its client secret, also the ID tokens' HS256 key.
pub const CLIENT_SECRET: &str = "bench-oidc-client-secret-0123456789abcdef";
/// The one user's subject.
pub const SUBJECT: &str = "bench-user";

#[derive(Clone)]
struct Provider {
    issuer: String,
    /// Authorization code → the nonce of its authorization request.
    codes: Arc<Mutex<HashMap<String, Option<String>>>>,
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    redirect_uri: String,
    state: String,
    nonce: Option<String>,
}

#[derive(Deserialize)]
struct TokenForm {
    code: String,
}

/// Serves the provider on `listener`; its issuer is `issuer`
/// (`http://127.0.0.1:PORT`). Runs until the process ends.
pub fn serve(listener: std::net::TcpListener, issuer: String) {
    let provider = Provider {
        issuer,
        codes: Arc::default(),
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/jwks", get(|| async { Json(json!({ "keys": [] })) }))
        .with_state(provider);
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

async fn metadata(State(p): State<Provider>) -> Json<serde_json::Value> {
    let i = &p.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }))
}

/// Consents at once: back to the relying party with a fresh code.
async fn authorize(State(p): State<Provider>, Query(q): Query<AuthorizeQuery>) -> Response {
    let code = format!("code-{}", rand::random::<u64>());
    p.codes.lock().unwrap().insert(code.clone(), q.nonce);
    let mut back = url::Url::parse(&q.redirect_uri).expect("an absolute redirect_uri");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q.state);
    Redirect::to(back.as_str()).into_response()
}

async fn token(State(p): State<Provider>, Form(f): Form<TokenForm>) -> Response {
    let Some(nonce) = p.codes.lock().unwrap().remove(&f.code) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant" })),
        )
            .into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({
        "iss": p.issuer,
        "sub": SUBJECT,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 3600,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    Json(json!({
        "access_token": format!("at-{}", rand::random::<u64>()),
        "token_type": "Bearer",
        "expires_in": 3600,
        "id_token": hs256(&claims),
    }))
    .into_response()
}

/// A compact JWS (RFC 7515) of `claims`, HS256 with [`CLIENT_SECRET`].
fn hs256(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}
