//! What a server in camouflage answers anyone who does not name its entry secret: an ordinary
//! web site, as a fresh nginx serves it (its default page at `/`, its 404 and 405 pages
//! elsewhere, `Server: nginx`). So a prober that asks for `/v1/ws`, `/healthz` or anything
//! else learns nothing about Chapar; only a client given the secret path (inside TLS, so no
//! observer sees it) reaches the protocol.
//!
//! This is a first approximation: the pages and headers are nginx's, but the header order,
//! keep-alive and close behaviour and the TLS handshake are still this server's own (the
//! censor simulator's probe comparison with a real nginx is not built yet).

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;

/// nginx's default page.
const WELCOME: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href=\"http://nginx.org/\">nginx.org</a>.<br/>
Commercial support is available at
<a href=\"http://nginx.com/\">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
";

/// nginx's reason phrase for `status` (its own for 405).
fn reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "Not Allowed",
        other => other.canonical_reason().unwrap_or_default(),
    }
}

/// nginx's error page for `status`.
fn error_page(status: StatusCode) -> String {
    let title = format!("{} {}", status.as_u16(), reason(status));
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

/// The cover site's answer to any request outside the entry path.
pub(super) async fn page(method: Method, uri: Uri) -> Response {
    let is_read = method == Method::GET || method == Method::HEAD;
    let at_root = matches!(uri.path(), "/" | "/index.html");
    let (status, body) = match (is_read, at_root) {
        (true, true) => (StatusCode::OK, WELCOME.to_owned()),
        // nginx answers other methods on a static file with 405, and 404 where there is none.
        (false, true) => (
            StatusCode::METHOD_NOT_ALLOWED,
            error_page(StatusCode::METHOD_NOT_ALLOWED),
        ),
        _ => (StatusCode::NOT_FOUND, error_page(StatusCode::NOT_FOUND)),
    };
    let length = body.len();
    let mut response = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    });
    *response.status_mut() = status;
    response
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            reason(status).as_bytes(),
        ));
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("nginx"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if status == StatusCode::OK {
        // The default page's own, as a fresh install serves it.
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Tue, 16 Apr 2024 14:41:00 GMT"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("\"661e8e3c-267\""));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    response
}
