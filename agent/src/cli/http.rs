//! A GET on the local health endpoint (plain HTTP on loopback).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpStream;

const MAX_BODY: usize = 4 * 1024 * 1024;

/// GETs `path` from `addr`; returns the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let fetch = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, body) = crate::http1::request(tcp, request, MAX_BODY).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| "timed out".to_owned())?
}
