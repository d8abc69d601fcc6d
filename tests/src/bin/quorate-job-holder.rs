//! quorate-job-holder: takes a cluster-job lock with the quorate library and holds it until
//! killed, so that tests can kill a holder process mid-job.
//!
//!   quorate-job-holder PKI_DIR NODE JOB ENDPOINT...
//!
//! Prints `acquired <lease id>` once it holds the lock, `lost: <reason>` (and exits 3) if the
//! lock is lost. Retries for 60 s while the lock is busy.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quorate::etcd::client::ClientTls;
use quorate::jobs::{Acquired, Job, JobLocks};
use quorate::pki::PkiStore;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pki, node, job, endpoints @ ..] = args.as_slice() else {
        bail!("usage: quorate-job-holder PKI_DIR NODE JOB ENDPOINT...");
    };
    if endpoints.is_empty() {
        bail!("usage: quorate-job-holder PKI_DIR NODE JOB ENDPOINT...");
    }
    let job: Job = job.parse()?;
    let tls = ClientTls::from_store(&PkiStore::new(pki))
        .with_context(|| format!("no node certificate in {pki}"))?;
    let locks = JobLocks::new(node.as_str(), endpoints.to_vec(), tls);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let lock = loop {
            match locks.try_acquire(job).await {
                Ok(Acquired::Held(lock)) => break lock,
                Ok(Acquired::Busy(holder)) if Instant::now() < deadline => {
                    eprintln!("busy: held by {holder}");
                }
                Ok(Acquired::Busy(holder)) => bail!("still held by {holder} after 60 s"),
                Err(e) if Instant::now() < deadline => eprintln!("{e}"),
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!("acquired {}", lock.lease_id());
        std::io::stdout().flush()?;
        lock.lost().await;
        let reason = lock.status().borrow().lost.clone().unwrap_or_default();
        println!("lost: {reason}");
        std::process::exit(3);
    })
}
