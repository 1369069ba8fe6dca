//! `parse_head`, the request-head parser of the direct event stream path (the one
//! HTTP parser permsync runs itself rather than hyper), on arbitrary bytes.
//!
//! A head is accepted only when it ends within `MAX_HEAD` bytes, carries no body
//! (no `Transfer-Encoding`, no `Content-Length` but 0) and at most `MAX_HEADERS`
//! lines; bytes after it change nothing; no shorter prefix of it is accepted; and
//! every refusal is a 4xx.

#![no_main]

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, Request, Version};
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use permsync_server::fuzzing::{parse_head, MAX_HEAD, MAX_HEADERS};

fuzz_target!(|data: &[u8]| {
    let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
    match parse_head(data, remote) {
        Ok(None) => {}
        Err(refusal) => {
            let status = refusal.into_response().status();
            assert!(status.is_client_error(), "refused with {status}");
        }
        Ok(Some((request, version))) => {
            let end = head_end(data).expect("an accepted head has an end");
            assert!(end <= MAX_HEAD, "accepted a head of {end} bytes");
            assert!(matches!(version, Version::HTTP_10 | Version::HTTP_11));
            assert_eq!(request.version(), version);
            assert!(request.headers().len() <= MAX_HEADERS);
            assert!(!request.headers().contains_key(header::TRANSFER_ENCODING));
            for length in request.headers().get_all(header::CONTENT_LENGTH) {
                assert_eq!(length.as_bytes().trim_ascii(), b"0");
            }
            assert_eq!(
                request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0),
                Some(remote)
            );
            assert!(
                data.starts_with(request.method().as_str().as_bytes())
                    || data.starts_with(b"\r\n")
                    || data.starts_with(b"\n")
            );

            // What follows the head (a pipelined request, stray bytes) is not read.
            let mut longer = data[..end].to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            let (again, again_version) = parse_head(&longer, remote)
                .expect("the same head")
                .expect("complete");
            assert_eq!(again_version, version);
            assert_same(&request, &again);

            // A head is complete only at its end.
            for cut in [end - 1, end / 2] {
                assert!(
                    !matches!(parse_head(&data[..cut], remote), Ok(Some(_))),
                    "complete at {cut} of {end}"
                );
            }
        }
    }
});

/// The length of the head: through the first empty line (httparse also ends lines
/// with a bare `\n`), leading empty lines aside.
fn head_end(data: &[u8]) -> Option<usize> {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let mut i = start;
    while i < data.len() {
        if data[i] == b'\n' {
            match data.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if data.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn assert_same<B>(a: &Request<B>, b: &Request<B>) {
    assert_eq!(a.method(), b.method());
    assert_eq!(a.uri(), b.uri());
    assert_eq!(a.headers(), b.headers());
}
