//! Shared test helpers: real Redis servers, stores, and (later) spawned apps.

pub mod app;
pub mod processes;
pub mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use wxkeeper::clock::WallClock;
use wxkeeper::store::memory::MemoryStore;
use wxkeeper::store::redis::RedisStore;
use wxkeeper::store::SharedStore;

pub use redis_server::RedisServer;

/// A store under test plus what it takes to empty it like a restarted, unpersisted store.
pub struct StoreHarness {
    pub store: SharedStore,
    memory: Option<Arc<MemoryStore>>,
    pub redis: Option<RedisServer>,
}

impl StoreHarness {
    pub fn memory() -> Self {
        let mem = Arc::new(MemoryStore::new(WallClock::system()));
        Self {
            store: mem.clone(),
            memory: Some(mem),
            redis: None,
        }
    }

    pub fn redis() -> Self {
        let server = RedisServer::start();
        let store =
            RedisStore::new(&server.url(), "wxkeeper:", Duration::from_millis(500)).expect("store");
        Self {
            store: Arc::new(store),
            memory: None,
            redis: Some(server),
        }
    }

    /// Empties the store as a Redis restart without persistence would.
    pub async fn flush_all(&self) {
        if let Some(mem) = &self.memory {
            mem.flush_all();
        }
        if let Some(server) = &self.redis {
            let mut c = server
                .client()
                .get_multiplexed_async_connection()
                .await
                .expect("redis");
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut c)
                .await
                .expect("flushall");
        }
    }
}
