//! The number pool seen from the engine: numbers in and out of quarantine, numbers added, and
//! waiting owners served first come, first served.

use chrono::{DateTime, Utc};

use crate::conversation::{Event, Gate};
use crate::domain::{Country, PhoneNumber};
use crate::store::{NewPoolNumber, QuarantineOutcome, Store, Tx};

use super::{Engine, EngineError, Outcome};

impl<S: Store> Engine<S> {
    /// Sends a number no owner holds to quarantine. A number in use is refused: taking it from its
    /// owner is a payment decision, not a pool one.
    pub async fn release_number(&self, number: &PhoneNumber) -> Result<(), EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if let Some(owner) = tx.lock_owner_by_number(number).await? {
            return Err(EngineError::NumberInUse(number.masked(), owner.id));
        }
        self.quarantine(&mut tx, number, false, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Returns numbers whose quarantine is over to the pool, and serves the waitlist with them.
    pub async fn end_quarantines(&self) -> Result<u64, EngineError> {
        let mut tx = self.store.begin().await?;
        let returned = tx.end_quarantines(self.clock.now()).await?;
        tx.commit().await?;
        if returned > 0 {
            tracing::info!(event = "QUARANTINE_ENDED", numbers = returned);
            for country in [Country::Gb, Country::Us, Country::Other] {
                self.serve_waitlist(country).await?;
            }
        }
        Ok(returned)
    }

    /// The pool keeper's low-water check, for each country we sell in: logs `POOL_LOW` when a
    /// country's available numbers cross below `pool_low_water`, once per crossing whichever
    /// replica sees it first (the level last seen is stored). Counts no further than the mark, so
    /// it costs the same with a million numbers as with ten. Returns the countries that crossed,
    /// with the numbers they have left.
    pub async fn check_pool_levels(&self) -> Result<Vec<(Country, i64)>, EngineError> {
        let low_water = self.settings.pool_low_water;
        let mut crossed = Vec::new();
        for country in [Country::Gb, Country::Us] {
            let available = self.store.available_numbers(country, low_water).await?;
            let mut tx = self.store.begin().await?;
            let changed = tx
                .note_pool_level(country, available < low_water, available, self.clock.now())
                .await?;
            tx.commit().await?;
            if changed == Some(true) {
                tracing::warn!(
                    event = "POOL_LOW",
                    country = country.code(),
                    available,
                    low_water,
                    "add numbers: onboard pool add"
                );
                crossed.push((country, available));
            }
        }
        Ok(crossed)
    }

    /// Puts numbers in the pool, then serves waiting owners first come, first served.
    /// Returns how many numbers were new and what each served owner was told.
    pub async fn add_numbers(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<(u64, Vec<Outcome>), EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let new: Vec<NewPoolNumber> = numbers
            .iter()
            .map(|e164| NewPoolNumber {
                e164: e164.clone(),
                twilio_sid: None,
            })
            .collect();
        let added = tx.add_numbers(&new, now).await?;
        tx.commit().await?;
        let mut countries: Vec<_> = numbers.iter().map(PhoneNumber::country).collect();
        countries.dedup();
        let mut served = Vec::new();
        for country in countries {
            served.extend(self.serve_waitlist(country).await?);
        }
        Ok((added, served))
    }

    /// Stores numbers (with their Twilio sids) as AVAILABLE and commits; returns how many were new.
    /// Unlike [`Engine::add_numbers`] it does not serve the waitlist: the caller does that with
    /// [`Engine::serve_waitlist`], so an error there is never mistaken for the numbers not being stored.
    pub async fn add_pool_numbers(&self, numbers: &[NewPoolNumber]) -> Result<u64, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let added = tx.add_numbers(numbers, now).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Gives numbers to waiting owners of a country, oldest first, one transaction each, until the
    /// pool or the waitlist runs out.
    pub async fn serve_waitlist(
        &self,
        country: crate::domain::Country,
    ) -> Result<Vec<Outcome>, EngineError> {
        let mut served = Vec::new();
        loop {
            let now = self.clock.now();
            let mut tx = self.store.begin().await?;
            let Some(mut owner) = tx.lock_waitlist(country, 1).await?.into_iter().next() else {
                return Ok(served);
            };
            let decision = self
                .run_unsaved(&mut tx, &mut owner, Event::NumberAvailable, now)
                .await?;
            if owner.gate == Some(Gate::AwaitingNumber) {
                // Still no number: the pool ran dry again; leave the rest waiting (and roll back).
                return Ok(served);
            }
            owner.updated_at = now;
            tx.save_owner(&owner).await?;
            // Not an answer to the owner: it waits for the end of their quiet hours.
            let texts = self
                .queue_proactive(&mut tx, &owner, &decision, now)
                .await?;
            tx.commit().await?;
            served.push(Outcome {
                owner_id: owner.id,
                state: owner.state,
                texts,
            });
        }
    }

    pub(super) async fn quarantine(
        &self,
        tx: &mut S::Tx,
        number: &PhoneNumber,
        keep_for_owner: bool,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let until = now + self.settings.quarantine;
        match tx
            .quarantine_number(number, until, keep_for_owner, now)
            .await?
        {
            QuarantineOutcome::Quarantined { .. } => {
                tracing::info!(event = "NUMBER_RELEASED", number = %number.masked(), until = %until);
                Ok(())
            }
            QuarantineOutcome::NotInPool => Err(EngineError::UnknownNumber(number.masked())),
        }
    }
}
