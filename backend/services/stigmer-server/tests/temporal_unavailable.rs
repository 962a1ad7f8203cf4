//! A Temporal that answers but is not ready. While `temporal server start-dev` comes up, its
//! HTTP API can answer `503 {"code":14,"message":"Frontend is not healthy yet"}` (gRPC
//! UNAVAILABLE) for a few milliseconds: one cold start in six, hit with start requests in a
//! loop, answered so before its first 200. A cluster under load or in a rolling restart
//! answers the same. The server must treat that as it treats a closed port: wait and retry.
//!
//! This fails until `executions::Executions::watch` (through `temporal.rs`) treats UNAVAILABLE
//! as `Unreachable`: today any answer other than success, 404 or 409 fails the execution for
//! good, even when its workflow already runs in Temporal.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use common::{Server, TestDir};

/// A loopback HTTP endpoint that answers as a Temporal dev server does in the milliseconds
/// before its frontend is healthy (captured from `temporal server start-dev` 1.9.1 hit with a
/// start request while it came up): 503 with gRPC code 14, UNAVAILABLE. With `starts`, a
/// start (`POST`) is accepted and only the history long poll (`GET`) meets the 503.
fn temporal_not_healthy_yet(starts: bool) -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a loopback port")?;
    let port = listener.local_addr().context("read the bound port")?.port();
    // Lives as long as the test process; it holds nothing but the port.
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let _ = answer(stream, starts);
        }
    });
    Ok(port)
}

fn answer(mut stream: TcpStream, starts: bool) -> std::io::Result<()> {
    // The whole request is read first, so that the client sees an answer and not a reset.
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    reader.read_exact(&mut vec![0; length])?;
    let (status, body) = if starts && request_line.starts_with("POST ") {
        ("200 OK", r#"{"runId":"fake-run","started":true}"#)
    } else {
        (
            "503 Service Unavailable",
            r#"{"code":14,"message":"Frontend is not healthy yet"}"#,
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// UNAVAILABLE is gRPC's word for "try again later"
/// (https://grpc.github.io/grpc/core/md_doc_statuscodes.html): a Temporal that answers it is as
/// absent as one that does not answer, and the execution must wait for it, not fail; least of
/// all when its workflow already runs.
#[test]
fn a_temporal_that_is_not_healthy_yet_is_waited_for() -> Result<()> {
    for starts in [false, true] {
        let dir = TestDir::new("temporal-unavailable")?;
        let port = temporal_not_healthy_yet(starts)?;
        let server = Server::start(&dir.path, &format!("http://127.0.0.1:{port}"), &[])?;
        let id = server.create_execution("echo", "hi")?;
        // Long enough for the watcher's first attempts (100 ms, 200 ms, 400 ms apart).
        std::thread::sleep(Duration::from_secs(1));
        let execution = server.execution(&id)?;
        assert_eq!(
            (&execution["status"], &execution["error"]),
            (&json!("queued"), &Value::Null),
            "start accepted: {starts}; {execution}"
        );
    }
    Ok(())
}
