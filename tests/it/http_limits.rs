//! Slow and idle clients cannot hold the server: they are cut off, and it keeps answering.
//!
//! The timeouts are configured short; the waits below are only safety nets for a broken server,
//! never measurements.

use crate::support;

use std::time::Duration;

use reqwest::StatusCode;
use support::app::{spawn_sqlite, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any configured timeout here: reaching it means the server never let go.
const SAFETY_NET: Duration = Duration::from_secs(30);

/// Everything the server sends until it closes the connection.
async fn read_until_closed(socket: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(SAFETY_NET, async {
        let mut buf = [0u8; 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a stalled connection open");
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn slowloris_sockets_are_closed_and_the_server_still_answers() {
    let app = spawn_sqlite(test_config(&[
        ("HTTP_HEADER_READ_TIMEOUT", "1s"),
        ("HTTP_MAX_CONNECTIONS", "4"),
    ]))
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    // As many half-sent requests as the server takes connections: without a header timeout they
    // would hold every slot for ever.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket
            .write_all(b"POST /webhooks/twilio/sms HTTP/1.1\r\nHost: onboard\r\nX-Slow: a")
            .await
            .unwrap();
        slow.push(socket);
    }
    // A fifth client waits for a slot, which only a closed slow socket can free.
    let normal = app.http.get(format!("{}/healthz", app.address)).send();
    let response = tokio::time::timeout(SAFETY_NET, normal)
        .await
        .expect("the server answered again")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for mut socket in slow {
        let answer = read_until_closed(&mut socket).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn a_connection_idle_mid_body_is_closed_before_the_request_timeout() {
    let app = spawn_sqlite(test_config(&[("HTTP_IDLE_TIMEOUT", "1s")])).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    socket
        .write_all(
            b"POST /webhooks/twilio/sms HTTP/1.1\r\nHost: onboard\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
              MessageSid=SM1",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut socket).await;
    // Without the idle timeout the request would wait for its body until the 12 s request timeout
    // answered 503; idle, the connection is given up and the body read fails.
    assert!(!answer.contains(" 503 "), "{answer}");
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_hand_finish_then_stops_listening() {
    use std::sync::Arc;
    use tokio::sync::{Notify, oneshot};

    let started = Arc::new(Notify::new());
    let router = axum::Router::new().route(
        "/slow",
        axum::routing::get({
            let started = started.clone();
            move || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(200)).await;
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(onboard::http::serve_router(
        listener,
        router,
        onboard::config::HttpLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    // reqwest is built without a default TLS provider; the server's own start installs one.
    onboard::tls::install_crypto_provider();
    let request = tokio::spawn(reqwest::get(format!("http://{address}/slow")));
    tokio::time::timeout(SAFETY_NET, started.notified())
        .await
        .expect("the request reached the handler");
    stop.send(()).unwrap();

    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(SAFETY_NET, server)
        .await
        .expect("the server returned after its last connection closed")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(address).await.is_err(),
        "still listening"
    );
}
