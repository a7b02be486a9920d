//! After PostgreSQL restarts, every pooled connection is dead. The next event must not fail on one
//! of them, nor wait long for a new one: its `BEGIN` finds a dead connection gone before anything
//! of the event was sent, and the next one is tried at once (no ping on every checkout, which
//! would cost every event a round trip). A restart is played by killing the pool's connections
//! on the server, the moment before the event, so none of them has been idle long enough to be
//! pinged.

use crate::support;

use std::time::{Duration, Instant};

use onboard::domain::OwnerId;
use onboard::store::{PgStore, Store, Tx};
use sqlx::{Connection, PgConnection};

const POOL: u32 = 4;

/// A pool on a fresh database with every one of its connections opened, back in the pool idle,
/// then ended by the server, as a restart of PostgreSQL leaves them.
async fn pool_whose_connections_were_killed() -> PgStore {
    let url = support::fresh_postgres_database().await;
    let store = PgStore::connect(&url, POOL).await.unwrap();
    store.migrate().await.unwrap();
    let mut open = Vec::new();
    for _ in 0..POOL {
        open.push(store.begin().await.unwrap());
    }
    for tx in open {
        tx.commit().await.unwrap();
    }
    kill_connections_of(&url, POOL as usize).await;
    store
}

#[tokio::test]
async fn postgres_the_event_after_its_connections_were_killed_succeeds_at_once() {
    let store = pool_whose_connections_were_killed().await;

    let started = Instant::now();
    // An event: one transaction, and it must work on the first try.
    let mut tx = store
        .begin()
        .await
        .expect("a transaction on a fresh connection");
    let owner = tx
        .lock_owner(&OwnerId::new("c_1"))
        .await
        .expect("the event's first query works");
    assert!(owner.is_none());
    tx.commit().await.expect("and it commits");
    store.ping().await.expect("the readiness ping works too");
    eprintln!(
        "first event after the pool's connections were killed: {:?}",
        started.elapsed()
    );
}

/// Ends every connection to the database of `url` (the pool's `expected` ones) on the server, as
/// a restart does, and waits until the server has really ended them.
async fn kill_connections_of(url: &str, expected: usize) {
    let mut admin = PgConnection::connect(url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(pids.len(), expected, "the pool's connections are open");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&pids)
        .execute(&mut admin)
        .await
        .unwrap();
    loop {
        let alive: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])")
                .bind(&pids)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if alive == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A read outside any event's transaction (a console page, the readiness check's neighbours) on
/// connections that sat idle through the restart: a connection idle for a second is pinged as it
/// is taken from the pool, and a dead one replaced, so the read works on the first try.
#[tokio::test]
async fn postgres_a_read_after_its_idle_connections_were_killed_succeeds() {
    let store = pool_whose_connections_were_killed().await;
    // Longer than a connection may sit idle unpinged.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    for n in 0..POOL {
        let phone = format!("+4477009001{n:02}").parse().unwrap();
        let owner = store
            .owner_by_phone(&phone)
            .await
            .expect("each read works on the first try");
        assert!(owner.is_none());
    }
}

/// A stand-in for the PostgreSQL server's network side: forwards to the real server until
/// [`Proxy::restart`] cuts every connection and refuses new ones for a while, as a restart does.
struct Proxy {
    addr: std::net::SocketAddr,
    upstream: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            upstream,
            tasks: Default::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (upstream, tasks) = (self.upstream.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(pipe);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Cuts every connection and refuses new ones for `down`, then accepts again; returns when
    /// the server is back.
    async fn restart(&self, down: Duration) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        tokio::time::sleep(down).await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// The database goes away under load for a second and a half and comes back. Events fail while it
/// is away (fast: no caller waits long for a connection), the readiness probe answers 503 without
/// hanging, and the first event after it is back succeeds soon after; how soon is printed, not
/// asserted.
#[tokio::test]
async fn postgres_recovers_on_its_own_after_a_restart_under_load() {
    let url = support::fresh_postgres_database().await;
    let direct = PgStore::connect(&url, 1).await.unwrap();
    direct.migrate().await.unwrap();
    let mut parsed = reqwest::Url::parse(&url).unwrap();
    let upstream = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    parsed.set_host(Some("127.0.0.1")).unwrap();
    parsed.set_port(Some(proxy.addr.port())).unwrap();
    let store = PgStore::connect(parsed.as_str(), POOL).await.unwrap();
    let app = support::app::spawn_app(store.clone(), support::app::test_config(&[])).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let successes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let load: Vec<_> = (0..POOL * 2)
        .map(|_| {
            let (store, stop, successes) = (store.clone(), stop.clone(), successes.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let event = async {
                        let mut tx = store.begin().await?;
                        tx.lock_owner(&OwnerId::new("c_1")).await?;
                        tx.commit().await
                    };
                    match event.await {
                        Ok(()) => successes.lock().unwrap().push(Instant::now()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!successes.lock().unwrap().is_empty(), "the load runs");

    let restart = proxy.restart(Duration::from_millis(1500));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.http
            .get(format!("{}/readyz", app.address))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the readiness probe answers while the database is away")
            .status()
    };
    let (_, ready) = tokio::join!(restart, probe);
    assert_eq!(ready, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let back = Instant::now();

    let recovered = loop {
        if let Some(first) = successes.lock().unwrap().iter().find(|t| **t >= back) {
            break *first - back;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no event succeeded after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    eprintln!("first event after the database accepted connections again: {recovered:?}");
}
