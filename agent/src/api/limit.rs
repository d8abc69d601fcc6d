//! Admission of agent API connections, decided before the TLS handshake: at most
//! [`MAX_CONNECTIONS`] at once, and per source address a token bucket of [`BURST`] connections
//! refilled at [`PER_SECOND`], so one host (with or without the token) cannot hold every slot
//! or make the issuer spend its time on handshakes. Pure: the accept loop owns one [`Limiter`]
//! and passes the time in; a refused connection is closed at once and counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one address may open back to back.
pub const BURST: f64 = 20.0;
/// Connections per second one address gets back.
pub const PER_SECOND: f64 = 5.0;
/// Addresses not seen for this long are forgotten (their bucket would be full anyway).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Whether a new connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// [`MAX_CONNECTIONS`] are being served.
    Busy,
    /// This address used up its bucket.
    TooFast,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The per-address buckets and the count of connections being served.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

impl Limiter {
    /// Decides a connection from `addr` at `now` while `open` connections are being served.
    pub fn admit(&mut self, addr: IpAddr, open: usize, now: Instant) -> Admit {
        self.sweep(now);
        let bucket = self.buckets.entry(addr).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Admit::TooFast;
        }
        if open >= MAX_CONNECTIONS {
            return Admit::Busy;
        }
        bucket.tokens -= 1.0;
        Admit::Yes
    }

    /// Forgets idle addresses, at most once per [`FORGET_AFTER`], so a scan of many source
    /// addresses cannot grow the map without bound.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < FORGET_AFTER)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < FORGET_AFTER);
    }

    /// Addresses being tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..BURST as usize {
            assert_eq!(l.admit(ip("10.0.0.9"), 0, t0), Admit::Yes, "{i}");
        }
        assert_eq!(l.admit(ip("10.0.0.9"), 0, t0), Admit::TooFast);
        // Others are not held up by it.
        assert_eq!(l.admit(ip("10.0.0.1"), 0, t0), Admit::Yes);
        // One second later: PER_SECOND more, not one more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..PER_SECOND as usize {
            assert_eq!(l.admit(ip("10.0.0.9"), 0, t1), Admit::Yes);
        }
        assert_eq!(l.admit(ip("10.0.0.9"), 0, t1), Admit::TooFast);
        // A long pause refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..BURST as usize {
            assert_eq!(l.admit(ip("10.0.0.9"), 0, t2), Admit::Yes);
        }
        assert_eq!(l.admit(ip("10.0.0.9"), 0, t2), Admit::TooFast);
    }

    #[test]
    fn the_connection_cap_holds_for_everyone_and_costs_no_token() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert_eq!(l.admit(ip("10.0.0.1"), MAX_CONNECTIONS, t0), Admit::Busy);
        assert_eq!(l.admit(ip("10.0.0.1"), MAX_CONNECTIONS - 1, t0), Admit::Yes);
        // The refused attempt took nothing from the bucket: BURST - 1 left.
        for _ in 1..BURST as usize {
            assert_eq!(l.admit(ip("10.0.0.1"), 0, t0), Admit::Yes);
        }
        assert_eq!(l.admit(ip("10.0.0.1"), 0, t0), Admit::TooFast);
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..1000u32 {
            l.admit(IpAddr::from(i.to_be_bytes()), 0, t0);
        }
        assert_eq!(l.tracked(), 1000);
        l.admit(ip("10.0.0.1"), 0, t0 + FORGET_AFTER * 2);
        assert_eq!(l.tracked(), 1);
    }
}
