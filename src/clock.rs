//! Time and ids come through these seams, so tests and fixture replays are deterministic.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::domain::OwnerId;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// Wall-clock time, truncated to microseconds so it round-trips through PostgreSQL unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        now.duration_trunc(Duration::microseconds(1)).unwrap_or(now)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub trait Ids: Send + Sync + 'static {
    fn owner_id(&self) -> OwnerId;
}

/// Unguessable ids (`c_` and 16 hex digits): they travel in payment links.
#[derive(Debug, Default)]
pub struct RandomIds {
    counter: AtomicU64,
    seed: RandomState,
}

impl Ids for RandomIds {
    fn owner_id(&self) -> OwnerId {
        // RandomState is keyed from the OS's randomness per instance; hashing a counter and the time
        // gives distinct, unpredictable values without another dependency.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let value = self.seed.hash_one((n, nanos, std::process::id()));
        OwnerId::new(format!("c_{value:016x}"))
    }
}

/// `c_0000000001`, `c_0000000002`, ...: for fixtures and tests.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl Ids for SequentialIds {
    fn owner_id(&self) -> OwnerId {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        OwnerId::new(format!("c_{n:010}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_distinct_and_fit_a_client_reference() {
        let ids = RandomIds::default();
        let a = ids.owner_id();
        let b = ids.owner_id();
        assert_ne!(a, b);
        assert!(OwnerId::parse(a.as_str()).is_some());
    }

    #[test]
    fn sequential_ids_count_up() {
        let ids = SequentialIds::default();
        assert_eq!(ids.owner_id().as_str(), "c_0000000001");
        assert_eq!(ids.owner_id().as_str(), "c_0000000002");
    }
}
