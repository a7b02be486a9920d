//! The pool replenisher against a mock Twilio (wiremock): where it searches, what it buys, what it
//! does when a purchase cannot be kept or its outcome is unknown, the daily cap, the circuit
//! breaker, and two replicas on one PostgreSQL. Time is a manual clock: nothing here waits.

use crate::support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use onboard::clock::{Clock, ManualClock, SequentialIds};
use onboard::conversation::{Gate, StateName};
use onboard::domain::{Country, OwnerId, PhoneNumber};
use onboard::engine::Engine;
use onboard::replay::fixture_epoch;
use onboard::replenish::{CircuitBreaker, ReplenishSettings, Replenisher, RunOutcome, RunReport};
use onboard::store::replenish::ReplenishStore;
use onboard::store::{NewPoolNumber, Owner, PgStore, SqliteStore, Store, Tx};
use onboard::twilio::client::{Credentials, TwilioClient, TwilioError};
use serde_json::json;
use support::app::{BackEnd, Sqlite};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const PUBLIC_URL: &str = "https://onboard.example.com";

fn account_path(rest: &str) -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT}/{rest}")
}

fn phone(raw: &str) -> PhoneNumber {
    raw.parse().unwrap()
}

fn sid_of(number: &str) -> String {
    format!("PN{}", number.trim_start_matches('+'))
}

fn available(numbers: &[&str]) -> serde_json::Value {
    json!({
        "available_phone_numbers": numbers
            .iter()
            .map(|n| json!({"phone_number": n, "region": null, "locality": null, "iso_country": "US"}))
            .collect::<Vec<_>>()
    })
}

fn form(request: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&request.body).unwrap_or_default()
}

fn form_value(request: &Request, name: &str) -> Option<String> {
    form(request)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Matches a form body holding at least these fields.
struct FormHas(Vec<(&'static str, String)>);

impl Match for FormHas {
    fn matches(&self, request: &Request) -> bool {
        let fields = form(request);
        self.0
            .iter()
            .all(|(k, v)| fields.iter().any(|(fk, fv)| fk == k && fv == v))
    }
}

fn buying(number: &str) -> FormHas {
    FormHas(vec![("PhoneNumber", number.to_owned())])
}

/// A purchase that succeeds, echoing the number with a sid made from it.
struct Sold;

impl Respond for Sold {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let number = form_value(request, "PhoneNumber").unwrap_or_default();
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": sid_of(&number), "phone_number": number}))
    }
}

/// Twilio with an inventory: searches list what is unsold, purchases sell once (then 21422).
#[derive(Clone)]
struct FakeTwilio {
    inventory: Vec<String>,
    sold: Arc<Mutex<HashSet<String>>>,
}

impl FakeTwilio {
    fn new(inventory: &[&str]) -> Self {
        Self {
            inventory: inventory.iter().map(|s| s.to_string()).collect(),
            sold: Arc::default(),
        }
    }

    fn sold(&self) -> usize {
        self.sold.lock().unwrap().len()
    }

    async fn mount(&self, server: &MockServer) {
        Mock::given(method("GET"))
            .and(path(account_path("AvailablePhoneNumbers/US/Local.json")))
            .respond_with(self.clone())
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path(account_path("IncomingPhoneNumbers.json")))
            .respond_with(self.clone())
            .mount(server)
            .await;
    }
}

impl Respond for FakeTwilio {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut sold = self.sold.lock().unwrap();
        if request.method.as_str() == "GET" {
            let unsold: Vec<&str> = self
                .inventory
                .iter()
                .filter(|n| !sold.contains(*n))
                .map(String::as_str)
                .collect();
            return ResponseTemplate::new(200).set_body_json(available(&unsold));
        }
        let number = form_value(request, "PhoneNumber").unwrap_or_default();
        if !sold.insert(number.clone()) {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"code": 21422, "message": "not available"}));
        }
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": sid_of(&number), "phone_number": number}))
    }
}

struct Harness<S: ReplenishStore> {
    engine: Arc<Engine<S>>,
    clock: Arc<ManualClock>,
    breaker: Arc<CircuitBreaker>,
    keeper: Replenisher<S>,
}

fn engine<S: Store>(store: S, clock: Arc<ManualClock>) -> Arc<Engine<S>> {
    support::app::engine_on(
        store,
        &support::app::test_config(&[("ONBOARDING_NUMBER", ""), ("POOL_LOW_WATER", "0")]),
        clock,
        Arc::new(SequentialIds::default()),
    )
}

fn harness<S: ReplenishStore>(
    engine: Arc<Engine<S>>,
    clock: Arc<ManualClock>,
    server: &MockServer,
    target: i64,
    max_buy_per_day: i64,
) -> Harness<S> {
    let twilio = TwilioClient::new(
        &server.uri(),
        Credentials {
            account_sid: ACCOUNT.to_owned(),
            username: ACCOUNT.to_owned(),
            secret: "token".to_owned(),
        },
        std::time::Duration::from_secs(5),
    );
    let breaker = Arc::new(CircuitBreaker::new(clock.clone(), 5, Duration::minutes(5)));
    let keeper = Replenisher::new(
        engine.clone(),
        twilio,
        breaker.clone(),
        ReplenishSettings::new(target, max_buy_per_day, Country::Us, PUBLIC_URL),
    );
    Harness {
        engine,
        clock,
        breaker,
        keeper,
    }
}

/// A keeper over a fresh store of back end `B`, on a manual clock.
async fn keeper<B: BackEnd>(
    server: &MockServer,
    target: i64,
    max_buy_per_day: i64,
) -> Harness<B::Store>
where
    B::Store: ReplenishStore,
{
    let store = B::store().await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    harness(
        engine(store, clock.clone()),
        clock,
        server,
        target,
        max_buy_per_day,
    )
}

/// A paid owner who met an empty pool and waits for a number.
async fn waiting_owner<S: Store>(
    store: &S,
    id: &str,
    raw: &str,
    location: &str,
    at: DateTime<Utc>,
) {
    let mut tx = store.begin().await.unwrap();
    let (owner, _) = tx
        .lock_or_create_owner(&phone(raw), || Owner::new(OwnerId::new(id), phone(raw), at))
        .await
        .unwrap();
    tx.save_owner(&Owner {
        state: StateName::S5ConfirmLive,
        gate: Some(Gate::AwaitingNumber),
        business_type: Some("Plumber".into()),
        location: Some(location.into()),
        business_name: Some("Bay Pipes".into()),
        owner_name: Some("Sam".into()),
        payment_active: true,
        paid_at: Some(at),
        waitlisted_at: Some(at),
        ..owner
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn report<S: ReplenishStore>(keeper: &Replenisher<S>) -> RunReport {
    match keeper.run_once().await.expect("run") {
        RunOutcome::Ran(report) => report,
        other => panic!("expected a run, got {other:?}"),
    }
}

/// What the tests read back that the store's API does not show.
trait Probe: ReplenishStore {
    /// A pool number's status and sid.
    fn pool_row(&self, e164: &str) -> impl Future<Output = Option<(String, Option<String>)>>;
    /// Recorded purchases of this sid (0 or 1).
    fn purchases_of(&self, twilio_sid: &str) -> impl Future<Output = i64>;
    /// Whether the purchase of this sid is marked released.
    fn purchase_released(&self, twilio_sid: &str) -> impl Future<Output = bool>;
}

const POOL_ROW: &str = "SELECT status, twilio_sid FROM pool_numbers WHERE e164 = $1";
const PURCHASES_OF: &str = "SELECT COUNT(*) FROM pool_purchases WHERE twilio_sid = $1";
const PURCHASE_RELEASED: &str =
    "SELECT released_at IS NOT NULL FROM pool_purchases WHERE twilio_sid = $1";

/// The same SQL on either back end, through each store's own connection.
macro_rules! impl_probe {
    ($($store:ty),*) => {$(
        impl Probe for $store {
            async fn pool_row(&self, e164: &str) -> Option<(String, Option<String>)> {
                sqlx::query_as(POOL_ROW)
                    .bind(e164)
                    .fetch_optional(&mut *self.conn().await.unwrap())
                    .await
                    .unwrap()
            }
            async fn purchases_of(&self, twilio_sid: &str) -> i64 {
                sqlx::query_scalar(PURCHASES_OF)
                    .bind(twilio_sid)
                    .fetch_one(&mut *self.conn().await.unwrap())
                    .await
                    .unwrap()
            }
            async fn purchase_released(&self, twilio_sid: &str) -> bool {
                sqlx::query_scalar(PURCHASE_RELEASED)
                    .bind(twilio_sid)
                    .fetch_one(&mut *self.conn().await.unwrap())
                    .await
                    .unwrap()
            }
        }
    )*};
}

impl_probe!(SqliteStore, PgStore);

async fn pool_row<S: Probe>(store: &S, e164: &str) -> Option<(String, Option<String>)> {
    store.pool_row(e164).await
}

fn search_mock() -> wiremock::MockBuilder {
    Mock::given(method("GET")).and(path(account_path("AvailablePhoneNumbers/US/Local.json")))
}

fn buy_mock() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path(account_path("IncomingPhoneNumbers.json")))
}

/// Twilio's lookup of one of our numbers.
fn lookup_mock(number: &str) -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path(account_path("IncomingPhoneNumbers.json")))
        .and(query_param("PhoneNumber", number))
}

fn ours(number: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "incoming_phone_numbers": [{"sid": sid_of(number), "phone_number": number}]
    }))
}

fn not_ours() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"incoming_phone_numbers": []}))
}

/// A 5xx: for a purchase, it may or may not have gone through.
fn twilio_error() -> ResponseTemplate {
    ResponseTemplate::new(500).set_body_json(json!({"code": 20500, "message": "oops"}))
}

async fn buys_in_the_waiting_owners_area_code_and_serves_them<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 0, 10).await;
    waiting_owner(
        h.engine.store(),
        "c_0000000001",
        "+14155550123",
        "San Francisco",
        h.clock.now(),
    )
    .await;
    search_mock()
        .and(query_param("AreaCode", "415"))
        .and(query_param("SmsEnabled", "true"))
        .and(query_param("VoiceEnabled", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&["+14155550777"])))
        .expect(1)
        .mount(&server)
        .await;
    search_mock()
        .and(query_param_is_missing("AreaCode"))
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[])))
        .expect(0)
        .mount(&server)
        .await;
    buy_mock()
        .and(FormHas(vec![
            ("PhoneNumber", "+14155550777".into()),
            ("SmsUrl", format!("{PUBLIC_URL}/webhooks/twilio/sms")),
            ("VoiceUrl", format!("{PUBLIC_URL}/webhooks/twilio/voice")),
            (
                "StatusCallback",
                format!("{PUBLIC_URL}/webhooks/twilio/call-status"),
            ),
            ("FriendlyName", "onboard pool".into()),
        ]))
        .respond_with(Sold)
        .expect(1)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.shortfall, 1, "target 0 plus one waiting owner");
    assert_eq!(report.bought, [phone("+14155550777")]);
    let owner = h
        .engine
        .owner_by_phone(&phone("+14155550123"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.twilio_number, Some(phone("+14155550777")));
    assert_eq!(owner.gate, None);
    assert_eq!(owner.state, StateName::S6PhoneType);
    assert_eq!(
        pool_row(h.engine.store(), "+14155550777").await,
        Some(("ASSIGNED".into(), Some(sid_of("+14155550777"))))
    );
}

async fn widens_to_nearby_region_then_anywhere_when_the_area_code_has_none<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 0, 10).await;
    waiting_owner(
        h.engine.store(),
        "c_0000000001",
        "+14155550123",
        "San Francisco, CA",
        h.clock.now(),
    )
    .await;
    let empty = ResponseTemplate::new(200).set_body_json(available(&[]));
    search_mock()
        .and(query_param("AreaCode", "415"))
        .respond_with(empty.clone())
        .expect(1)
        .mount(&server)
        .await;
    search_mock()
        .and(query_param("NearNumber", "+14155550123"))
        .and(query_param("Distance", "25"))
        .respond_with(empty.clone())
        .expect(1)
        .mount(&server)
        .await;
    search_mock()
        .and(query_param("InRegion", "CA"))
        .respond_with(empty)
        .expect(1)
        .mount(&server)
        .await;
    search_mock()
        .and(query_param_is_missing("AreaCode"))
        .and(query_param_is_missing("NearNumber"))
        .and(query_param_is_missing("InRegion"))
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&["+12125550100"])))
        .expect(1)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying("+12125550100"))
        .respond_with(Sold)
        .expect(1)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.bought, [phone("+12125550100")]);
    let owner = h
        .engine
        .owner_by_phone(&phone("+14155550123"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.twilio_number, Some(phone("+12125550100")));
}

async fn uk_owners_are_searched_by_region_then_anywhere_never_by_area_code<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 0, 10).await;
    waiting_owner(
        h.engine.store(),
        "c_0000000001",
        "+447700900123",
        "Leeds",
        h.clock.now(),
    )
    .await;
    let gb = || {
        Mock::given(method("GET")).and(path(account_path("AvailablePhoneNumbers/GB/Local.json")))
    };
    gb().and(query_param("InRegion", "Leeds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[])))
        .expect(1)
        .mount(&server)
        .await;
    gb().and(query_param_is_missing("InRegion"))
        .and(query_param_is_missing("AreaCode"))
        .and(query_param_is_missing("NearNumber"))
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&["+447700900555"])))
        .expect(1)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying("+447700900555"))
        .respond_with(Sold)
        .expect(1)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.bought, [phone("+447700900555")]);
}

async fn nothing_is_bought_when_twilio_has_no_numbers_anywhere<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 2, 10).await;
    search_mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[])))
        // Both numbers wanted are anywhere in the US: one empty answer is enough for the run.
        .expect(1)
        .mount(&server)
        .await;
    buy_mock().respond_with(Sold).expect(0).mount(&server).await;

    let report = report(&h.keeper).await;

    assert_eq!(report.shortfall, 2);
    assert_eq!(report.not_found, 2);
    assert!(report.bought.is_empty());
    assert_eq!(h.engine.store().pool_stats().await.unwrap().total, 0);
}

async fn a_purchase_that_cannot_be_recorded_is_released<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 2, 10).await;
    // Already in the pool under another sid: adding it again adds nothing.
    let added = h
        .engine
        .add_pool_numbers(&[NewPoolNumber {
            e164: phone("+14155550777"),
            twilio_sid: Some("PNold".into()),
        }])
        .await
        .unwrap();
    assert_eq!(added, 1);
    search_mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&["+14155550777"])))
        .expect(1)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying("+14155550777"))
        .respond_with(Sold)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(account_path(&format!(
            "IncomingPhoneNumbers/{}.json",
            sid_of("+14155550777")
        ))))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.released, [phone("+14155550777")]);
    assert!(report.bought.is_empty());
    assert_eq!(
        pool_row(h.engine.store(), "+14155550777").await,
        Some(("AVAILABLE".into(), Some("PNold".into()))),
        "the row already there is left alone"
    );
    assert!(
        h.engine.store().purchase_released("PN14155550777").await,
        "the purchase is marked released"
    );
}

async fn a_number_taken_meanwhile_means_search_again_and_buy_the_next<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 1, 10).await;
    search_mock()
        .respond_with(
            ResponseTemplate::new(200).set_body_json(available(&["+14155550001", "+14155550002"])),
        )
        .expect(2)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying("+14155550001"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"code": 21422, "message": "gone"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying("+14155550002"))
        .respond_with(Sold)
        .expect(1)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.bought, [phone("+14155550002")]);
    assert_eq!(h.breaker.consecutive_failures(), 0, "21422 is no failure");
    assert_eq!(
        pool_row(h.engine.store(), "+14155550002").await,
        Some(("AVAILABLE".into(), Some(sid_of("+14155550002"))))
    );
}

async fn the_daily_cap_stops_buying_until_a_day_has_passed<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 5, 2).await;
    let twilio = FakeTwilio::new(&[
        "+14155550001",
        "+14155550002",
        "+14155550003",
        "+14155550004",
        "+14155550005",
    ]);
    twilio.mount(&server).await;

    let first = report(&h.keeper).await;
    assert_eq!(
        (first.shortfall, first.budget, first.bought.len()),
        (5, 2, 2)
    );

    // Later the same day (a restart, or another replica, would count the same rows).
    h.clock.advance(Duration::hours(23));
    let calls = server.received_requests().await.unwrap().len();
    let second = report(&h.keeper).await;
    assert_eq!((second.shortfall, second.budget), (3, 0));
    assert!(second.bought.is_empty());
    assert_eq!(server.received_requests().await.unwrap().len(), calls);

    h.clock.advance(Duration::hours(1) + Duration::seconds(1));
    let third = report(&h.keeper).await;
    assert_eq!((third.budget, third.bought.len()), (2, 2));
    assert_eq!(twilio.sold(), 4);
    assert_eq!(h.engine.store().pool_stats().await.unwrap().available, 4);
}

async fn the_breaker_opens_after_repeated_failures_and_stops_calling_twilio<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 1, 10).await;
    search_mock()
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"code": 20500, "message": "oops"})),
        )
        .mount(&server)
        .await;

    for run in 1..=5 {
        let report = report(&h.keeper).await;
        assert!(report.stopped.is_some(), "run {run}");
    }
    assert!(h.breaker.is_open());
    assert_eq!(h.breaker.opened_at(), Some(h.clock.now()));
    assert_eq!(server.received_requests().await.unwrap().len(), 5);

    // Open: no Twilio call at all, however often it runs.
    h.clock.advance(Duration::minutes(4));
    for _ in 0..3 {
        assert_eq!(h.keeper.run_once().await.unwrap(), RunOutcome::CircuitOpen);
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 5);

    // After the cool-off, one trial call; Twilio is back, so it closes and buys.
    server.reset().await;
    FakeTwilio::new(&["+14155550001"]).mount(&server).await;
    h.clock.advance(Duration::minutes(1));
    let report = report(&h.keeper).await;
    assert_eq!(report.bought, [phone("+14155550001")]);
    assert!(!h.breaker.is_open());
    assert_eq!(h.breaker.opened_at(), None);
}

async fn a_failed_trial_opens_the_breaker_again<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 1, 10).await;
    search_mock()
        .respond_with(ResponseTemplate::new(503).set_body_string("down"))
        .mount(&server)
        .await;
    for _ in 0..5 {
        report(&h.keeper).await;
    }
    let first_opened = h.breaker.opened_at().unwrap();
    h.clock.advance(Duration::minutes(5));
    let trial = report(&h.keeper).await;
    assert!(trial.stopped.is_some());
    assert!(h.breaker.is_open());
    assert!(h.breaker.opened_at().unwrap() > first_opened);
    assert_eq!(server.received_requests().await.unwrap().len(), 6);
}

// --- two replicas on one PostgreSQL --------------------------------------------------------------

#[tokio::test]
async fn two_replicas_never_both_top_up_the_same_shortfall() {
    let url = support::fresh_postgres_database().await;
    let store_a = PgStore::connect(&url, 5).await.expect("connect");
    store_a.migrate().await.expect("migrate");
    let store_b = PgStore::connect(&url, 5).await.expect("connect");
    let server = MockServer::start().await;
    let twilio = FakeTwilio::new(&[
        "+14155550001",
        "+14155550002",
        "+14155550003",
        "+14155550004",
        "+14155550005",
        "+14155550006",
    ]);
    twilio.mount(&server).await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let a = harness(
        engine(store_a.clone(), clock.clone()),
        clock.clone(),
        &server,
        3,
        10,
    );
    let b = harness(
        engine(store_b.clone(), clock.clone()),
        clock.clone(),
        &server,
        3,
        10,
    );

    // While one replica holds the keeper lock, the other skips without calling Twilio.
    let lock = store_a.try_lock_keeper().await.unwrap().expect("free");
    assert!(store_b.try_lock_keeper().await.unwrap().is_none());
    assert_eq!(b.keeper.run_once().await.unwrap(), RunOutcome::Locked);
    assert!(server.received_requests().await.unwrap().is_empty());
    store_a.unlock_keeper(lock).await.unwrap();

    // Both at once: whichever runs second (or finds the lock taken) buys nothing.
    let (ra, rb) = tokio::join!(a.keeper.run_once(), b.keeper.run_once());
    let bought: usize = [ra.unwrap(), rb.unwrap()]
        .iter()
        .map(|outcome| match outcome {
            RunOutcome::Ran(report) => report.bought.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(bought, 3);
    assert_eq!(twilio.sold(), 3);
    assert_eq!(store_a.pool_stats().await.unwrap().available, 3);
    assert_eq!(
        store_b
            .purchases_since(clock.now() - Duration::hours(24))
            .await
            .unwrap(),
        3
    );

    // And afterwards neither buys more.
    for keeper in [&a.keeper, &b.keeper] {
        let RunOutcome::Ran(report) = keeper.run_once().await.unwrap() else {
            panic!("lock is free");
        };
        assert_eq!(report.shortfall, 0);
    }
    assert_eq!(twilio.sold(), 3);
}

// --- purchases whose outcome is unknown ------------------------------------------------------------

/// One run whose purchase of `number` gets a 5xx and whose lookup of it fails too: the number is
/// recorded as uncertain, not pooled, and the run stops. Leaves the mock server empty.
async fn an_uncertain_purchase<S: Probe>(h: &Harness<S>, server: &MockServer, number: &str) {
    search_mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[number])))
        .expect(1)
        .mount(server)
        .await;
    buy_mock()
        .and(buying(number))
        .respond_with(twilio_error())
        .expect(1)
        .mount(server)
        .await;
    lookup_mock(number)
        .respond_with(twilio_error())
        .expect(1)
        .mount(server)
        .await;

    let report = report(&h.keeper).await;

    assert!(report.stopped.is_some());
    assert!(report.bought.is_empty() && report.released.is_empty());
    let store = h.engine.store();
    let uncertain = store.uncertain_purchases().await.unwrap();
    assert_eq!(uncertain.len(), 1);
    assert_eq!(uncertain[0].e164, phone(number));
    assert_eq!(uncertain[0].attempted_at, h.clock.now());
    assert_eq!(
        (uncertain[0].checks, uncertain[0].last_checked_at),
        (0, None)
    );
    assert_eq!(pool_row(store, number).await, None);
    assert_eq!(
        store
            .purchases_since(h.clock.now() - Duration::hours(24))
            .await
            .unwrap(),
        1,
        "it may have been paid for: the daily cap counts it"
    );
    server.verify().await;
    server.reset().await;
}

/// The next run finds the number on Twilio: it is ours, goes to the waiting owner with its sid,
/// is recorded once for the cap (dated at the attempt), and is no longer uncertain.
async fn an_uncertain_purchase_found_later_serves_the_waiting_owner<S: Probe>(
    h: Harness<S>,
    server: &MockServer,
) {
    let number = "+14155550777";
    let attempted_at = h.clock.now();
    waiting_owner(
        h.engine.store(),
        "c_0000000001",
        "+14155550123",
        "San Francisco",
        attempted_at,
    )
    .await;
    an_uncertain_purchase(&h, server, number).await;
    let owner = h
        .engine
        .owner_by_phone(&phone("+14155550123"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.gate, Some(Gate::AwaitingNumber));

    h.clock.advance(Duration::minutes(1));
    lookup_mock(number)
        .respond_with(ours(number))
        .expect(1)
        .mount(server)
        .await;
    search_mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[])))
        .expect(0)
        .mount(server)
        .await;
    buy_mock().respond_with(Sold).expect(0).mount(server).await;

    let report = report(&h.keeper).await;

    assert_eq!(report.confirmed, [phone(number)]);
    assert_eq!(
        report.shortfall, 0,
        "the owner is served before the shortfall is counted"
    );
    assert!(report.bought.is_empty() && report.released.is_empty());
    let owner = h
        .engine
        .owner_by_phone(&phone("+14155550123"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.twilio_number, Some(phone(number)));
    assert_eq!(owner.gate, None);
    let store = h.engine.store();
    assert_eq!(
        pool_row(store, number).await,
        Some(("ASSIGNED".into(), Some(sid_of(number))))
    );
    assert!(store.uncertain_purchases().await.unwrap().is_empty());
    assert_eq!(store.purchases_of(&sid_of(number)).await, 1);
    assert_eq!(
        store
            .purchases_since(attempted_at - Duration::seconds(1))
            .await
            .unwrap(),
        1,
        "counted once, from the attempt"
    );
    assert_eq!(
        store.purchases_since(attempted_at).await.unwrap(),
        0,
        "dated at the attempt, not at the confirmation"
    );
    assert_eq!(h.breaker.consecutive_failures(), 0);
}

#[tokio::test]
async fn an_uncertain_purchase_found_later_serves_the_waiting_owner_on_sqlite() {
    let server = MockServer::start().await;
    let h = keeper::<Sqlite>(&server, 0, 10).await;
    an_uncertain_purchase_found_later_serves_the_waiting_owner(h, &server).await;
}

#[tokio::test]
async fn an_uncertain_purchase_found_later_serves_the_waiting_owner_on_postgres() {
    let url = support::fresh_postgres_database().await;
    let store = PgStore::connect(&url, 5).await.expect("connect");
    store.migrate().await.expect("migrate");
    let server = MockServer::start().await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let h = harness(engine(store, clock.clone()), clock, &server, 0, 10);
    an_uncertain_purchase_found_later_serves_the_waiting_owner(h, &server).await;
}

async fn an_uncertain_purchase_twilio_has_no_trace_of_is_forgotten<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 1, 10).await;
    let number = "+14155550777";
    an_uncertain_purchase(&h, &server, number).await;

    h.clock.advance(Duration::minutes(1));
    lookup_mock(number)
        .respond_with(not_ours())
        .expect(1)
        .mount(&server)
        .await;
    // The pool is still short, but Twilio has nothing to sell: only the lookup changes anything.
    search_mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[])))
        .mount(&server)
        .await;
    buy_mock().respond_with(Sold).expect(0).mount(&server).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.not_made, [phone(number)]);
    assert!(report.confirmed.is_empty() && report.bought.is_empty() && report.released.is_empty());
    let store = h.engine.store();
    assert!(store.uncertain_purchases().await.unwrap().is_empty());
    assert_eq!(pool_row(store, number).await, None);
    assert_eq!(store.pool_stats().await.unwrap().total, 0);
    assert_eq!(store.purchases_of(&sid_of(number)).await, 0);
    assert_eq!(
        store
            .purchases_since(h.clock.now() - Duration::hours(24))
            .await
            .unwrap(),
        0,
        "never made: nothing left for the cap to count"
    );
}

async fn an_uncertain_purchase_still_unknown_is_kept_and_never_bought_twice<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    // Two wanted, two a day: the uncertain purchase leaves a budget of one.
    let h = keeper::<B>(&server, 2, 2).await;
    let uncertain = "+14155550001";
    let other = "+14155550002";
    let attempted_at = h.clock.now();
    an_uncertain_purchase(&h, &server, uncertain).await;

    h.clock.advance(Duration::minutes(1));
    lookup_mock(uncertain)
        .respond_with(twilio_error())
        .expect(1)
        .mount(&server)
        .await;
    search_mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(available(&[uncertain, other])))
        .expect(1)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying(uncertain))
        .respond_with(Sold)
        .expect(0)
        .mount(&server)
        .await;
    buy_mock()
        .and(buying(other))
        .respond_with(Sold)
        .expect(1)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert_eq!(report.still_uncertain, [phone(uncertain)]);
    assert_eq!((report.shortfall, report.budget), (2, 1));
    assert_eq!(report.bought, [phone(other)]);
    let store = h.engine.store();
    let rows = store.uncertain_purchases().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].e164, phone(uncertain));
    assert_eq!(rows[0].attempted_at, attempted_at);
    assert_eq!(rows[0].checks, 1);
    assert_eq!(rows[0].last_checked_at, Some(h.clock.now()));
    assert_eq!(pool_row(store, uncertain).await, None);
    assert_eq!(
        h.breaker.consecutive_failures(),
        0,
        "the search succeeded after"
    );
}

async fn once_the_circuit_opens_the_other_uncertain_purchases_wait_unchecked<B: BackEnd>()
where
    B::Store: Probe,
{
    let server = MockServer::start().await;
    let h = keeper::<B>(&server, 0, 10).await;
    let (first, second) = ("+14155550001", "+14155550002");
    let store = h.engine.store();
    store
        .record_uncertain_purchase(&phone(first), h.clock.now())
        .await
        .unwrap();
    store
        .record_uncertain_purchase(&phone(second), h.clock.now() + Duration::seconds(1))
        .await
        .unwrap();
    // Recording again changes nothing: the first attempt's time stays.
    store
        .record_uncertain_purchase(&phone(first), h.clock.now() + Duration::hours(1))
        .await
        .unwrap();
    // One failure short of opening.
    for _ in 0..4 {
        h.breaker
            .record_failure(&TwilioError::Ambiguous("timeout".into()));
    }
    lookup_mock(first)
        .respond_with(twilio_error())
        .expect(1)
        .mount(&server)
        .await;
    lookup_mock(second)
        .respond_with(ours(second))
        .expect(0)
        .mount(&server)
        .await;

    let report = report(&h.keeper).await;

    assert!(h.breaker.is_open());
    assert_eq!(report.still_uncertain, [phone(first), phone(second)]);
    let rows = store.uncertain_purchases().await.unwrap();
    let checked: Vec<(String, i32, DateTime<Utc>)> = rows
        .iter()
        .map(|r| (r.e164.as_str().to_owned(), r.checks, r.attempted_at))
        .collect();
    assert_eq!(
        checked,
        [
            (first.to_owned(), 1, h.clock.now()),
            (second.to_owned(), 0, h.clock.now() + Duration::seconds(1)),
        ]
    );
    assert_eq!(h.keeper.run_once().await.unwrap(), RunOutcome::CircuitOpen);
}

support::on_both_back_ends!(
    buys_in_the_waiting_owners_area_code_and_serves_them,
    widens_to_nearby_region_then_anywhere_when_the_area_code_has_none,
    uk_owners_are_searched_by_region_then_anywhere_never_by_area_code,
    nothing_is_bought_when_twilio_has_no_numbers_anywhere,
    a_purchase_that_cannot_be_recorded_is_released,
    a_number_taken_meanwhile_means_search_again_and_buy_the_next,
    the_daily_cap_stops_buying_until_a_day_has_passed,
    the_breaker_opens_after_repeated_failures_and_stops_calling_twilio,
    a_failed_trial_opens_the_breaker_again,
    an_uncertain_purchase_twilio_has_no_trace_of_is_forgotten,
    an_uncertain_purchase_still_unknown_is_kept_and_never_bought_twice,
    once_the_circuit_opens_the_other_uncertain_purchases_wait_unchecked,
);
