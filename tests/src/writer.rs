//! A writer that runs during a fault: it puts numbered keys through etcdctl against every
//! member's endpoint (etcdctl fails over between them) and records each key etcd
//! acknowledged, so that after the event every acknowledged key can be read back.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cluster::ClientCert;

/// The writer thread; [`Writer::stop`] ends it and returns the acknowledged keys.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing `<prefix><n>` keys to `endpoints` with `cert`, one every `gap`.
    pub fn start(endpoints: Vec<String>, cert: &ClientCert, prefix: &str, gap: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(0));
        let (ca, crt, key) = (cert.ca.clone(), cert.cert.clone(), cert.key.clone());
        let prefix = prefix.to_owned();
        let thread = {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("{prefix}{n:06}");
                    let ok = Command::new(crate::etcdctl_bin())
                        .env("ETCDCTL_API", "3")
                        .arg(format!("--endpoints={}", endpoints.join(",")))
                        .arg("--command-timeout=3s")
                        .arg("--dial-timeout=2s")
                        .arg(format!("--cacert={}", ca.display()))
                        .arg(format!("--cert={}", crt.display()))
                        .arg(format!("--key={}", key.display()))
                        .args(["put", &k, "v"])
                        .output()
                        .is_ok_and(|o| o.status.success());
                    if ok {
                        acked.lock().expect("acked").push(k);
                    } else {
                        *failed.lock().expect("failed") += 1;
                    }
                    n += 1;
                    std::thread::sleep(gap);
                }
            })
        };
        Self {
            stop,
            acked,
            failed,
            thread: Some(thread),
        }
    }

    /// Keys acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    /// Stops the writer; returns (acknowledged keys, failed puts).
    pub fn stop(mut self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("acked"));
        let failed = *self.failed.lock().expect("failed");
        (acked, failed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
