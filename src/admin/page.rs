//! `GET /`: the status page for people, one self-contained HTML file that polls
//! `/status` from the browser. Nothing is rendered here: the server only serves it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};

/// The page, HTML with inline CSS and JavaScript.
const PAGE: &str = include_str!("page.html");

/// Many Jenkins hosts have no internet access: the policy makes the browser refuse
/// any asset from elsewhere, so a stray external link would show up at once. Inline
/// script and style are the page itself; data is inserted as text, never as markup.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

pub fn response() -> Response<Full<Bytes>> {
    let mut response = super::respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE.as_bytes().to_vec(),
    );
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A new build of the daemon may ship a new page.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
