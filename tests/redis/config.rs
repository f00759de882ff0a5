//! Connection settings on a standalone server: password, ACL user, database number.

use std::time::Duration;

use tower_response_cache::store::RedisConfig;
use tower_response_cache::{RedisStore, Store};

use crate::servers::{self, RedisServer};
use crate::{Calls, app, fetch};

#[tokio::test]
async fn password_and_database_from_the_url() {
    if !servers::available() {
        return;
    }
    let server = RedisServer::start(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port);
    let store = RedisStore::connect(RedisConfig::from_url(&url).unwrap())
        .await
        .unwrap();
    let calls = Calls::default();
    let (app, _) = app(store, &calls);
    fetch(&app, "/in-db-3").await;
    assert_eq!(fetch(&app, "/in-db-3").await.x_cache(), "HIT");
    let dbsize = |db: &str| server.cli(&["-a", "s3cret", "--no-auth-warning", "-n", db, "dbsize"]);
    assert_eq!(dbsize("3").trim(), "1", "the entry is in database 3");
    assert_eq!(dbsize("0").trim(), "0");
}

#[tokio::test]
async fn acl_user_and_fields_override_the_url() {
    if !servers::available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let created = server.cli(&["ACL", "SETUSER", "cache", "on", ">p4ss", "~*", "+@all"]);
    assert_eq!(created.trim(), "OK");
    server.cli(&["ACL", "SETUSER", "default", "off"]);
    let config = RedisConfig {
        username: Some("cache".into()),
        password: Some("p4ss".into()),
        db: Some(5),
        endpoint: "127.0.0.1".into(),
        port: server.port,
        ..RedisConfig::default()
    };
    let store = RedisStore::connect(config).await.unwrap();
    let calls = Calls::default();
    let (app, layer) = app(store, &calls);
    fetch(&app, "/acl").await;
    assert_eq!(fetch(&app, "/acl").await.x_cache(), "HIT");
    assert_eq!(layer.stats().snapshot().total.store_errors, 0);
    let dbsize = server.cli(&[
        "--user",
        "cache",
        "--pass",
        "p4ss",
        "--no-auth-warning",
        "-n",
        "5",
        "dbsize",
    ]);
    assert_eq!(dbsize.trim(), "1");
}

#[tokio::test]
async fn a_wrong_password_fails_open() {
    if !servers::available() {
        return;
    }
    let server = RedisServer::start(&["--requirepass", "right"]);
    let config = RedisConfig {
        connect_timeout: Duration::from_millis(300),
        ..RedisConfig::from_url(&format!("redis://:wrong@127.0.0.1:{}", server.port)).unwrap()
    };
    let store = RedisStore::connect(config).await.unwrap();
    let calls = Calls::default();
    let (app, layer) = app(store.clone(), &calls);
    for n in 1..=3 {
        let reply = fetch(&app, "/x").await;
        assert_eq!(reply.status, http::StatusCode::OK);
        assert_eq!(
            reply.text(),
            format!("/x #{n}"),
            "every request reaches the service"
        );
    }
    assert!(layer.stats().snapshot().total.store_errors >= 3);
    assert!(store.get("anything").await.is_err());
}
