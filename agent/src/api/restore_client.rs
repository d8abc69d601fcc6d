//! Client side of the restore endpoints (see [`super::restore`]): push a signed plan to a
//! member, fetch one from a peer, and stream a snapshot to a file while checking its sha256
//! and size against the plan. The peer's TLS certificate is checked against this agent's CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ring::digest::{Context, SHA256};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::client::ApiClientError;
use super::proof::{self, PROOF_HEADER};
use super::restore::{PLAN_PATH, SNAPSHOT_PATH};
use crate::pki::client_config_with_ca;
use crate::restore::SignedPlan;
use crate::snapshot::remote::OnBytes;

const MAX_ANSWER: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A snapshot may be large: the whole transfer gets this long.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

async fn connect(addr: SocketAddr, ca_pem: &str) -> Result<TlsStream<TcpStream>, ApiClientError> {
    let config =
        client_config_with_ca(ca_pem).map_err(|e| ApiClientError::Config(e.to_string()))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ApiClientError::Connect { addr, source })?;
    TlsConnector::from(Arc::clone(&config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|source| ApiClientError::Tls { addr, source })
}

fn refused(addr: SocketAddr, status: u16, body: &[u8]) -> ApiClientError {
    let message = serde_json::from_slice::<super::wire::ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    ApiClientError::Refused {
        addr,
        status,
        message,
    }
}

async fn small_request(
    addr: SocketAddr,
    ca_pem: &str,
    request: hyper::Request<Full<Bytes>>,
) -> Result<Bytes, ApiClientError> {
    let go = async {
        let tls = connect(addr, ca_pem).await?;
        let (status, body) = crate::http1::request(tls, request, MAX_ANSWER)
            .await
            .map_err(|message| ApiClientError::Http { addr, message })?;
        if !(200..300).contains(&status) {
            return Err(refused(addr, status, &body));
        }
        Ok(body)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, go)
        .await
        .map_err(|_| ApiClientError::Timeout {
            addr,
            timeout: REQUEST_TIMEOUT,
        })?
}

/// Pushes `signed` to the agent at `addr`; returns its answer.
pub async fn push_plan(
    addr: SocketAddr,
    ca_pem: &str,
    proof_key: &[u8; 32],
    signed: &SignedPlan,
) -> Result<String, ApiClientError> {
    let http = |message: String| ApiClientError::Http { addr, message };
    let body = serde_json::to_vec(signed).map_err(|e| http(e.to_string()))?;
    let request = hyper::Request::post(PLAN_PATH)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(PROOF_HEADER, proof::sign(proof_key, &body))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| http(e.to_string()))?;
    let answer = small_request(addr, ca_pem, request).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Fetches the newest restore plan the agent at `addr` holds (not yet verified).
pub async fn fetch_plan(
    addr: SocketAddr,
    ca_pem: &str,
    proof_key: &[u8; 32],
) -> Result<SignedPlan, ApiClientError> {
    let http = |message: String| ApiClientError::Http { addr, message };
    let request = hyper::Request::get(PLAN_PATH)
        .header(hyper::header::HOST, addr.to_string())
        .header(PROOF_HEADER, proof::sign(proof_key, PLAN_PATH.as_bytes()))
        .body(Full::new(Bytes::new()))
        .map_err(|e| http(e.to_string()))?;
    let body = small_request(addr, ca_pem, request).await?;
    serde_json::from_slice(&body).map_err(|e| http(format!("malformed plan: {e}")))
}

/// Streams snapshot `sha256` from the agent at `addr` into `dest` (a new file), checking its
/// size and sha256; a mismatch removes the partial file and is an error. `on_bytes(done,
/// total)` follows the bytes as they arrive.
pub async fn fetch_snapshot(
    addr: SocketAddr,
    ca_pem: &str,
    proof_key: &[u8; 32],
    sha256: &str,
    size: u64,
    dest: &Path,
    on_bytes: &OnBytes<'_>,
) -> Result<(), ApiClientError> {
    let go = fetch_into(addr, ca_pem, proof_key, sha256, size, dest, on_bytes);
    let result = tokio::time::timeout(TRANSFER_TIMEOUT, go)
        .await
        .unwrap_or(Err(ApiClientError::Timeout {
            addr,
            timeout: TRANSFER_TIMEOUT,
        }));
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

async fn fetch_into(
    addr: SocketAddr,
    ca_pem: &str,
    proof_key: &[u8; 32],
    sha256: &str,
    size: u64,
    dest: &Path,
    on_bytes: &OnBytes<'_>,
) -> Result<(), ApiClientError> {
    let http = |message: String| ApiClientError::Http { addr, message };
    let path = format!("{SNAPSHOT_PATH}{sha256}");
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, addr.to_string())
        .header(PROOF_HEADER, proof::sign(proof_key, path.as_bytes()))
        .body(Full::new(Bytes::new()))
        .map_err(|e| http(e.to_string()))?;
    let tls = connect(addr, ca_pem).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            let bytes = http_body_util::Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default();
            return Err(refused(addr, status, &bytes));
        }
        // The snapshot holds every key: owner-only from the first byte.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dest)
            .await
            .map_err(|e| http(format!("cannot create {}: {e}", dest.display())))?;
        let mut hash = Context::new(&SHA256);
        let mut got: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            got += data.len() as u64;
            if got > size {
                return Err(http(format!(
                    "the snapshot is longer than the plan's {size} bytes"
                )));
            }
            hash.update(&data);
            file.write_all(&data)
                .await
                .map_err(|e| http(format!("cannot write {}: {e}", dest.display())))?;
            on_bytes(got, Some(size));
        }
        file.sync_all()
            .await
            .map_err(|e| http(format!("cannot sync {}: {e}", dest.display())))?;
        let computed = hex::encode(hash.finish().as_ref());
        if got != size || computed != sha256 {
            return Err(ApiClientError::Verify {
                addr,
                message: format!(
                    "the snapshot received ({got} bytes, sha256 {computed}) is not the plan's \
                     ({size} bytes, sha256 {sha256})"
                ),
            });
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}
