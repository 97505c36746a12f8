//! The delay link: bytes arrive whole, in order, and no sooner than the delay in each direction.

mod common;

use std::time::Duration;

use common::within;
use runtime::lab::delay::DelayLink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_through_the_link_takes_twice_its_delay_and_keeps_every_byte() {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let (mut socket, _) = echo.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => socket.write_all(&buf[..n]).await.expect("echo"),
            }
        }
    });
    let delay = Duration::from_millis(100);
    let link = DelayLink::bind("127.0.0.1:0", delay).await.expect("link");
    link.connect_to(&echo_addr);
    let mut client = tokio::net::TcpStream::connect(link.addr())
        .await
        .expect("connect");
    let message: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let started = tokio::time::Instant::now();
    client.write_all(&message).await.expect("send");
    let mut back = vec![0u8; message.len()];
    within("the echo", client.read_exact(&mut back))
        .await
        .expect("read back");
    let took = started.elapsed();
    assert_eq!(back, message, "bytes lost or reordered");
    assert!(
        took >= 2 * delay,
        "a round trip took {took:?}, under twice {delay:?}"
    );
}
