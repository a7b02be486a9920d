//! The names of the conversation's steps and gates, as stored, shown by the admin API and written in fixtures.
//!
//! A step's name is derived from the state machine's state, and back, in one place
//! (`State::name` and `From<StateName> for State` in `machine.rs`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an owner is in onboarding. The string forms are part of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateName {
    #[serde(rename = "S1_BUSINESS_TYPE_LOCATION")]
    S1BusinessTypeLocation,
    #[serde(rename = "S2_BUSINESS_NAME")]
    S2BusinessName,
    #[serde(rename = "S3_OWNER_NAME")]
    S3OwnerName,
    #[serde(rename = "S4_NOTIFICATION_PREF")]
    S4NotificationPref,
    #[serde(rename = "S5_CONFIRM_LIVE")]
    S5ConfirmLive,
    #[serde(rename = "S6_PHONE_TYPE")]
    S6PhoneType,
    #[serde(rename = "S7_FWD_SENT")]
    S7FwdSent,
    #[serde(rename = "S8_FWD_CONFIRMED")]
    S8FwdConfirmed,
    #[serde(rename = "S9_TEST_CALL_DETECTED")]
    S9TestCallDetected,
    #[serde(rename = "COMPLETE")]
    Complete,
}

impl StateName {
    pub const ALL: [StateName; 10] = [
        StateName::S1BusinessTypeLocation,
        StateName::S2BusinessName,
        StateName::S3OwnerName,
        StateName::S4NotificationPref,
        StateName::S5ConfirmLive,
        StateName::S6PhoneType,
        StateName::S7FwdSent,
        StateName::S8FwdConfirmed,
        StateName::S9TestCallDetected,
        StateName::Complete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateName::S1BusinessTypeLocation => "S1_BUSINESS_TYPE_LOCATION",
            StateName::S2BusinessName => "S2_BUSINESS_NAME",
            StateName::S3OwnerName => "S3_OWNER_NAME",
            StateName::S4NotificationPref => "S4_NOTIFICATION_PREF",
            StateName::S5ConfirmLive => "S5_CONFIRM_LIVE",
            StateName::S6PhoneType => "S6_PHONE_TYPE",
            StateName::S7FwdSent => "S7_FWD_SENT",
            StateName::S8FwdConfirmed => "S8_FWD_CONFIRMED",
            StateName::S9TestCallDetected => "S9_TEST_CALL_DETECTED",
            StateName::Complete => "COMPLETE",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// True once the owner has a number and is being walked through forwarding (S6 onwards).
    pub fn is_past_gate(self) -> bool {
        matches!(
            self,
            StateName::S6PhoneType
                | StateName::S7FwdSent
                | StateName::S8FwdConfirmed
                | StateName::S9TestCallDetected
                | StateName::Complete
        )
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an owner who said YES at S5 is held there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    PaymentRequired,
    AwaitingNumber,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::PaymentRequired => "payment_required",
            Gate::AwaitingNumber => "awaiting_number",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "payment_required" => Some(Gate::PaymentRequired),
            "awaiting_number" => Some(Gate::AwaitingNumber),
            _ => None,
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
