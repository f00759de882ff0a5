//! Connection settings on a standalone server: password, ACL user, database number.

use std::time::Duration;

use tower_response_cache::RedisConfig;
use tower_response_cache::{RedisStore, store::Store};

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

#[tokio::test]
async fn sentinel_urls_reach_the_primary() {
    if !servers::available() {
        return;
    }
    let sentinel = servers::Sentinel::start();
    let store = RedisStore::connect(RedisConfig::from_url(&sentinel.url()).unwrap())
        .await
        .unwrap();
    let calls = Calls::default();
    let (app, layer) = app(store, &calls);
    fetch(&app, "/via-sentinel").await;
    assert_eq!(fetch(&app, "/via-sentinel").await.x_cache(), "HIT");
    assert_eq!(
        sentinel.primary.cli(&["dbsize"]).trim(),
        "1",
        "the entry is on the primary"
    );
    // Purges go to the primary too: by URL, and by prefix (a scan).
    let handle = layer.handle();
    assert_eq!(handle.invalidate("/via-sentinel").await.unwrap(), 1);
    assert_eq!(fetch(&app, "/via-sentinel").await.x_cache(), "MISS");
    fetch(&app, "/via-sentinel/more").await;
    assert_eq!(handle.invalidate_prefix("/via-sentinel").await.unwrap(), 2);
    assert_eq!(fetch(&app, "/via-sentinel").await.x_cache(), "MISS");
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_with_a_private_ca() {
    use std::sync::Arc;

    use fred::rustls;
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    use fred::types::config::TlsConnector;

    if !servers::available() {
        return;
    }
    let server = RedisServer::start_tls();
    let ca = CertificateDer::from_pem_file(server.tls_ca().unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = RedisConfig {
        tls: Some(TlsConnector::from(client)),
        ..RedisConfig::from_url(&format!("rediss://127.0.0.1:{}", server.port)).unwrap()
    };
    let store = RedisStore::connect(config).await.unwrap();
    let calls = Calls::default();
    let (trusted, layer) = app(store, &calls);
    fetch(&trusted, "/over-tls").await;
    assert_eq!(fetch(&trusted, "/over-tls").await.x_cache(), "HIT");
    assert_eq!(layer.stats().snapshot().total.store_errors, 0);

    // Without the CA the server's certificate is not trusted: the store fails open.
    let untrusted = RedisConfig {
        connect_timeout: Duration::from_millis(300),
        ..RedisConfig::from_url(&format!("rediss://127.0.0.1:{}", server.port)).unwrap()
    };
    let store = RedisStore::connect(untrusted).await.unwrap();
    let (untrusted, layer) = app(store, &calls);
    let reply = fetch(&untrusted, "/over-tls").await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.text(), "/over-tls #2", "served by the service");
    assert!(layer.stats().snapshot().total.store_errors > 0);
}

#[tokio::test]
async fn a_client_the_application_already_runs() {
    use fred::interfaces::ClientLike;

    if !servers::available() {
        return;
    }
    let server = RedisServer::start(&[]);
    let client = fred::clients::Client::new(
        fred::types::config::Config::from_url(&server.url()).unwrap(),
        None,
        None,
        None,
    );
    client.init().await.unwrap();
    let store = RedisStore::from_client(client, &RedisConfig::default()).unwrap();
    let calls = Calls::default();
    let (app, _) = app(store, &calls);
    fetch(&app, "/shared-client").await;
    assert_eq!(fetch(&app, "/shared-client").await.x_cache(), "HIT");
}
