//! The budget guard's rules: which spend may go ahead while a budget is exceeded. Pure: the shell
//! reads whether a budget is exceeded from the ledger and asks here.
//!
//! Spend an owner is already waiting for, or has paid for, always goes ahead; spend we choose to
//! make (buying numbers ahead of need, nudging a quiet owner, starting a new conversation) waits
//! for the period to turn.

/// Something that costs money, by who is waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// The answer to a text from an owner already in a conversation.
    Reply,
    /// A text the payment caused (the number, the next step).
    PaymentText,
    /// The call that proves an owner's forwarding.
    VerifyCall,
    /// An owner told that a caller tried to reach them.
    MissedCallAlert,
    /// A text back to a caller the owner missed.
    CallerTextBack,
    /// A reminder to an owner who went quiet.
    Reminder,
    /// The pool keeper buying numbers ahead of need.
    PoolPurchase,
    /// A new owner's first conversation.
    NewOwner,
}

/// Whether `spend` goes ahead now.
pub fn allowed(spend: Spend, budget_exceeded: bool) -> bool {
    match spend {
        Spend::Reply | Spend::PaymentText | Spend::VerifyCall | Spend::MissedCallAlert => true,
        Spend::CallerTextBack | Spend::Reminder | Spend::PoolPurchase | Spend::NewOwner => {
            !budget_exceeded
        }
    }
}

/// What to do with a text from an owner, as far as the budget goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run the conversation as usual.
    Serve,
    /// A new owner while a budget is exceeded: say we're full, keep their text, serve them first
    /// when the period turns.
    HoldNew,
    /// An owner already held who texts again while a budget is still exceeded: nothing more is
    /// said (they were told when we would text).
    StillHeld,
    /// An owner held earlier texts after the period turned, before the release reached them:
    /// greet them now, reading the first text they sent.
    ReleaseNow,
}

/// `created`: this text made the owner; `held`: they are waiting for the period to turn;
/// `opting_out`: the text is STOP or another opt-out word, which is always honoured (it costs no
/// reply) and ends any hold.
pub fn admit(created: bool, held: bool, budget_exceeded: bool, opting_out: bool) -> Admission {
    if opting_out {
        return Admission::Serve;
    }
    match (created, held, budget_exceeded) {
        (true, _, true) => Admission::HoldNew,
        (false, true, true) => Admission::StillHeld,
        (false, true, false) => Admission::ReleaseNow,
        _ => Admission::Serve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_owners_wait_for_always_goes_ahead() {
        for spend in [
            Spend::Reply,
            Spend::PaymentText,
            Spend::VerifyCall,
            Spend::MissedCallAlert,
        ] {
            assert!(allowed(spend, true), "{spend:?}");
            assert!(allowed(spend, false), "{spend:?}");
        }
    }

    #[test]
    fn discretionary_spend_waits_while_a_budget_is_exceeded() {
        for spend in [
            Spend::CallerTextBack,
            Spend::Reminder,
            Spend::PoolPurchase,
            Spend::NewOwner,
        ] {
            assert!(!allowed(spend, true), "{spend:?}");
            assert!(allowed(spend, false), "{spend:?}");
        }
    }

    #[test]
    fn new_owners_are_held_only_while_exceeded_and_released_after() {
        assert_eq!(admit(true, false, true, false), Admission::HoldNew);
        assert_eq!(admit(true, false, false, false), Admission::Serve);
        assert_eq!(admit(false, true, true, false), Admission::StillHeld);
        assert_eq!(admit(false, true, false, false), Admission::ReleaseNow);
        assert_eq!(admit(false, false, true, false), Admission::Serve);
        assert_eq!(admit(false, false, false, false), Admission::Serve);
    }

    #[test]
    fn an_opt_out_is_always_honoured() {
        for created in [true, false] {
            for held in [true, false] {
                for exceeded in [true, false] {
                    assert_eq!(admit(created, held, exceeded, true), Admission::Serve);
                }
            }
        }
    }
}
