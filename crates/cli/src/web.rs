//! The demo's web apps, served by `serve --demo` at the same address as the API:
//! the shop at `/`, the admin console at `/admin`, their assets under `/assets/`.
//!
//! The files are `web/dist`, built by `npm run build` in `web/` and committed, and
//! embedded into the binary at compile time (`rust-embed`, also in debug builds),
//! so `cargo run` on a fresh checkout needs neither Node.js nor the files at run
//! time. `build.rs` makes cargo rebuild when `web/dist` changes.
//!
//! Routing, in order: the shop backend (`/demo/api/…`, see [`crate::shop`]); a GET
//! or HEAD for an embedded file gets it; a GET or HEAD for any other path that is
//! not the API's and does not name a file (no `.` in its last segment) is a route
//! of one of the single-page apps and gets that app's `index.html` (`/admin/…` the
//! console's, everything else the shop's); everything else goes to the API
//! unchanged, so unknown endpoints and missing assets answer the API's 404.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use permsync_server::AppState;
use rust_embed::RustEmbed;
use tower::ServiceExt;

#[derive(RustEmbed)]
#[folder = "../../web/dist"]
struct Assets;

/// The API with the demo's web apps and shop backend around it.
pub fn router(state: AppState) -> Router {
    let api = permsync_server::app(state.clone());
    Router::new()
        .merge(crate::shop::routes().with_state(state))
        .fallback(move |req: Request| {
            let api = api.clone();
            async move {
                match web_file(&req) {
                    Some(res) => res,
                    None => api
                        .oneshot(req)
                        .await
                        .unwrap_or_else(|never| match never {}),
                }
            }
        })
}

/// Paths the API (or the shop backend) answers, never the web apps.
fn is_api_path(path: &str) -> bool {
    const PREFIXES: &[&str] = &["/v1/", "/demo/", "/.well-known/"];
    const EXACT: &[&str] = &[
        "/v1",
        "/demo",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ];
    EXACT.contains(&path) || PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Which embedded file answers a GET of `path`, if any.
fn file_for(path: &str) -> Option<String> {
    if is_api_path(path) {
        return None;
    }
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|segment| segment == "..") {
        return None;
    }
    if !relative.is_empty() && !relative.ends_with('/') && Assets::get(relative).is_some() {
        return Some(relative.to_string());
    }
    let last = relative
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if last.contains('.') {
        // Names a file that does not exist: a 404, not an app page.
        return None;
    }
    let app = if relative == "admin" || relative.starts_with("admin/") {
        "admin/index.html"
    } else {
        "index.html"
    };
    Assets::get(app).is_some().then(|| app.to_string())
}

fn web_file(req: &Request) -> Option<Response> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let name = file_for(req.uri().path())?;
    let file = Assets::get(&name)?;
    Some(respond(&name, file, req.headers()))
}

fn respond(name: &str, file: rust_embed::EmbeddedFile, request_headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Vite names built assets by their content hash: they never change.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if name.ends_with(".html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; \
                 script-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'",
            ),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    let unchanged = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, Body::from(file.data.into_owned())).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_the_right_app_or_the_api() {
        assert_eq!(file_for("/").as_deref(), Some("index.html"));
        assert_eq!(
            file_for("/projects/7/invoices/new").as_deref(),
            Some("index.html")
        );
        assert_eq!(file_for("/admin").as_deref(), Some("admin/index.html"));
        assert_eq!(file_for("/admin/").as_deref(), Some("admin/index.html"));
        assert_eq!(
            file_for("/admin/users/alice").as_deref(),
            Some("admin/index.html")
        );
        assert_eq!(file_for("/administrator").as_deref(), Some("index.html"));
        for api in [
            "/v1/me/permissions",
            "/v1",
            "/demo/api/buy",
            "/healthz",
            "/openapi.json",
            "/.well-known/jwks.json",
        ] {
            assert_eq!(file_for(api), None, "{api}");
        }
        assert_eq!(file_for("/assets/missing-file.js"), None);
        assert_eq!(file_for("/../Cargo.toml"), None);
    }

    #[test]
    fn every_built_asset_is_embedded_with_a_type() {
        let names: Vec<String> = Assets::iter().map(|n| n.to_string()).collect();
        assert!(names.iter().any(|n| n == "index.html"), "{names:?}");
        assert!(names.iter().any(|n| n == "admin/index.html"), "{names:?}");
        for name in names.iter().filter(|n| n.starts_with("assets/")) {
            assert_ne!(content_type(name), "application/octet-stream", "{name}");
            assert_eq!(
                file_for(&format!("/{name}")).as_deref(),
                Some(name.as_str())
            );
        }
    }
}
