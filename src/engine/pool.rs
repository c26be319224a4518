//! The engines builds are spread over (`options.engines`), or the one engine of
//! `DOCKER_HOST`: connected at start, asked at the start of each cycle whether
//! they answer, each with its name, capacity and platforms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{DockerEngine, Engine, EngineError};
use crate::config::{serves, EngineHost, Options};
use crate::credentials::Registries;

pub use crate::placement::DEFAULT_ENGINE;

/// Longest an engine of a pool may take to answer at the start of a cycle (a
/// connection, or `GET /_ping`) before it is left out of that cycle.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait between engine connection attempts in daemon mode.
const MAX_ENGINE_BACKOFF: Duration = Duration::from_secs(60);

/// An engine that answers this cycle, as builds see it.
#[derive(Clone)]
pub struct PoolEngine {
    /// Its name in logs, reports and records.
    pub name: String,
    /// The connected engine.
    pub engine: Arc<dyn Engine>,
    /// Builds it runs at once.
    pub capacity: usize,
    /// The platforms (`os/arch[/variant]`) it builds for.
    pub platforms: Vec<String>,
}

impl PoolEngine {
    /// Whether it builds for `platform` ([`serves`]).
    pub fn serves(&self, platform: &str) -> bool {
        self.platforms.iter().any(|p| serves(p, platform))
    }
}

/// One engine of the pool, connected or not yet.
struct Member {
    name: String,
    /// `None` for the engine of `DOCKER_HOST`.
    host: Option<EngineHost>,
    capacity: usize,
    /// The platforms the config gives it; empty: the one it reports.
    platforms: Vec<String>,
    /// The engine and the platform it reported, once it has answered.
    connected: Mutex<Option<(Arc<dyn Engine>, String)>>,
}

impl Member {
    fn connected(&self) -> Option<(Arc<dyn Engine>, String)> {
        self.connected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Its platforms: the config's, else the one it reported; `None` when neither is known yet.
    fn platforms(&self) -> Option<Vec<String>> {
        match (self.platforms.is_empty(), self.connected()) {
            (false, _) => Some(self.platforms.clone()),
            (true, Some((_, reported))) => Some(vec![reported]),
            (true, None) => None,
        }
    }

    async fn connect(&self, registries: &Registries) -> Result<(), EngineError> {
        let engine = match &self.host {
            None => DockerEngine::connect(registries.clone()).await?,
            Some(host) => match tokio::time::timeout(ANSWER_TIMEOUT, DockerEngine::connect_to(host, registries.clone())).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(EngineError::Unreachable(format!(
                        "{host}: no answer within {}",
                        humantime::format_duration(ANSWER_TIMEOUT)
                    )))
                }
            },
        };
        let platform = engine.platform().await?;
        *self.connected.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Arc::new(engine), platform));
        Ok(())
    }

    /// The engine, when it answers now: pinged when connected, else connected.
    async fn answer(&self, registries: &Registries) -> Result<PoolEngine, EngineError> {
        match self.connected() {
            Some((engine, _)) => match tokio::time::timeout(ANSWER_TIMEOUT, engine.ping()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(EngineError::Unreachable(format!(
                        "no answer to /_ping within {}",
                        humantime::format_duration(ANSWER_TIMEOUT)
                    )))
                }
            },
            None => self.connect(registries).await?,
        }
        let (engine, _) = self.connected().ok_or_else(|| EngineError::Unreachable("not connected".into()))?;
        Ok(PoolEngine { name: self.name.clone(), engine, capacity: self.capacity, platforms: self.platforms().unwrap_or_default() })
    }
}

/// The engines freshen builds on.
pub struct Pool {
    members: Vec<Member>,
    registries: Registries,
    /// Whether `options.engines` set it: then each cycle asks every engine whether it answers.
    configured: bool,
}

impl Pool {
    /// A pool of one engine that has answered already, named [`DEFAULT_ENGINE`]: the engine of
    /// `DOCKER_HOST`, or a test's. It is never asked whether it answers: its errors are the builds'.
    pub fn single(engine: Arc<dyn Engine>, platform: String, capacity: usize) -> Pool {
        let member = Member {
            name: DEFAULT_ENGINE.into(),
            host: None,
            capacity,
            platforms: Vec::new(),
            connected: Mutex::new(Some((engine, platform))),
        };
        Pool { members: vec![member], registries: Registries::default(), configured: false }
    }

    /// Connects to the engines of `options.engines` at once, or to the one of
    /// `DOCKER_HOST` (as the docker CLI does) when it is empty, whose capacity is then
    /// `options.parallelism`. An engine of a pool that does not answer is logged
    /// by each cycle it is left out of (`engine_down`), and asked again at each one. With `once`, the first round
    /// is the only one; otherwise rounds repeat with exponential backoff (1 s doubling
    /// to 60 s, backon) until one engine answers or `cancel` fires.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when no engine answers (with `once`), or `cancel`
    /// fired before one did; the message names each engine's error.
    pub async fn connect(options: &Options, registries: &Registries, once: bool, cancel: &CancellationToken) -> Result<Pool, EngineError> {
        let members: Vec<Member> = match options.engines.is_empty() {
            true => vec![Member {
                name: DEFAULT_ENGINE.into(),
                host: None,
                capacity: options.parallelism,
                platforms: Vec::new(),
                connected: Mutex::default(),
            }],
            false => options
                .engines
                .iter()
                .map(|e| Member {
                    name: e.name.clone(),
                    host: Some(e.host.clone()),
                    capacity: e.capacity,
                    platforms: e.platforms.clone(),
                    connected: Mutex::default(),
                })
                .collect(),
        };
        let pool = Pool { members, registries: registries.clone(), configured: !options.engines.is_empty() };
        let round = || async {
            let results = join_all(pool.members.iter().map(|m| m.connect(&pool.registries))).await;
            let errors: Vec<String> =
                pool.members.iter().zip(&results).filter_map(|(m, r)| Some(pool.named(m, r.as_ref().err()?))).collect();
            // The engines that did not answer are logged by each cycle they are left out of.
            match errors.len() < pool.members.len() {
                true => Ok(()),
                false => Err(EngineError::Unreachable(errors.join("; "))),
            }
        };
        if once {
            return round().await.map(|()| pool);
        }
        let backoff =
            ExponentialBuilder::default().with_min_delay(Duration::from_secs(1)).with_max_delay(MAX_ENGINE_BACKOFF).without_max_times();
        let connect = round.retry(backoff).notify(|e, wait| {
            tracing::error!(event = "engine_unreachable", error = %e, retry_in = %humantime::format_duration(wait), "Docker engine not answering; retrying");
        });
        tokio::select! {
            r = connect => r.map(|()| pool),
            _ = cancel.cancelled() => Err(EngineError::Unreachable("stopped before the engine answered".into())),
        }
    }

    /// `error`, with the engine's name when the pool has more than one.
    fn named(&self, m: &Member, error: &EngineError) -> String {
        match self.members.len() {
            1 => error.to_string(),
            _ => format!("engine {}: {error}", m.name),
        }
    }

    /// The engines that answer now, in the config's order. An engine of a
    /// configured pool that does not answer within [`ANSWER_TIMEOUT`] is left out,
    /// with one `engine_down` line. The one engine of `DOCKER_HOST` is not asked.
    pub async fn up(&self) -> Vec<PoolEngine> {
        if !self.configured {
            let m = &self.members[0];
            return m
                .connected()
                .map(|(engine, platform)| PoolEngine { name: m.name.clone(), engine, capacity: m.capacity, platforms: vec![platform] })
                .into_iter()
                .collect();
        }
        let answers = join_all(self.members.iter().map(|m| m.answer(&self.registries))).await;
        let mut up = Vec::new();
        for (m, a) in self.members.iter().zip(answers) {
            match a {
                Ok(e) => up.push(e),
                Err(e) => {
                    tracing::warn!(event = "engine_down", engine = %m.name, error = %e, "engine does not answer; left out of this cycle")
                }
            }
        }
        up
    }

    /// Whether any engine answers now (for `/readyz`), without logging: `Err` names each one's error.
    ///
    /// # Errors
    /// Every engine's error, joined, when none answers.
    pub async fn answers(&self) -> Result<(), String> {
        let answers = join_all(self.members.iter().map(|m| m.answer(&self.registries))).await;
        if answers.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(self.members.iter().zip(answers).filter_map(|(m, a)| Some(self.named(m, &a.err()?))).collect::<Vec<_>>().join("; "))
    }

    /// The platform builds without `platform` build for: the first engine's
    /// first platform (configured, or reported), or the first known one when
    /// the first engine has not answered and the config does not say; this
    /// host's when none is known.
    pub fn default_platform(&self) -> String {
        self.members.iter().find_map(|m| m.platforms()?.into_iter().next()).unwrap_or_else(crate::dockerfile::host_platform)
    }

    /// Each engine's name and its platforms, `None` when not known yet (it has not
    /// answered and the config does not say): for the start's checks and `plan`.
    pub fn platforms(&self) -> Vec<(String, Option<Vec<String>>)> {
        self.members.iter().map(|m| (m.name.clone(), m.platforms())).collect()
    }

    /// The first engine that has answered once, with its name, whether it answers now or not:
    /// what a cycle in which none answers hands its builds, which then fail with its error.
    pub fn any_engine(&self) -> Option<(Arc<dyn Engine>, String)> {
        self.members.iter().find_map(|m| Some((m.connected()?.0, m.name.clone())))
    }

    /// The engines that have answered once, whether they answer now or not.
    pub fn connected(&self) -> Vec<Arc<dyn Engine>> {
        self.members.iter().filter_map(|m| Some(m.connected()?.0)).collect()
    }

    /// Each engine's name, in the config's order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }
}
