//! One run: a configuration at one load, on its own current-thread runtime
//! with the clock paused, from the scenario's seed.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::backend::{Backend, BackendSpec, Call, Reply};
use super::client::{Caller, Client, KeyDraw, TowerService};
use super::config::{BalancerSpec, ConfigSpec, HashSpec, Stack, TowerLoad};
use super::record::Recorder;
use super::report::Run;
use super::subset::{Listing, SubsetSpec, Updates, addr, index};
use super::{Scenario, ScenarioError, mix};
use crate::balance::{P2c, Random, RoundRobin, Weighted};
use crate::channel::ChannelPolicy;
use crate::policy::replay::CloneReplay;
use crate::subset::{ApertureSettings, Coordinate};
use crate::{BuildError, Channel, Endpoint};

/// Seed streams: one per purpose, so that adding a draw in one place does
/// not shift the others.
const THREAD: u64 = 0x10;
const ARRIVALS: u64 = 0x20;
const BACKENDS: u64 = 0x30;
const TOWER: u64 = 0x40;
const THROTTLE: u64 = 0x50;
const KEYS: u64 = 0x60;
const SUBSET: u64 = 0x70;

/// Builds one towline channel over `backends`, discovered through
/// `source`, narrowed to the aperture of `aperture` when given.
pub(crate) fn towline_channel(
    balancer: BalancerSpec,
    policy: &ChannelPolicy,
    hash: Option<HashSpec>,
    backends: &[Backend],
    source: Updates,
    aperture: Option<(ApertureSettings, Coordinate)>,
) -> Result<Channel<Call, Reply>, BuildError> {
    let services = backends.to_vec();
    let connect = move |ep: &Endpoint| services[index(ep.addr).min(services.len() - 1)].clone();
    let builder = Channel::builder(connect)
        .discover(source)
        .policy(policy.clone())
        .replayer(CloneReplay)
        .initial_wait(Duration::from_secs(3600));
    let builder = match hash {
        Some(h) => builder.keyed(h.build()?, |call| call.key),
        None => builder,
    };
    let builder = match aperture {
        Some((settings, coordinate)) => builder.aperture(settings, coordinate),
        None => builder,
    };
    let builder = match balancer {
        BalancerSpec::P2cPeakEwma { default_rtt, decay } => {
            builder.balancer(P2c::peak_ewma().default_rtt(default_rtt).decay(decay))
        }
        BalancerSpec::P2cPending => builder.balancer(P2c::pending()),
        BalancerSpec::RoundRobin => builder.balancer(RoundRobin::new()),
        BalancerSpec::Random => builder.balancer(Random::new()),
        BalancerSpec::WeightedRandom => builder.balancer(Weighted::random()),
        BalancerSpec::WeightedRoundRobin => builder.balancer(Weighted::round_robin()),
    };
    builder.build()
}

/// tower's generator trait over towline's seeded one.
struct TowerRng(crate::rng::Rng);

impl tower::util::rng::Rng for TowerRng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// tower's discovery of `backends`: each inserted at its join time.
type TowerDiscover = std::pin::Pin<
    Box<
        dyn futures_core::Stream<
                Item = Result<tower::discover::Change<usize, Backend>, std::convert::Infallible>,
            > + Send,
    >,
>;

fn tower_discover(backends: &[Backend], joins: &[Duration]) -> TowerDiscover {
    use futures_util::StreamExt;
    use tower::discover::{Change, ServiceList};

    if joins.iter().all(|j| j.is_zero()) {
        return Box::pin(ServiceList::new::<Call>(backends.to_vec()));
    }
    let mut events: Vec<(Duration, usize, Backend)> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (joins[i], i, b.clone()))
        .collect();
    events.sort_by_key(|(at, i, _)| (*at, *i));
    let epoch = Instant::now();
    let stream = futures_util::stream::iter(events)
        .then(move |(at, i, backend)| async move {
            if !at.is_zero() {
                tokio::time::sleep_until(epoch + at).await;
            }
            Ok(Change::Insert(i, backend))
        })
        .chain(futures_util::stream::pending());
    Box::pin(stream)
}

/// tower's `Buffer<Balance<…>>` over `backends`, its balancer seeded.
fn tower_service(
    load: TowerLoad,
    backends: &[Backend],
    joins: &[Duration],
    seed: u64,
) -> TowerService {
    use tower::balance::p2c::Balance;
    use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
    use tower::util::BoxService;

    let list = tower_discover(backends, joins);
    let rng = TowerRng(crate::rng::Rng::seeded(seed));
    let service = match load {
        TowerLoad::PeakEwma => BoxService::new(Balance::from_rng(
            PeakEwmaDiscover::new::<Call>(
                list,
                P2c::DEFAULT_RTT,
                P2c::DEFAULT_DECAY,
                CompleteOnResponse::default(),
            ),
            rng,
        )),
        TowerLoad::Pending => BoxService::new(Balance::from_rng(
            PendingRequestsDiscover::new::<Call>(list, CompleteOnResponse::default()),
            rng,
        )),
    };
    // Large enough that the buffer never refuses: the backends are always
    // ready, so its worker dispatches each request as it comes.
    tower::buffer::Buffer::new(service, 1 << 16)
}

/// Runs `config` at `load` (a factor on every client's rate).
pub(crate) fn run(
    scenario: &Scenario,
    config: &ConfigSpec,
    load: f64,
) -> Result<Run, ScenarioError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| ScenarioError::new(format!("cannot start a tokio runtime: {e}")))?;
    // The channel's balancer, backoff and breaker draws come from this
    // thread's generator: the runtime runs every task on this thread.
    crate::rng::seed_thread_rng(mix(scenario.seed, THREAD));
    let wall = std::time::Instant::now();
    let backend_count: usize = scenario.backends.iter().map(|b| b.count as usize).sum();
    let client_count: usize = scenario.clients.iter().map(|c| c.count as usize).sum();
    let record = Arc::new(Mutex::new(Recorder::new(
        scenario.bucket,
        backend_count,
        client_count,
        scenario.warmup,
    )));
    let outcome = runtime.block_on(drive(scenario, config, load, record.clone()));
    // Dropping the runtime drops every task still running; requests still
    // in flight are recorded as failed by their tickets.
    drop(runtime);
    outcome?;
    let simulated = wall.elapsed();
    let record = std::mem::replace(
        &mut *record.lock(),
        Recorder::new(scenario.bucket, 0, 0, Duration::ZERO),
    );
    let names = scenario
        .backends
        .iter()
        .flat_map(|b| std::iter::repeat_n(b.name.clone(), b.count as usize))
        .collect();
    Ok(Run::new(scenario, config, load, record, names, simulated))
}

async fn drive(
    scenario: &Scenario,
    config: &ConfigSpec,
    load: f64,
    record: Arc<Mutex<Recorder>>,
) -> Result<(), ScenarioError> {
    let epoch = Instant::now();
    let mut backends = Vec::new();
    let mut weights = Vec::new();
    let mut joins = Vec::new();
    for spec in &scenario.backends {
        let spec: Arc<BackendSpec> = Arc::new(spec.clone());
        for _ in 0..spec.count {
            let i = backends.len();
            let seed = mix(scenario.seed, BACKENDS + ((i as u64) << 8));
            backends.push(Backend::start(i, spec.clone(), seed, epoch, record.clone()));
            weights.push(spec.weight);
            joins.push(spec.join);
        }
    }
    let listing = Listing::new(&scenario.backends);
    listing.follow(epoch);
    // Each key's home, for a configuration that picks by key: the table
    // over every backend, by backend index.
    let homes = match &config.stack {
        Stack::Towline { hash: Some(h), .. } => {
            let hash = h
                .build()
                .map_err(|e| ScenarioError::config(&config.name, e))?;
            let members = weights.iter().enumerate().map(|(i, &w)| (addr(i), w));
            Some(Arc::new(hash.rebuild(members)))
        }
        _ => None,
    };
    let client_count: usize = scenario.clients.iter().map(|c| c.count as usize).sum();
    let mut clients = Vec::new();
    let mut channels = Vec::new();
    for spec in &scenario.clients {
        for _ in 0..spec.count {
            let i = clients.len() as u64;
            let caller = match &config.stack {
                Stack::Towline {
                    balancer,
                    policy,
                    hash,
                    subset,
                } => {
                    let (source, aperture) = match subset {
                        None => (listing.source(), None),
                        Some(SubsetSpec::Aperture(settings)) => {
                            let me = Coordinate::new(i as usize, client_count)
                                .map_err(|e| ScenarioError::config(&config.name, e))?;
                            (listing.source(), Some((*settings, me)))
                        }
                        Some(SubsetSpec::Random(size)) => {
                            let mut rng =
                                crate::rng::Rng::seeded(mix(scenario.seed, SUBSET + (i << 8)));
                            (listing.random_source(*size, &mut rng), None)
                        }
                    };
                    let channel =
                        towline_channel(*balancer, policy, *hash, &backends, source, aperture)
                            .map_err(|e| ScenarioError::config(&config.name, e))?;
                    channels.push(channel.clone());
                    Caller::Towline(channel)
                }
                Stack::Tower(load) => Caller::Tower(tower_service(
                    *load,
                    &backends,
                    &joins,
                    mix(scenario.seed, TOWER + (i << 8)),
                )),
            };
            let seed = mix(scenario.seed, THROTTLE + (i << 8));
            let keys = spec.keys.map(|keys| {
                let rng = crate::rng::Rng::seeded(mix(scenario.seed, KEYS + (i << 8)));
                KeyDraw::new(keys, mix(scenario.seed, KEYS), rng, homes.clone())
            });
            let client = Client::new(
                caller,
                spec,
                epoch,
                record.clone(),
                config.caller_throttle,
                seed,
                keys,
            );
            clients.push((
                client,
                spec.arrivals,
                mix(scenario.seed, ARRIVALS + (i << 8)),
            ));
        }
    }
    let end = scenario.duration;
    if !channels.is_empty() {
        tokio::spawn(watch_channels(
            channels,
            scenario.bucket,
            end,
            epoch,
            record.clone(),
        ));
    }
    let senders: Vec<_> = clients
        .into_iter()
        .map(|(client, arrivals, seed)| {
            tokio::spawn(client.run(arrivals, load, end, crate::rng::Rng::seeded(seed)))
        })
        .collect();
    for s in senders {
        let _ = s.await;
    }
    // Let the last requests end: each within its budget, and without a
    // budget for at most the run's length again.
    let budget = scenario.clients.iter().filter_map(|c| c.budget).max();
    let limit = epoch + end + budget.unwrap_or(end) + Duration::from_millis(1);
    while record.lock().outstanding > 0 && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(10).min(limit - Instant::now())).await;
    }
    Ok(())
}

/// Samples which endpoints each channel uses and has ejected, once per
/// bucket.
async fn watch_channels(
    channels: Vec<Channel<Call, Reply>>,
    every: Duration,
    end: Duration,
    epoch: Instant,
    record: Arc<Mutex<Recorder>>,
) {
    let mut tick = tokio::time::interval_at(epoch, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let t = epoch.elapsed();
        if t > end {
            return;
        }
        for (client, channel) in channels.iter().enumerate() {
            let seen: Vec<(usize, bool)> = channel
                .endpoints()
                .iter()
                .map(|e| (index(e.endpoint.addr), e.ejected))
                .collect();
            let mut record = record.lock();
            record.ejected(t, client, &seen);
            record.subset(t, client, seen.iter().map(|&(b, _)| b).collect());
        }
    }
}
