//! A minimal HTTP/1.1 client for loopback services (the runner's control API, the local
//! server): one request per connection, `Connection: close`, fixed-length or chunked
//! responses. Loopback calls need no TLS, proxies or pooling, and a client crate would add
//! more compile time to every `cargo xtask` than this whole module.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("parsing the JSON response `{}`", self.text()))
    }
}

/// A request body and its content type.
pub struct Body<'a> {
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    request(addr, "GET", path, None, timeout)
}

pub fn post(addr: SocketAddr, path: &str, body: Body<'_>, timeout: Duration) -> Result<Response> {
    request(addr, "POST", path, Some(body), timeout)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Body<'_>>,
    timeout: Duration,
) -> Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .context("setting a read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .context("setting a write timeout")?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    let bytes = body.as_ref().map(|b| b.bytes).unwrap_or_default();
    if let Some(body) = &body {
        head.push_str(&format!("Content-Type: {}\r\n", body.content_type));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(bytes));
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    // A server may refuse a request before reading all of it (413 on its Content-Length) and
    // close the connection, which breaks our write: its answer is still the one to report.
    if let Ok(response) = parse_response(&raw) {
        return Ok(response);
    }
    sent.with_context(|| format!("sending {method} {path} to {addr}"))?;
    read.with_context(|| format!("reading the answer to {method} {path} from {addr}"))?;
    parse_response(&raw)
        .with_context(|| format!("reading the answer to {method} {path} from {addr}"))
}

/// Parses a complete HTTP/1.x response as read until the server closed the connection.
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "the response ended before its headers did ({} bytes)",
            raw.len()
        );
    };
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("malformed status line `{status_line}`"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("malformed Content-Length `{value}`"))?,
            );
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(length) = length {
        if rest.len() < length {
            bail!("the body ended after {} of {length} bytes", rest.len());
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line is cut off")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("malformed chunk size `{size_text}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("a chunk is cut off");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `GET` of an `http://host:port/path` URL: Temporal's HTTP API may be on another machine.
pub fn get_url(url: &str, timeout: Duration) -> Result<Response> {
    let (authority, path) = split_http_url(url)?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    get(addr, path, timeout)
}

/// `http://host:port/path` → (`host:port`, `/path`).
pub fn split_http_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}` is not an http:// URL"))?;
    let slash = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(slash);
    if !authority.contains(':') {
        bail!("`{url}` names no port");
    }
    Ok((authority, if path.is_empty() { "/" } else { path }))
}

/// `GET /healthz` of a service on this machine's loopback (the server, or the runner through
/// host networking or its published port): its JSON when it answers 200.
pub fn healthz(port: u16, timeout: Duration) -> Result<serde_json::Value> {
    let addr = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    let response = get(addr, "/healthz", timeout)?;
    if response.status != 200 {
        bail!(
            "{addr}/healthz answered {}: {}",
            response.status,
            response.text()
        );
    }
    response.json()
}

/// A `multipart/form-data` body with one file part, and its content type.
pub fn multipart_file(
    boundary: &str,
    field: &str,
    filename: &str,
    contents: &[u8],
) -> (String, Vec<u8>) {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(contents);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_length_response() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json().unwrap()["ok"], true);
    }

    #[test]
    fn chunked_response() {
        let raw = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(raw).unwrap(),
            Response {
                status: 201,
                body: b"abcdefg".to_vec()
            }
        );
    }

    #[test]
    fn truncated_responses_are_errors() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn http_urls_split_into_authority_and_path() {
        assert_eq!(
            split_http_url("http://127.0.0.1:7243/api/v1/x").unwrap(),
            ("127.0.0.1:7243", "/api/v1/x")
        );
        assert_eq!(split_http_url("http://t:1").unwrap(), ("t:1", "/"));
        assert!(split_http_url("https://t:1/").is_err());
        assert!(split_http_url("http://t/").is_err());
    }

    #[test]
    fn multipart_body_shape() {
        let (content_type, body) = multipart_file("b0", "file", "smoke/x.txt", b"hi");
        assert_eq!(content_type, "multipart/form-data; boundary=b0");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"smoke/x.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhi\r\n--b0--\r\n"
        );
    }
}
