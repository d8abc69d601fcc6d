//! The gossip task: the single owner of the Foca instance, the UDP socket and foca's timers.
//! One loop selects over shutdown, due timers, commands and datagrams; after each event it
//! drains foca's runtime (send, schedule, notify), takes in new broadcasts and republishes the
//! membership view if it changed. Datagrams are opened (authenticated) before foca sees them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::broadcast::{encode, Broadcast, Handler, NodeMeta};
use super::compat::Compat;
use super::directory::{self, AnswerRate, ClientMessage, CLIENT_VERSION};
use super::envelope::{Envelope, OpenError, OVERHEAD, STAMPED_VERSION};
use super::seals::Seals;
use super::timers::TimerQueue;
use super::view::{build_view, GossipView};
use super::NodeId;
use crate::liveness::Heartbeat;
use crate::metrics::Counters;
use crate::plan::Plan;

/// Largest datagram on the wire (foca's LAN default); foca gets this minus the envelope.
const MAX_DATAGRAM: usize = 1400;
/// How often an agent re-disseminates its metadata and plan, so late joiners and lossy links
/// converge without waiting for membership changes.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long metadata outlives its member in foca's list (see `GossipTask::prune`).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Plans remembered from gossip (normally one; more means a conflict to report).
const MAX_PLANS: usize = 8;

/// What the gossip task needs to start.
pub struct GossipSettings {
    pub identity: NodeId,
    pub bind: SocketAddr,
    /// The join tokens in force (see [`crate::keyring`]).
    pub keys: crate::keyring::TokenKeys,
    pub cluster_size: u32,
}

impl GossipSettings {
    /// Gossip for this node: its identity with the next incarnation from the state directory,
    /// its bind address, the join tokens.
    pub fn for_node(settings: &crate::config::Settings) -> Self {
        Self {
            identity: NodeId::new(
                &settings.name,
                settings.gossip_advertise(),
                super::next_bump(&settings.state_dir),
            ),
            bind: settings.gossip_bind(),
            keys: settings.token.clone(),
            cluster_size: settings.bootstrap_expect,
        }
    }
}

/// What the gossip task needs to answer client-mode agents (see [`super::directory`]).
pub struct ClientDesk {
    /// The client token's keys, as the members' follower reads them.
    pub client_keys: watch::Receiver<Option<crate::client_token::ClientKeys>>,
    /// This agent's etcd, whose member list the answers carry.
    pub health: watch::Receiver<crate::etcd::EtcdHealth>,
    /// The clients this member answered lately, for its status.
    pub seen: watch::Sender<Vec<directory::SeenClient>>,
}

/// Requests to the gossip task.
#[derive(Debug)]
pub enum GossipCommand {
    /// Replace this agent's metadata (the task assigns the version) and disseminate it.
    SetMeta(NodeMeta),
    /// Disseminate a plan (this agent holds it).
    PublishPlan(Plan),
    /// Announce to these addresses (join targets, remembered peers).
    AnnounceTo(Vec<SocketAddr>),
}

/// Gossip start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("cannot bind gossip socket {addr}/udp: {source}. Fix: free the port or change ports.gossip / bind_addr")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

type AgentFoca = Foca<NodeId, PostcardCodec, StdRng, Handler>;

/// foca settings for a LAN cluster of `size`, with an envelope-sized packet limit.
fn foca_config(size: u32) -> foca::Config {
    let mut config = foca::Config::new_lan(NonZeroU32::new(size.max(3)).unwrap_or(NonZeroU32::MIN));
    config.max_packet_size =
        std::num::NonZeroUsize::new(MAX_DATAGRAM - OVERHEAD).unwrap_or(config.max_packet_size);
    // Small clusters: send each update to more members than log(n) so that metadata reaches
    // everyone in one round even when a datagram is lost.
    config.max_transmissions = std::num::NonZeroU8::new(8).unwrap_or(config.max_transmissions);
    // Reach restarted members quickly (default 65 s).
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN),
    });
    // Forget down members after an hour; restarted agents come back with a higher bump anyway.
    config.remove_down_after = Some(Duration::from_secs(3600));
    config
}

/// The gossip task's state.
pub struct GossipTask {
    socket: UdpSocket,
    foca: AgentFoca,
    runtime: AccumulatingRuntime<NodeId>,
    timers: TimerQueue,
    /// Every accepted join token's envelopes, rebuilt when the ring changes.
    seals: Seals,
    /// The ring in force; a fixed ring's sender is gone (then it is no longer watched).
    ring: watch::Receiver<Arc<crate::keyring::Keyring>>,
    compat: Compat,
    last_stale_warning: Option<std::time::Instant>,
    /// When a name with metadata was first seen without a gossip member (see `prune`).
    absent_since: HashMap<String, Instant>,
    desk: Option<ClientDesk>,
    answer_rate: AnswerRate,
    clients_seen: directory::ClientsSeen,
    inbox: std_mpsc::Receiver<Broadcast>,
    metas: HashMap<String, NodeMeta>,
    plans: Vec<Plan>,
    own_meta: Option<NodeMeta>,
    own_plan: Option<Plan>,
    start_ms: u64,
    seq: u64,
    rebroadcast: bool,
    view: watch::Sender<GossipView>,
    counters: Arc<Counters>,
    heartbeat: Heartbeat,
}

impl GossipTask {
    /// Binds the socket (so a port conflict fails the agent at start) and builds the task.
    pub async fn bind(
        settings: GossipSettings,
        view: watch::Sender<GossipView>,
        counters: Arc<Counters>,
        heartbeat: Heartbeat,
    ) -> Result<Self, GossipError> {
        let socket = UdpSocket::bind(settings.bind)
            .await
            .map_err(|source| GossipError::Bind {
                addr: settings.bind,
                source,
            })?;
        let (inbox_tx, inbox) = std_mpsc::channel();
        let handler = Handler::new(&settings.identity.name, inbox_tx);
        let start_ms = settings.identity.bump;
        let foca = Foca::with_custom_broadcast(
            settings.identity,
            foca_config(settings.cluster_size),
            rand::make_rng(),
            PostcardCodec,
            handler,
        );
        Ok(Self {
            socket,
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: TimerQueue::default(),
            seals: Seals::new(&settings.keys.ring()),
            ring: settings.keys.subscribe(),
            compat: Compat::default(),
            last_stale_warning: None,
            absent_since: HashMap::new(),
            desk: None,
            answer_rate: AnswerRate::default(),
            clients_seen: directory::ClientsSeen::default(),
            inbox,
            metas: HashMap::new(),
            plans: Vec::new(),
            own_meta: None,
            own_plan: None,
            start_ms,
            seq: 0,
            rebroadcast: false,
            view,
            counters,
            heartbeat,
        })
    }

    /// Answers client-mode agents' directory asks (members only).
    pub fn with_client_desk(mut self, desk: ClientDesk) -> Self {
        self.desk = Some(desk);
        self
    }

    /// Runs until `cancel`, then leaves the cluster.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<GossipCommand>,
        cancel: CancellationToken,
    ) {
        let mut buf = vec![0u8; 2 * MAX_DATAGRAM];
        let mut ring_open = true;
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .timers
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = sleep_until(deadline) => self.fire_timers(),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    // A datagram that fails authentication changed nothing: no settling, no
                    // view rebuilt (a flood costs one AEAD check per datagram).
                    Ok((len, from)) => if !self.handle_datagram(&buf[..len], from) {
                        continue;
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                        continue;
                    }
                },
                changed = self.ring.changed(), if ring_open => {
                    match changed {
                        Ok(()) => {
                            let now = self.ring.borrow_and_update().clone();
                            self.seals = Seals::new(&now);
                            tracing::debug!(ring = ?now, "gossip uses the join tokens now in force");
                        }
                        Err(_) => ring_open = false,
                    }
                    continue;
                }
                _ = refresh.tick() => {
                    self.heartbeat.beat();
                    self.rebroadcast = true;
                }
            }
            self.settle().await;
        }
        self.leave().await;
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_due(Instant::now()) {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "foca timer");
            }
        }
    }

    fn handle_command(&mut self, cmd: GossipCommand) {
        match cmd {
            GossipCommand::SetMeta(meta) => {
                self.own_meta = Some(meta);
                self.rebroadcast = true;
            }
            GossipCommand::PublishPlan(plan) => {
                self.own_plan = Some(plan);
                self.rebroadcast = true;
            }
            GossipCommand::AnnounceTo(addrs) => {
                let me = self.foca.identity().addr;
                for addr in addrs.into_iter().filter(|a| *a != me) {
                    if let Err(e) = self
                        .foca
                        .announce(NodeId::placeholder(addr), &mut self.runtime)
                    {
                        tracing::debug!(error = %e, %addr, "announce");
                    }
                }
            }
        }
    }

    /// Seals a foca datagram for `dst` in the envelope it understands.
    fn seal_for(&self, dst: SocketAddr, data: &[u8]) -> Vec<u8> {
        self.seals.seal(self.compat.send_stamped(dst), data)
    }

    /// Hands an authenticated datagram to foca; false when it was dropped before foca.
    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) -> bool {
        Counters::inc(&self.counters.gossip_datagrams_received);
        if datagram.first() == Some(&CLIENT_VERSION) {
            self.answer_client(datagram, from);
            return false;
        }
        let stamped = datagram.first() == Some(&STAMPED_VERSION);
        let opened = self.seals.open(stamped, datagram);
        let payload = match opened {
            Ok(_) if !stamped && !self.compat.accepts_legacy() => {
                Counters::inc(&self.counters.gossip_dropped_stale);
                self.warn_stale(from, "it is in the format of an older quorate (every peer speaks the new one): upgrade quorate on that host");
                return false;
            }
            Ok(p) => p,
            Err(OpenError::Stale { age_secs }) => {
                Counters::inc(&self.counters.gossip_dropped_stale);
                self.warn_stale(from, &format!("it was sent {age_secs} s away from this host's clock: a replay, or clocks apart (synchronise them with NTP)"));
                return false;
            }
            Err(e) => {
                Counters::inc(&self.counters.gossip_dropped_unauthenticated);
                // Log at debug only: an attacker must not be able to flood the log.
                tracing::debug!(%from, error = %e, "dropped gossip datagram");
                if e == OpenError::Unauthenticated {
                    tracing::trace!(%from, "wrong join token or tampered datagram");
                }
                return false;
            }
        };
        self.compat.heard(from, stamped);
        if let Err(e) = self.foca.handle_data(&payload, &mut self.runtime) {
            match e {
                foca::Error::DataFromOurselves => {}
                e => {
                    Counters::inc(&self.counters.gossip_dropped_malformed);
                    tracing::debug!(%from, error = %e, "foca rejected datagram");
                }
            }
        }
        true
    }

    /// Says, at most once a minute, why an authentic datagram was dropped (a peer with a
    /// skewed clock or an old release is the operator's to fix; replays are an attack).
    fn warn_stale(&mut self, from: SocketAddr, why: &str) {
        let now = std::time::Instant::now();
        if self
            .last_stale_warning
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            tracing::debug!(%from, "dropped an authentic gossip datagram: {why}");
            return;
        }
        self.last_stale_warning = Some(now);
        tracing::warn!(%from, "dropped an authentic gossip datagram: {why}");
    }

    /// Forgets the metadata of names that have had no gossip member for [`FORGET_AFTER`]
    /// (foca forgets a down member after an hour): a member that left leaves no ghost behind.
    fn prune(&mut self) {
        let now = Instant::now();
        let present: std::collections::HashSet<&str> = self
            .foca
            .iter_membership_state()
            .map(|m| m.id().name.as_str())
            .collect();
        self.absent_since
            .retain(|name, _| !present.contains(name.as_str()));
        for name in self.metas.keys() {
            if !present.contains(name.as_str()) {
                self.absent_since.entry(name.clone()).or_insert(now);
            }
        }
        let forget: Vec<String> = self
            .absent_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= FORGET_AFTER)
            .map(|(name, _)| name.clone())
            .collect();
        for name in forget {
            tracing::debug!(peer = %name, "forgetting the metadata of a member gossip no longer knows");
            self.metas.remove(&name);
            self.absent_since.remove(&name);
        }
    }

    /// Answers a client's directory ask (see [`super::directory`]); anything else on the
    /// client channel is dropped and counted. Never touches foca.
    fn answer_client(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(desk) = &self.desk else {
            Counters::inc(&self.counters.gossip_dropped_unauthenticated);
            return;
        };
        let client_envelope = desk
            .client_keys
            .borrow()
            .as_ref()
            .map(|k| Envelope::client(&k.gossip));
        let opened = client_envelope
            .iter()
            .chain(self.seals.clients())
            .find_map(|e| e.open(datagram).ok().map(|p| (p, e)));
        let Some((payload, envelope)) = opened else {
            Counters::inc(&self.counters.gossip_dropped_unauthenticated);
            tracing::debug!(%from, "dropped a client ask that does not open");
            return;
        };
        let Some(ClientMessage::Ask(ask)) = ClientMessage::decode(&payload) else {
            Counters::inc(&self.counters.gossip_dropped_malformed);
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if !directory::fresh(ask.sent_at, now) {
            Counters::inc(&self.counters.gossip_dropped_malformed);
            tracing::debug!(%from, client = %ask.name, "dropped a stale client ask (replayed, or clocks apart)");
            return;
        }
        if !self.answer_rate.admit(from.ip(), std::time::Instant::now()) {
            return;
        }
        let answer = directory::answer(
            ask.id,
            self.own_meta.as_ref(),
            &desk.health.borrow(),
            &self.view.borrow(),
        );
        let Some(answer) = answer else {
            tracing::debug!(%from, client = %ask.name, "not answering a client: this member is not healthy");
            return;
        };
        let sealed = envelope.seal(&ClientMessage::Answer(answer).encode());
        match self.socket.try_send_to(&sealed, from) {
            Ok(_) => {
                Counters::inc(&self.counters.gossip_datagrams_sent);
                Counters::inc(&self.counters.gossip_client_answers);
                tracing::trace!(%from, client = %ask.name, "answered a client");
                // The name is the client's word (it holds a token): bounded, for display only.
                let name: String = ask.name.chars().take(64).collect();
                desk.seen
                    .send_replace(self.clients_seen.record(&name, from, now));
            }
            Err(e) => tracing::debug!(%from, error = %e, "cannot answer a client"),
        }
    }

    /// Re-adds this agent's metadata (with a new version) and plan to foca's broadcast backlog
    /// and pushes them out at once.
    fn rebroadcast_own(&mut self) {
        if let Some(meta) = self.own_meta.as_mut() {
            self.seq += 1;
            meta.version = (self.start_ms, self.seq);
            let data = encode(&Broadcast::Meta(meta.clone()));
            if let Err(e) = self.foca.add_broadcast(&data) {
                tracing::warn!(error = %e, "cannot broadcast metadata");
            }
        }
        if let Some(plan) = &self.own_plan {
            let data = encode(&Broadcast::Plan(plan.clone()));
            if let Err(e) = self.foca.add_broadcast(&data) {
                tracing::warn!(error = %e, "cannot broadcast plan");
            }
        }
        if let Err(e) = self.foca.broadcast(&mut self.runtime) {
            tracing::debug!(error = %e, "foca broadcast");
        }
    }

    /// Drains everything foca produced, then publishes the view if it changed.
    async fn settle(&mut self) {
        loop {
            if std::mem::take(&mut self.rebroadcast) {
                self.rebroadcast_own();
            }
            while let Some((dst, data)) = self.runtime.to_send() {
                let sealed = self.seal_for(dst.addr, &data);
                match self.socket.send_to(&sealed, dst.addr).await {
                    Ok(_) => Counters::inc(&self.counters.gossip_datagrams_sent),
                    Err(e) => tracing::debug!(dst = ?dst, error = %e, "gossip send failed"),
                }
            }
            let now = Instant::now();
            while let Some((delay, timer)) = self.runtime.to_schedule() {
                self.timers.push(now + delay, timer);
            }
            while let Some(n) = self.runtime.to_notify() {
                self.notification(n);
            }
            for item in self.inbox.try_iter() {
                match item {
                    Broadcast::Meta(meta) => {
                        self.metas.insert(meta.name.clone(), meta);
                    }
                    Broadcast::Plan(plan) => {
                        if self.plans.len() < MAX_PLANS && !self.plans.contains(&plan) {
                            self.plans.push(plan);
                        }
                    }
                }
            }
            if !self.rebroadcast && self.runtime.backlog() == 0 {
                break;
            }
        }
        self.prune();
        let view = build_view(
            self.foca
                .iter_membership_state()
                .map(|m| (m.id(), m.state())),
            &self.metas,
            &self.plans,
        );
        if self.compat.update(view.live().map(|p| p.id.addr)) {
            tracing::info!("every gossip peer speaks the stamped envelope: older datagrams are no longer accepted");
        }
        self.view.send_if_modified(|current| {
            if *current == view {
                false
            } else {
                *current = view;
                true
            }
        });
    }

    fn notification(&mut self, n: OwnedNotification<NodeId>) {
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(peer = %id.name, addr = %id.addr, "gossip: member up");
                // Tell the newcomer who we are and what we hold.
                self.rebroadcast = true;
            }
            OwnedNotification::MemberDown(id) => {
                tracing::info!(peer = %id.name, addr = %id.addr, "gossip: member down");
            }
            OwnedNotification::Rename(old, new) => {
                tracing::debug!(old = ?old, new = ?new, "gossip: member restarted");
                self.rebroadcast = true;
            }
            OwnedNotification::Rejoin(id) => {
                tracing::info!(identity = ?id, "gossip: rejoined after being declared down");
                self.rebroadcast = true;
            }
            OwnedNotification::Idle => tracing::debug!("gossip: no live members"),
            OwnedNotification::Active => tracing::debug!("gossip: connected"),
            OwnedNotification::Defunct => tracing::debug!("gossip: defunct"),
        }
    }

    /// Tells peers we are leaving, so they do not wait for the failure detector.
    async fn leave(&mut self) {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave_cluster");
        }
        while let Some((dst, data)) = self.runtime.to_send() {
            let sealed = self.seal_for(dst.addr, &data);
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                self.socket.send_to(&sealed, dst.addr),
            )
            .await;
        }
        tracing::debug!("gossip: left the cluster");
    }
}
