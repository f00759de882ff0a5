//! Invalidation: an axum app on 127.0.0.1:3000 whose pages are tagged by the users they
//! show; updating a user purges every page tagged with them, whatever its URL.
//!
//! ```text
//! cargo run --example invalidation
//! curl -i localhost:3000/users/42                 # x-cache: MISS
//! curl -i localhost:3000/users/42                 # x-cache: HIT
//! curl -i localhost:3000/teams/7                  # x-cache: MISS (lists user 42)
//! curl -i -X POST -d 'Ada' localhost:3000/users/42   # purged 2 entries tagged user:42
//! curl -i localhost:3000/users/42                 # x-cache: MISS, the new name
//! curl -i localhost:3000/teams/7                  # x-cache: MISS
//! # Operators: the admin router, behind its token.
//! curl -s -H 'authorization: Bearer change-me' -d '{"tags":["team:7"]}' \
//!   -H 'content-type: application/json' localhost:3000/_cache/purge
//! curl -s -H 'authorization: Bearer change-me' localhost:3000/_cache/stats
//! ```
//!
//! Set `LISTEN` to listen elsewhere and `ADMIN_TOKEN` to choose the admin token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Router};
use tower_response_cache::axum::admin_router;
use tower_response_cache::{CacheHandle, CacheLayer, CacheTags, MemoryStore};

#[derive(Clone)]
struct App {
    names: Arc<RwLock<HashMap<u32, String>>>,
    cache: CacheHandle,
}

impl App {
    fn name(&self, id: u32) -> String {
        let names = match self.names.read() {
            Ok(names) => names,
            Err(poisoned) => poisoned.into_inner(),
        };
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user {id}"))
    }
}

/// A user's page, tagged with the user.
async fn user(State(app): State<App>, Path(id): Path<u32>) -> (Extension<CacheTags>, String) {
    (
        Extension(CacheTags::new([format!("user:{id}")])),
        format!("{}\n", app.name(id)),
    )
}

/// A team's page lists its members: tagged with the team and with each member.
async fn team(State(app): State<App>, Path(id): Path<u32>) -> (Extension<CacheTags>, String) {
    let members = [42, 43];
    let mut tags = vec![format!("team:{id}")];
    tags.extend(members.iter().map(|member| format!("user:{member}")));
    let names: Vec<String> = members.iter().map(|member| app.name(*member)).collect();
    (
        Extension(CacheTags::new(tags)),
        format!("team {id}: {}\n", names.join(", ")),
    )
}

/// Renames a user, then purges every page that shows them.
async fn rename(State(app): State<App>, Path(id): Path<u32>, name: String) -> String {
    match app.names.write() {
        Ok(mut names) => names.insert(id, name.trim().to_owned()),
        Err(poisoned) => poisoned.into_inner().insert(id, name.trim().to_owned()),
    };
    match app.cache.invalidate_tag(&format!("user:{id}")).await {
        Ok(purged) => format!("renamed; purged {purged} entries tagged user:{id}\n"),
        // The store failed: the pages expire with their TTL; say so.
        Err(error) => format!("renamed; the purge failed ({error})\n"),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cache = CacheLayer::new(MemoryStore::new(64 * 1024 * 1024)).namespace("example");
    let handle = cache.handle();
    let token = std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| "change-me".to_owned());
    let state = App {
        names: Arc::default(),
        cache: handle.clone(),
    };
    let app = Router::new()
        .route("/users/{id}", get(user).post(rename))
        .route("/teams/{id}", get(team))
        .with_state(state)
        .layer(cache)
        .nest("/_cache", admin_router(handle, &token));

    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "invalidation example listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
