//! A builder for configurations in tests and in the demo: loopback addresses, temporary state
//! directories, short lifetimes. It produces a [`Config`] that serialises to the same TOML an
//! operator writes, so multi-process tests exercise the real loading path.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, SizeText, DEFAULT_HEALTH_LISTEN, DEFAULT_METRICS_PORT};

/// Builds a [`Config`] field by field.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// A config for a node named `name` advertising `addr`, with gossip/API bound there too.
    pub fn new(name: &str, addr: IpAddr) -> Self {
        let config = Config {
            node_name: Some(name.to_owned()),
            ..Config::default()
        };
        Self { config }.advertise(addr)
    }
    /// Advertises `addr` and moves the health endpoint and etcd's metrics listener there, so
    /// that agents sharing one loopback interface (one address each) do not collide on
    /// 127.0.0.1.
    pub fn advertise(mut self, addr: IpAddr) -> Self {
        self.config.advertise_addr = Some(addr);
        self.config.health.listen = SocketAddr::new(addr, DEFAULT_HEALTH_LISTEN.port());
        self.config.etcd.metrics_listen =
            Some(SocketAddr::new(addr, DEFAULT_METRICS_PORT).to_string());
        self
    }
    pub fn token(mut self, token: &str) -> Self {
        self.config.token = Some(token.to_owned());
        self
    }
    pub fn seed(mut self, seed: bool) -> Self {
        self.config.seed = seed;
        self
    }
    pub fn bootstrap_expect(mut self, n: u32) -> Self {
        self.config.bootstrap_expect = n;
        self
    }
    pub fn join(mut self, targets: impl IntoIterator<Item = String>) -> Self {
        self.config.join = targets.into_iter().collect();
        self
    }
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = dir.into();
        self
    }
    pub fn etcd_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.etcd.binary = path.into();
        self
    }
    pub fn listen_localhost(mut self, yes: bool) -> Self {
        self.config.etcd.listen_localhost = yes;
        self
    }
    pub fn cert_validity(mut self, d: Duration) -> Self {
        self.config.pki.node_cert_validity = Some(d);
        self.config.pki.client_cert_validity = Some(d);
        self
    }
    pub fn ca_hash(mut self, pin: &str) -> Self {
        self.config.ca_hash = Some(pin.to_owned());
        self
    }
    pub fn remove_dead_after(mut self, d: Duration) -> Self {
        self.config.remove_dead_after = Some(d);
        self
    }
    /// `etcd.compaction_retention`.
    pub fn compaction_retention(mut self, d: Duration) -> Self {
        self.config.etcd.compaction_retention = Some(d);
        self
    }
    /// `etcd.quota`, written as in the config file ("64MiB").
    pub fn quota(mut self, size: &str) -> Self {
        self.config.etcd.quota = Some(SizeText::from(size));
        self
    }
    pub fn log_level(mut self, level: &str) -> Self {
        self.config.log.level = level.to_owned();
        self
    }
    /// Any other change.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }
    pub fn build(self) -> Config {
        self.config
    }
    /// The TOML text of the config.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip() {
        let b = ConfigBuilder::new("n1", "127.0.0.2".parse().unwrap())
            .token("qrt1_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
            .seed(true)
            .join(["127.0.0.1".to_string()])
            .cert_validity(Duration::from_secs(120))
            .listen_localhost(false)
            .compaction_retention(Duration::from_secs(5))
            .quota("64MiB");
        let text = b.to_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, b.build());
    }

    #[test]
    fn each_address_gets_its_own_listeners() {
        let c = ConfigBuilder::new("n1", "127.0.3.2".parse().unwrap()).build();
        assert_eq!(c.health.listen.to_string(), "127.0.3.2:7947");
        assert_eq!(c.etcd.metrics_listen.as_deref(), Some("127.0.3.2:2381"));
        let c = ConfigBuilder::new("n1", "127.0.3.2".parse().unwrap())
            .advertise("::1".parse().unwrap())
            .build();
        assert_eq!(c.advertise_addr, Some("::1".parse().unwrap()));
        assert_eq!(c.health.listen.to_string(), "[::1]:7947");
        assert_eq!(c.etcd.metrics_listen.as_deref(), Some("[::1]:2381"));
    }
}
