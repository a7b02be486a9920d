//! Voice: proving call forwarding with a test call, and answering calls to owners' numbers.
//!
//! Proof that an owner's missed calls reach their new number, in order of strength:
//! - our verification call (from `verify_caller`) arrives at the new number: it rang the owner's
//!   phone, went unanswered and was forwarded;
//! - `ForwardedFrom` is the owner's phone (carriers set it only sometimes);
//! - while the owner is in S8, any call from a number other than the owner's (testing by hand from
//!   another phone).
//!
//! A call from the owner's own phone straight to the new number proves nothing, and they are told so.

use crate::conversation::{Event, StateName};
use crate::domain::{PhoneNumber, mask_phone};
use crate::engine::{Engine, EngineError};
use crate::flows::MessageKey;
use crate::store::{Claim, NewCall, Store, Tx};
use crate::twilio::twiml::{RejectReason, Response};

/// A call as Twilio's voice webhook reports it.
#[derive(Debug, Clone)]
pub struct InboundCall {
    pub call_sid: String,
    pub from: String,
    pub to: String,
    pub forwarded_from: Option<String>,
    pub direction: String,
    pub status: String,
}

/// What a call to an owner's number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Proof,
    OwnCall,
}

/// Decides whether a call to an owner in S8 proves forwarding.
pub fn judge(
    from: &str,
    forwarded_from: Option<&str>,
    owner: &PhoneNumber,
    verify_caller: Option<&PhoneNumber>,
) -> Verdict {
    let from_ours = verify_caller.is_some_and(|ours| ours.as_str() == from);
    let forwarded_by_owner = forwarded_from == Some(owner.as_str());
    if from_ours || forwarded_by_owner || from != owner.as_str() {
        Verdict::Proof
    } else {
        Verdict::OwnCall
    }
}

impl<S: Store> Engine<S> {
    /// Answers a call to one of our numbers; the same TwiML on every retry of its `CallSid`.
    pub async fn handle_call(&self, call: &InboundCall) -> Result<String, EngineError> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let claim = NewCall {
            call_sid: &call.call_sid,
            direction: &call.direction,
            from: &call.from,
            to: &call.to,
            forwarded_from: call.forwarded_from.as_deref(),
            status: &call.status,
            at: now,
        };
        // The owner holding the number called, locked as the `CallSid` is claimed.
        let (claim, owner) = match PhoneNumber::parse(&call.to) {
            Ok(number) => tx.claim_call_locking(&claim, &number).await?,
            Err(_) => (tx.claim_call(&claim).await?, None),
        };
        if let Claim::Duplicate { response } = claim {
            tx.commit().await?;
            return Ok(response);
        }
        let Some(mut owner) = owner else {
            // Not a number of ours that anyone holds: refuse without answering (and being billed).
            let response = Response::new().reject(RejectReason::Rejected).to_xml();
            tx.finish_call(&call.call_sid, None, false, &response)
                .await?;
            tx.commit().await?;
            tracing::info!(event = "CALL_REJECTED", to = %mask_phone(&call.to));
            return Ok(response);
        };
        let catalog = self.flows.catalog(owner.locale);
        let language = owner.locale.tag();
        let (response, is_test_call) = match owner.state {
            StateName::S8FwdConfirmed => {
                let verdict = judge(
                    &call.from,
                    call.forwarded_from.as_deref(),
                    &owner.owner_phone,
                    self.settings.verify_caller.as_ref(),
                );
                match verdict {
                    Verdict::Proof => {
                        tracing::info!(
                            event = "TEST_CALL_DETECTED",
                            owner_id = %owner.id,
                            phone = %owner.owner_phone.masked(),
                            from = %mask_phone(&call.from),
                        );
                        let decision = self
                            .run(&mut tx, &mut owner, Event::TestCallDetected, now)
                            .await?;
                        self.queue_replies(&mut tx, &owner, &decision, now).await?;
                        let say = catalog.render(MessageKey::VoiceConfirmed, &[]);
                        (Response::new().say(&say, language).hangup(), true)
                    }
                    Verdict::OwnCall => {
                        tracing::info!(
                            event = "TEST_CALL_NOT_PROOF",
                            owner_id = %owner.id,
                            phone = %owner.owner_phone.masked(),
                        );
                        let decision = self
                            .run(&mut tx, &mut owner, Event::OwnCallNotProof, now)
                            .await?;
                        self.queue_replies(&mut tx, &owner, &decision, now).await?;
                        (Response::new().reject(RejectReason::Rejected), false)
                    }
                }
            }
            // The live product: a caller the owner missed, asked to leave a message.
            StateName::Complete => (self.missed_call(&mut tx, &owner, call, now).await?, false),
            // Not live yet (a number held while paying again, say): a polite message only.
            _ => {
                tracing::info!(
                    event = "MISSED_CALL",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                    from = %mask_phone(&call.from),
                );
                let business = owner.business_name.clone().unwrap_or_default();
                let say = catalog.render(
                    MessageKey::VoiceNotLive,
                    &[("business_name", business.as_str())],
                );
                (Response::new().say(&say, language).hangup(), false)
            }
        };
        let response = response.to_xml();
        tx.finish_call(&call.call_sid, Some(&owner.id), is_test_call, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// A call status callback. False when the call is not one we know.
    pub async fn call_status(
        &self,
        call_sid: &str,
        status: &str,
        sequence_number: Option<i32>,
        duration_secs: Option<i32>,
    ) -> Result<bool, EngineError> {
        let mut tx = self.store().begin().await?;
        let now = self.now();
        let known = tx
            .update_call_status(call_sid, status, sequence_number, duration_secs, now)
            .await?;
        if known {
            self.record_call_cost(&mut tx, call_sid, status, duration_secs, now)
                .await?;
        }
        tx.commit().await?;
        Ok(known)
    }

    /// Texts troubleshooting tips to owners whose test call has not come within the window.
    /// Each owner is told once per attempt; CALL ME opens a new window. Returns how many.
    pub async fn verify_timeouts(&self) -> Result<usize, EngineError> {
        let mut told = 0;
        loop {
            let now = self.now();
            let started_before = now - self.settings.verify_window;
            let mut tx = self.store().begin().await?;
            let due = tx.lock_verify_due(started_before, 1).await?;
            let Some(mut owner) = due.into_iter().next() else {
                return Ok(told);
            };
            tracing::info!(
                event = "VERIFY_TIMED_OUT",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
            );
            let decision = self
                .run(&mut tx, &mut owner, Event::VerifyTimedOut, now)
                .await?;
            self.queue_replies(&mut tx, &owner, &decision, now).await?;
            tx.commit().await?;
            told += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> PhoneNumber {
        "+447700900123".parse().unwrap()
    }

    #[test]
    fn our_call_forwarded_is_proof() {
        let ours: PhoneNumber = "+447700900000".parse().unwrap();
        assert_eq!(
            judge("+447700900000", None, &owner(), Some(&ours)),
            Verdict::Proof
        );
    }

    #[test]
    fn forwarded_from_the_owner_is_proof_even_from_the_owner() {
        assert_eq!(
            judge("+447700900123", Some("+447700900123"), &owner(), None),
            Verdict::Proof
        );
    }

    #[test]
    fn a_call_from_another_phone_is_proof() {
        assert_eq!(judge("+447700900555", None, &owner(), None), Verdict::Proof);
    }

    #[test]
    fn the_owners_own_call_is_not_proof() {
        assert_eq!(
            judge("+447700900123", None, &owner(), None),
            Verdict::OwnCall
        );
        assert_eq!(
            judge("+447700900123", Some("+447700900999"), &owner(), None),
            Verdict::OwnCall
        );
    }
}
