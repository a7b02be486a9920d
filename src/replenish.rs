//! Pool replenishment: a background keeper that buys numbers from Twilio to keep `POOL_TARGET`
//! numbers AVAILABLE, behind a circuit breaker.
//!
//! One run:
//! 1. Skips at once while the Twilio circuit is open, or when another replica holds the keeper lock
//!    (see [`crate::store::replenish`]: an advisory lock on PostgreSQL, taken without waiting, held
//!    for the whole run; the pool and the purchase count are read only after taking it, so two
//!    replicas never both top up the same shortfall).
//! 2. Resolves, first, the purchases whose outcome is unknown (`uncertain_purchases`, see step 5):
//!    each is looked up on Twilio again. Found: the number is ours (`NUMBER_PURCHASE_CONFIRMED`) and
//!    is kept as in step 6. Not found: it was never bought (`NUMBER_PURCHASE_NOT_MADE`). The lookup
//!    fails: it stays for the next run, and is not bought again meanwhile.
//! 3. Works out the shortfall: `POOL_TARGET - AVAILABLE`, plus one number per owner waiting for one
//!    (the number bought for them is assigned at once, so it does not count towards the target).
//!    Purchases are capped at `POOL_MAX_BUY_PER_DAY` over the last 24 hours, counted in the
//!    database (`pool_purchases`, released purchases included, and each purchase still uncertain
//!    as one), so the cap holds across replicas and restarts.
//! 4. For each waiting owner (oldest first), then for the rest of the target in the home country,
//!    searches Twilio step by step, since Twilio has no fallback of its own:
//!    - US/CA owners: their area code (`AreaCode`), then nearby (`NearNumber` = the owner's phone,
//!      with `Distance`), then their state (`InRegion`, only when the owner's location ends in a
//!      two-letter code such as "Austin, TX"), then anywhere in the country;
//!    - GB owners: `AreaCode` and `NearNumber` are US/CA only, so their town (`InRegion` = the
//!      location they gave), then anywhere in the country;
//!    - owners of other countries are skipped: we only sell GB and US numbers.
//!    - a narrowing search that Twilio refuses as a bad request (a filter it does not support
//!      there) moves on to the next step.
//! 5. Buys the first candidate with our webhooks and a FriendlyName saying it is ours. 21422 (taken
//!    meanwhile) searches again and buys the next candidate. A purchase whose answer was lost
//!    (timeout, 5xx) is looked up on Twilio before moving on; when that lookup fails too, the
//!    number is recorded as uncertain (`NUMBER_PURCHASE_UNCERTAIN`) for the next runs to resolve.
//! 6. Records the purchase, then adds the number to the pool (with its sid) through the engine and
//!    serves the waitlist. If either record fails, or the number was already in the pool, the number
//!    is released again: no paid number is ever lost track of. A release that fails is logged
//!    `NUMBER_RELEASE_FAILED` with the sid, to be released by hand.
//!
//! The circuit breaker counts Twilio failures in a row (an answer that is a normal outcome, such as
//! 21422, is not one). At the threshold it opens (`TWILIO_CIRCUIT_OPEN`) and no Twilio call is made
//! until the cool-off is over; the next call is then a trial: success closes it
//! (`TWILIO_CIRCUIT_CLOSED`), failure opens it again. Releases bypass it: giving back a number we
//! cannot record is always worth a try. Its state is shared ([`CircuitBreaker::is_open`],
//! [`CircuitBreaker::opened_at`]) for metrics and readiness.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::conversation::budget::Spend;
use crate::domain::{Country, PhoneNumber};
use crate::engine::{Engine, EngineError};
use crate::store::replenish::ReplenishStore;
use crate::store::{NewPoolNumber, Owner, PoolStats, StoreError};
use crate::twilio::client::{BuyNumber, IncomingNumber, NumberSearch, TwilioClient, TwilioError};

/// The FriendlyName of every number the keeper buys, so they can be found in Twilio's console.
pub const FRIENDLY_NAME: &str = "onboard pool";
/// Failures in a row that open the circuit.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// How long an open circuit refuses calls.
pub const DEFAULT_COOL_OFF_SECS: i64 = 300;
/// The `Distance` (miles) of a nearby search.
pub const DEFAULT_NEARBY_MILES: u32 = 25;
/// At most this many waiting owners are bought for in one run.
pub const DEFAULT_MAX_WAITING: i64 = 50;
/// Searches per step when candidates keep being taken (21422) before trying a wider step.
const MAX_SEARCHES_PER_STEP: u32 = 3;
/// Twilio error: the number is no longer available.
const NUMBER_TAKEN: i64 = 21422;

// --- circuit breaker ---------------------------------------------------------------------------

/// Stops calling Twilio after repeated failures, for a while. Cheap to share behind an `Arc`.
pub struct CircuitBreaker {
    clock: Arc<dyn Clock>,
    threshold: u32,
    cool_off: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    opened_at: Option<DateTime<Utc>>,
}

impl CircuitBreaker {
    pub fn new(clock: Arc<dyn Clock>, threshold: u32, cool_off: Duration) -> Self {
        Self {
            clock,
            threshold: threshold.max(1),
            cool_off,
            state: Mutex::new(BreakerState::default()),
        }
    }

    /// 5 failures in a row open it for 5 minutes.
    pub fn with_defaults(clock: Arc<dyn Clock>) -> Self {
        Self::new(
            clock,
            DEFAULT_FAILURE_THRESHOLD,
            Duration::seconds(DEFAULT_COOL_OFF_SECS),
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while calls are refused: opened, and the cool-off not over yet.
    pub fn is_open(&self) -> bool {
        let now = self.clock.now();
        self.state()
            .opened_at
            .is_some_and(|at| now < at + self.cool_off)
    }

    /// When it last opened; None while closed. After the cool-off it stays set until a trial call
    /// succeeds (half-open).
    pub fn opened_at(&self) -> Option<DateTime<Utc>> {
        self.state().opened_at
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.state().failures
    }

    /// Twilio answered as expected: closes the circuit if it was open.
    pub fn record_success(&self) {
        let was_open = {
            let mut state = self.state();
            state.failures = 0;
            state.opened_at.take()
        };
        if let Some(opened_at) = was_open {
            tracing::info!(
                event = "TWILIO_CIRCUIT_CLOSED",
                opened_at = %opened_at,
                "Twilio answers again: calls resume"
            );
        }
    }

    /// Twilio failed: opens the circuit at the threshold, or again when a trial call fails.
    pub fn record_failure(&self, error: &TwilioError) {
        let now = self.clock.now();
        let opened = {
            let mut state = self.state();
            state.failures = state.failures.saturating_add(1);
            // Calls are refused while open, so a failure with `opened_at` set is a failed trial.
            if state.opened_at.is_some() || state.failures >= self.threshold {
                state.opened_at = Some(now);
                Some(state.failures)
            } else {
                None
            }
        };
        if let Some(failures) = opened {
            tracing::error!(
                event = "TWILIO_CIRCUIT_OPEN",
                failures,
                cool_off_secs = self.cool_off.num_seconds(),
                error = %error,
                "Twilio keeps failing: no calls to it until the cool-off is over"
            );
        }
    }
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("CircuitBreaker")
            .field("threshold", &self.threshold)
            .field("cool_off", &self.cool_off)
            .field("failures", &state.failures)
            .field("opened_at", &state.opened_at)
            .finish()
    }
}

// --- the keeper ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ReplenishSettings {
    /// Keep this many numbers AVAILABLE.
    pub target: i64,
    /// At most this many purchases in any 24 hours.
    pub max_buy_per_day: i64,
    /// Where numbers for the target (not for a waiting owner) are bought.
    pub home_country: Country,
    /// `PUBLIC_URL`, without a trailing slash: bought numbers' webhooks point at it.
    pub public_url: String,
    pub friendly_name: String,
    pub nearby_miles: u32,
    pub max_waiting: i64,
    /// Regulatory documents Twilio asks for before it sells some countries' numbers (most UK
    /// numbers: error 21631 without them).
    pub address_sid: Option<String>,
    pub bundle_sid: Option<String>,
}

impl ReplenishSettings {
    pub fn new(target: i64, max_buy_per_day: i64, home_country: Country, public_url: &str) -> Self {
        Self {
            target,
            max_buy_per_day,
            home_country,
            public_url: public_url.trim_end_matches('/').to_owned(),
            friendly_name: FRIENDLY_NAME.to_owned(),
            nearby_miles: DEFAULT_NEARBY_MILES,
            max_waiting: DEFAULT_MAX_WAITING,
            address_sid: None,
            bundle_sid: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplenishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a run stopped calling Twilio early.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the Twilio circuit is open")]
    CircuitOpen,
    #[error(transparent)]
    Twilio(TwilioError),
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The circuit is open: Twilio was not called.
    CircuitOpen,
    /// Another replica is running the keeper.
    Locked,
    Ran(RunReport),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Earlier uncertain purchases found on Twilio this run, and kept in the pool.
    pub confirmed: Vec<PhoneNumber>,
    /// Earlier uncertain purchases Twilio has no trace of: they were never made.
    pub not_made: Vec<PhoneNumber>,
    /// Earlier uncertain purchases still unknown (the lookup failed, or the circuit is open).
    pub still_uncertain: Vec<PhoneNumber>,
    /// Numbers wanted: below target, plus one per waiting owner.
    pub shortfall: i64,
    /// How many the daily cap allowed this run.
    pub budget: i64,
    /// Bought and in the pool.
    pub bought: Vec<PhoneNumber>,
    /// Bought (or confirmed), could not be kept, released again.
    pub released: Vec<PhoneNumber>,
    /// Numbers wanted that no search found.
    pub not_found: u32,
    /// The run stopped early on this error.
    pub stopped: Option<String>,
    /// A budget is exceeded: nothing was bought ahead of need (only for owners waiting for one).
    pub held_by_budget: bool,
}

/// One number wanted, and where to look for it.
#[derive(Debug, Clone)]
struct Want {
    country: Country,
    area_code: Option<String>,
    near: Option<PhoneNumber>,
    region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    AreaCode,
    Nearby,
    Region,
    Anywhere,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::AreaCode => "area_code",
            Step::Nearby => "nearby",
            Step::Region => "region",
            Step::Anywhere => "anywhere",
        }
    }
}

impl Want {
    fn anywhere(country: Country) -> Self {
        Self {
            country,
            area_code: None,
            near: None,
            region: None,
        }
    }

    fn for_owner(owner: &Owner) -> Self {
        let country = owner.country();
        match country {
            Country::Us => Self {
                country,
                area_code: owner.owner_phone.area_code().map(str::to_owned),
                near: Some(owner.owner_phone.clone()),
                region: us_state(owner.location.as_deref()),
            },
            // AreaCode and NearNumber are US/CA only: the town they gave, then anywhere.
            Country::Gb => Self {
                country,
                area_code: None,
                near: None,
                region: owner
                    .location
                    .as_deref()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            },
            Country::Other => Self::anywhere(country),
        }
    }

    /// The searches, narrowest first.
    fn steps(&self, nearby_miles: u32) -> Vec<(Step, NumberSearch)> {
        let mut steps = Vec::new();
        if let Some(code) = &self.area_code {
            steps.push((
                Step::AreaCode,
                NumberSearch {
                    area_code: Some(code.clone()),
                    ..NumberSearch::default()
                },
            ));
        }
        if let Some(near) = &self.near {
            steps.push((
                Step::Nearby,
                NumberSearch {
                    near_number: Some(near.as_str().to_owned()),
                    distance_miles: Some(nearby_miles),
                    ..NumberSearch::default()
                },
            ));
        }
        if let Some(region) = &self.region {
            steps.push((
                Step::Region,
                NumberSearch {
                    in_region: Some(region.clone()),
                    ..NumberSearch::default()
                },
            ));
        }
        steps.push((Step::Anywhere, NumberSearch::default()));
        steps
    }
}

/// The state of a US location given as "Austin, TX" or "Austin TX" (upper case, as typed).
fn us_state(location: Option<&str>) -> Option<String> {
    let last = location?.trim().rsplit([',', ' ']).next()?.trim();
    (last.len() == 2 && last.chars().all(|c| c.is_ascii_uppercase())).then(|| last.to_owned())
}

/// Countries we can buy in (Twilio wants an ISO code).
fn buyable(country: Country) -> bool {
    matches!(country, Country::Gb | Country::Us)
}

/// A 4xx that is not about auth or rate: Twilio is fine, it just does not take this request.
fn is_refusal(error: &TwilioError) -> bool {
    matches!(error, TwilioError::Api { status, .. }
        if (400..500).contains(status) && !matches!(status, 401 | 403 | 429))
        && !error.is_rate_limited()
}

/// Buys numbers to keep the pool at its target. See the module documentation.
pub struct Replenisher<S: ReplenishStore> {
    engine: Arc<Engine<S>>,
    twilio: TwilioClient,
    breaker: Arc<CircuitBreaker>,
    settings: ReplenishSettings,
}

impl<S: ReplenishStore> Replenisher<S> {
    pub fn new(
        engine: Arc<Engine<S>>,
        twilio: TwilioClient,
        breaker: Arc<CircuitBreaker>,
        settings: ReplenishSettings,
    ) -> Self {
        Self {
            engine,
            twilio,
            breaker,
            settings,
        }
    }

    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// Every `period`, until `shutdown`: one run. A run in progress is finished first.
    pub async fn keep(&self, period: std::time::Duration, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(e) = self.run_once().await {
                tracing::error!(event = "REPLENISH_ERROR", error = %e);
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One run: tops the pool up if it is short, within the daily cap.
    pub async fn run_once(&self) -> Result<RunOutcome, ReplenishError> {
        if self.breaker.is_open() {
            tracing::debug!(event = "REPLENISH_SKIPPED", reason = "circuit_open");
            return Ok(RunOutcome::CircuitOpen);
        }
        let store = self.engine.store();
        let Some(lock) = store.try_lock_keeper().await? else {
            tracing::debug!(event = "REPLENISH_SKIPPED", reason = "another_replica");
            return Ok(RunOutcome::Locked);
        };
        let report = self.top_up().await;
        // Every number of the run is committed by now, so the next holder of the lock counts it.
        if let Err(e) = store.unlock_keeper(lock).await {
            tracing::warn!(event = "REPLENISH_UNLOCK_FAILED", error = %e);
        }
        report.map(RunOutcome::Ran)
    }

    async fn top_up(&self) -> Result<RunReport, ReplenishError> {
        let store = self.engine.store();
        let now = self.engine.now();
        // Before counting: a confirmed number fills the pool (or an owner's wait), and the daily
        // cap must see what the unresolved ones may have cost.
        let mut report = RunReport::default();
        self.resolve_uncertain(&mut report).await?;
        // Buying ahead of need waits while a budget is exceeded. A number for a paid owner who is
        // waiting for one does not: it is spend they already paid for.
        let ahead_of_need = self.engine.spend_allowed(Spend::PoolPurchase).await?;
        if !ahead_of_need {
            tracing::info!(
                event = "REPLENISH_HELD",
                reason = "budget_exceeded",
                "a budget is exceeded: numbers are bought only for owners waiting for one"
            );
            report.held_by_budget = true;
        }
        let stats: PoolStats = store.pool_stats().await?;
        let waiting: Vec<Owner> = store
            .waiting_owners(self.settings.max_waiting)
            .await?
            .into_iter()
            .filter(|owner| buyable(owner.country()))
            .collect();
        let below_target = if ahead_of_need {
            (self.settings.target - stats.available).max(0)
        } else {
            0
        };
        let shortfall = below_target + waiting.len() as i64;
        report.shortfall = shortfall;
        if shortfall == 0 {
            return Ok(report);
        }
        let bought_today = store.purchases_since(now - Duration::hours(24)).await?;
        let budget = (self.settings.max_buy_per_day - bought_today)
            .max(0)
            .min(shortfall);
        report.budget = budget;
        if budget < shortfall {
            tracing::warn!(
                event = "POOL_BUY_CAP_REACHED",
                shortfall,
                budget,
                bought_last_24h = bought_today,
                max_buy_per_day = self.settings.max_buy_per_day,
                "the daily purchase cap leaves the pool short"
            );
        }
        let wants: Vec<Want> = waiting
            .iter()
            .map(Want::for_owner)
            .chain(std::iter::repeat_n(
                Want::anywhere(self.settings.home_country),
                usize::try_from(below_target).unwrap_or(0),
            ))
            .take(usize::try_from(budget).unwrap_or(0))
            .collect();

        // Numbers bought or found taken in this run, and countries with nothing left anywhere. A
        // number still uncertain may be ours already: buying it again would fail or pay twice.
        let mut tried: HashSet<String> = report
            .still_uncertain
            .iter()
            .map(|number| number.as_str().to_owned())
            .collect();
        let mut exhausted: HashSet<Country> = HashSet::new();
        for want in &wants {
            match self.find_and_buy(want, &mut tried, &mut exhausted).await {
                Ok(Some((number, incoming))) => {
                    if self.keep_or_release(&number, &incoming, now).await {
                        report.bought.push(number);
                    } else {
                        report.released.push(number);
                    }
                }
                Ok(None) => {
                    report.not_found += 1;
                    tracing::warn!(
                        event = "NO_NUMBERS_AVAILABLE",
                        country = want.country.code(),
                        area_code = want.area_code.as_deref(),
                        "Twilio has no number to sell here, not even anywhere in the country"
                    );
                }
                Err(failure) => {
                    tracing::warn!(event = "REPLENISH_STOPPED", error = %failure);
                    report.stopped = Some(failure.to_string());
                    break;
                }
            }
        }
        tracing::info!(
            event = "REPLENISH_RUN",
            available = stats.available,
            target = self.settings.target,
            waiting = waiting.len(),
            shortfall,
            budget,
            bought = report.bought.len(),
            released = report.released.len(),
            not_found = report.not_found,
            confirmed = report.confirmed.len(),
            not_made = report.not_made.len(),
            still_uncertain = report.still_uncertain.len(),
        );
        Ok(report)
    }

    /// Calls Twilio through the breaker. `tolerated` errors are normal answers, not failures.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, TwilioError>>,
        tolerated: impl Fn(&TwilioError) -> bool,
    ) -> Result<T, Failure> {
        if self.breaker.is_open() {
            return Err(Failure::CircuitOpen);
        }
        match request.await {
            Ok(value) => {
                self.breaker.record_success();
                Ok(value)
            }
            Err(e) => {
                if tolerated(&e) {
                    self.breaker.record_success();
                } else {
                    self.breaker.record_failure(&e);
                }
                Err(Failure::Twilio(e))
            }
        }
    }

    /// Looks each uncertain purchase up on Twilio again, oldest first, through the breaker: once it
    /// opens, the rest wait for a later run, unchecked. Only a store error that leaves the run
    /// blind (the list cannot be read, or the pool not checked) ends the run.
    async fn resolve_uncertain(&self, report: &mut RunReport) -> Result<(), ReplenishError> {
        let store = self.engine.store();
        for purchase in store.uncertain_purchases().await? {
            let number = &purchase.e164;
            let found = self
                .call(self.twilio.find_incoming_number(number), |_| false)
                .await;
            match found {
                Ok(Some(incoming)) => {
                    tracing::info!(
                        event = "NUMBER_PURCHASE_CONFIRMED",
                        number = %number.masked(),
                        twilio_sid = %incoming.sid,
                        attempted_at = %purchase.attempted_at,
                        "an uncertain purchase went through: the number is ours"
                    );
                    // In the pool already: a run that kept it could not forget the row, or a
                    // person added it by hand. Keeping it again would find it there and release
                    // a number that may be an owner's.
                    if store.pool_has_number(number).await? {
                        tracing::info!(
                            event = "NUMBER_ALREADY_IN_POOL",
                            number = %number.masked(),
                            twilio_sid = %incoming.sid,
                            "the confirmed number is in the pool already: nothing more to do"
                        );
                    } else if self
                        .keep_or_release(number, &incoming, purchase.attempted_at)
                        .await
                    {
                        report.confirmed.push(number.clone());
                    } else {
                        report.released.push(number.clone());
                    }
                    self.forget_uncertain(number).await;
                }
                Ok(None) => {
                    tracing::info!(
                        event = "NUMBER_PURCHASE_NOT_MADE",
                        number = %number.masked(),
                        attempted_at = %purchase.attempted_at,
                        "Twilio has no such number of ours: the uncertain purchase was never made"
                    );
                    report.not_made.push(number.clone());
                    self.forget_uncertain(number).await;
                }
                // Twilio was not called, so nothing was learnt and nothing is counted.
                Err(Failure::CircuitOpen) => report.still_uncertain.push(purchase.e164),
                Err(Failure::Twilio(e)) => {
                    tracing::warn!(
                        event = "NUMBER_PURCHASE_STILL_UNCERTAIN",
                        number = %number.masked(),
                        attempted_at = %purchase.attempted_at,
                        checks = purchase.checks.saturating_add(1),
                        error = %e,
                        "could not look the number up again: it will be checked on the next run"
                    );
                    if let Err(e) = store
                        .mark_uncertain_purchase_checked(number, self.engine.now())
                        .await
                    {
                        tracing::warn!(event = "UNCERTAIN_PURCHASE_CHECK_NOT_RECORDED", error = %e);
                    }
                    report.still_uncertain.push(purchase.e164);
                }
            }
        }
        Ok(())
    }

    /// Drops a resolved uncertain purchase. When that fails, the next run looks the number up
    /// again and finds it in the pool (or gone): no harm, so a warning is enough.
    async fn forget_uncertain(&self, number: &PhoneNumber) {
        if let Err(e) = self.engine.store().forget_uncertain_purchase(number).await {
            tracing::warn!(
                event = "UNCERTAIN_PURCHASE_NOT_CLEARED",
                number = %number.masked(),
                error = %e,
                "resolved, but still listed as uncertain: it will be looked up again"
            );
        }
    }

    /// Remembers a number that may have been bought, so later runs find out and it is never lost.
    async fn remember_uncertain(&self, number: &PhoneNumber) {
        let recorded = self
            .engine
            .store()
            .record_uncertain_purchase(number, self.engine.now())
            .await;
        if let Err(e) = recorded {
            tracing::error!(
                event = "UNCERTAIN_PURCHASE_NOT_RECORDED",
                number = %number.masked(),
                friendly_name = %self.settings.friendly_name,
                error = %e,
                "a number that may have been bought could not be recorded: check Twilio's numbers with this friendly name by hand"
            );
        }
    }

    /// Searches step by step and buys the first candidate nobody took meanwhile.
    async fn find_and_buy(
        &self,
        want: &Want,
        tried: &mut HashSet<String>,
        exhausted: &mut HashSet<Country>,
    ) -> Result<Option<(PhoneNumber, IncomingNumber)>, Failure> {
        if exhausted.contains(&want.country) {
            return Ok(None);
        }
        let iso = want.country.code();
        for (step, search) in want.steps(self.settings.nearby_miles) {
            let narrowing = step != Step::Anywhere;
            for _ in 0..MAX_SEARCHES_PER_STEP {
                let found = self
                    .call(self.twilio.search_local_numbers(iso, &search), |e| {
                        narrowing && is_refusal(e)
                    })
                    .await;
                let candidates = match found {
                    Ok(candidates) => candidates,
                    Err(Failure::Twilio(e)) if narrowing && is_refusal(&e) => {
                        tracing::debug!(step = step.as_str(), error = %e, "search refused; widening");
                        break;
                    }
                    Err(failure) => return Err(failure),
                };
                let next = candidates
                    .iter()
                    .filter_map(|c| PhoneNumber::parse(&c.phone_number).ok())
                    .find(|n| n.country() == want.country && !tried.contains(n.as_str()));
                let Some(number) = next else {
                    tracing::debug!(step = step.as_str(), country = iso, "no candidates");
                    if step == Step::Anywhere {
                        exhausted.insert(want.country);
                    }
                    break;
                };
                tried.insert(number.as_str().to_owned());
                if let Some(incoming) = self.buy(&number).await? {
                    tracing::debug!(step = step.as_str(), number = %number, "bought");
                    return Ok(Some((number, incoming)));
                }
                // Taken meanwhile (21422): search again for the next candidate.
                tracing::info!(
                    event = "NUMBER_TAKEN",
                    number = %number.masked(),
                    step = step.as_str(),
                    "taken before we could buy it; searching again"
                );
            }
        }
        Ok(None)
    }

    /// Buys `number`; None when it was taken meanwhile (21422).
    async fn buy(&self, number: &PhoneNumber) -> Result<Option<IncomingNumber>, Failure> {
        let base = &self.settings.public_url;
        let request = BuyNumber {
            phone_number: number.clone(),
            sms_url: format!("{base}/webhooks/twilio/sms"),
            voice_url: format!("{base}/webhooks/twilio/voice"),
            status_callback: format!("{base}/webhooks/twilio/call-status"),
            friendly_name: self.settings.friendly_name.clone(),
            address_sid: self.settings.address_sid.clone(),
            bundle_sid: self.settings.bundle_sid.clone(),
        };
        let taken = |e: &TwilioError| e.code() == Some(NUMBER_TAKEN);
        match self.call(self.twilio.buy_number(&request), taken).await {
            Ok(incoming) => Ok(Some(incoming)),
            Err(Failure::Twilio(e)) if taken(&e) => Ok(None),
            Err(Failure::Twilio(e)) if e.is_ambiguous() => {
                // The purchase may have gone through: ask Twilio before moving on, so a number we
                // paid for is never left out of the pool.
                match self
                    .call(self.twilio.find_incoming_number(number), |_| false)
                    .await
                {
                    Ok(Some(incoming)) => {
                        tracing::info!(
                            event = "NUMBER_PURCHASE_CONFIRMED",
                            number = %number.masked(),
                            twilio_sid = %incoming.sid,
                            "the purchase went through despite the unclear answer"
                        );
                        Ok(Some(incoming))
                    }
                    Ok(None) => Err(Failure::Twilio(e)),
                    Err(lookup) => {
                        tracing::error!(
                            event = "NUMBER_PURCHASE_UNCERTAIN",
                            number = %number.masked(),
                            friendly_name = %self.settings.friendly_name,
                            error = %e,
                            lookup_error = %lookup,
                            "a number may have been bought but is not in the pool: it will be looked up again on the next run"
                        );
                        self.remember_uncertain(number).await;
                        Err(lookup)
                    }
                }
            }
            Err(failure) => Err(failure),
        }
    }

    /// Records the purchase and puts the number in the pool, serving the waitlist; releases it when
    /// it cannot be kept. True when it was kept. `purchased_at` is when it was bought: for a
    /// purchase confirmed later, the attempt, which is when the daily cap began to count it.
    async fn keep_or_release(
        &self,
        number: &PhoneNumber,
        incoming: &IncomingNumber,
        purchased_at: DateTime<Utc>,
    ) -> bool {
        let sid = incoming.sid.as_str();
        tracing::info!(
            event = "NUMBER_PURCHASED",
            number = %number.masked(),
            twilio_sid = sid,
            country = number.country().code(),
        );
        // The purchase first, so the daily cap counts it whatever happens next.
        if let Err(e) = self
            .engine
            .record_pool_purchase(sid, number, purchased_at)
            .await
        {
            tracing::error!(event = "NUMBER_RECORD_FAILED", number = %number.masked(), twilio_sid = sid, error = %e);
            self.release(number, sid, "purchase_not_recorded").await;
            return false;
        }
        let added = self
            .engine
            .add_pool_numbers(&[NewPoolNumber {
                e164: number.clone(),
                twilio_sid: Some(sid.to_owned()),
            }])
            .await;
        match added {
            Ok(1) => {}
            Ok(_) => {
                tracing::error!(
                    event = "NUMBER_RECORD_FAILED",
                    number = %number.masked(),
                    twilio_sid = sid,
                    "the number is already in the pool"
                );
                self.release(number, sid, "already_in_pool").await;
                return false;
            }
            Err(e) => {
                tracing::error!(event = "NUMBER_RECORD_FAILED", number = %number.masked(), twilio_sid = sid, error = %e);
                self.release(number, sid, "pool_add_failed").await;
                return false;
            }
        }
        // The number is stored: a failure here leaves owners waiting, not a number lost.
        if let Err(e) = self.engine.serve_waitlist(number.country()).await {
            tracing::warn!(event = "WAITLIST_SERVE_FAILED", error = %e);
        }
        true
    }

    /// Gives a number back to Twilio. Bypasses the breaker (but tells it how it went).
    async fn release(&self, number: &PhoneNumber, sid: &str, reason: &str) {
        match self.twilio.release_number(sid).await {
            Ok(()) => {
                self.breaker.record_success();
                tracing::warn!(
                    event = "NUMBER_RELEASED",
                    number = %number.masked(),
                    twilio_sid = sid,
                    reason,
                    "purchase rolled back"
                );
                if let Err(e) = self
                    .engine
                    .store()
                    .mark_purchase_released(sid, self.engine.now())
                    .await
                {
                    tracing::warn!(event = "PURCHASE_RELEASE_NOT_RECORDED", twilio_sid = sid, error = %e);
                }
            }
            Err(e) => {
                self.breaker.record_failure(&e);
                tracing::error!(
                    event = "NUMBER_RELEASE_FAILED",
                    number = %number.masked(),
                    twilio_sid = sid,
                    reason,
                    error = %e,
                    "a bought number is neither in the pool nor released: release it in Twilio by hand"
                );
            }
        }
    }
}

/// The country pool numbers are bought in when no owner is waiting: the onboarding number's,
/// else the US.
pub fn home_country(onboarding_number: Option<&PhoneNumber>) -> Country {
    match onboarding_number.map(PhoneNumber::country) {
        Some(Country::Gb) => Country::Gb,
        _ => Country::Us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn api(status: u16, code: i64) -> TwilioError {
        TwilioError::Api {
            status,
            code,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn breaker_opens_at_the_threshold_and_closes_after_a_good_trial() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let breaker = CircuitBreaker::new(clock.clone(), 3, Duration::minutes(5));
        for _ in 0..2 {
            breaker.record_failure(&api(500, 20500));
        }
        assert!(!breaker.is_open());
        breaker.record_failure(&api(500, 20500));
        assert!(breaker.is_open());
        let opened = breaker.opened_at().unwrap();
        clock.advance(Duration::minutes(5));
        assert!(!breaker.is_open(), "half-open after the cool-off");
        breaker.record_failure(&api(500, 20500));
        assert!(breaker.is_open(), "a failed trial opens it again");
        assert!(breaker.opened_at().unwrap() > opened);
        clock.advance(Duration::minutes(5));
        breaker.record_success();
        assert!(!breaker.is_open());
        assert_eq!(breaker.opened_at(), None);
        assert_eq!(breaker.consecutive_failures(), 0);
    }

    #[test]
    fn us_state_is_read_from_a_trailing_code() {
        assert_eq!(us_state(Some("Austin, TX")), Some("TX".into()));
        assert_eq!(us_state(Some("Austin TX")), Some("TX".into()));
        assert_eq!(us_state(Some("Austin")), None);
        assert_eq!(us_state(Some("in la")), None);
        assert_eq!(us_state(None), None);
    }

    #[test]
    fn refusals_are_client_errors_other_than_auth_and_rate() {
        assert!(is_refusal(&api(400, 21452)));
        assert!(!is_refusal(&api(401, 20003)));
        assert!(!is_refusal(&api(429, 20429)));
        assert!(!is_refusal(&api(400, 20429)));
        assert!(!is_refusal(&api(500, 20500)));
    }

    #[test]
    fn home_country_follows_the_onboarding_number() {
        let uk: PhoneNumber = "+447700900000".parse().unwrap();
        let us: PhoneNumber = "+14155550100".parse().unwrap();
        assert_eq!(home_country(Some(&uk)), Country::Gb);
        assert_eq!(home_country(Some(&us)), Country::Us);
        assert_eq!(home_country(None), Country::Us);
    }
}
