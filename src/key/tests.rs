use super::escape::{escape_at, is_literal, is_unreserved};
use super::*;
use http::Request;
use proptest::prelude::*;

fn key(builder: &DefaultKeyBuilder, uri: &str) -> String {
    let (parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
    builder.build_key(&parts).unwrap().into_string()
}

#[test]
fn byte_classes_are_rfc_3986_sets() {
    for byte in 0..=u8::MAX {
        let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
        let sub_delims = b"!$&'()*+,;=".contains(&byte);
        assert_eq!(is_unreserved(byte), unreserved, "{byte:#04x}");
        assert_eq!(
            is_literal(byte),
            unreserved || sub_delims || b":@/?".contains(&byte),
            "{byte:#04x}"
        );
    }
}

#[test]
fn default_key_is_readable() {
    let builder = DefaultKeyBuilder::new();
    assert_eq!(key(&builder, "/users/42?b=2&a=1"), "GET:/users/42?a=1&b=2");
    assert_eq!(key(&builder, "/users/42"), "GET:/users/42");
    assert_eq!(key(&builder, "/users/42?"), "GET:/users/42");
}

#[test]
fn head_shares_get_but_other_methods_do_not() {
    let builder = DefaultKeyBuilder::new();
    let head = Request::head("/a").body(()).unwrap().into_parts().0;
    let post = Request::post("/a").body(()).unwrap().into_parts().0;
    assert_eq!(builder.build_key(&head).unwrap().as_str(), "GET:/a");
    assert_eq!(builder.build_key(&post).unwrap().as_str(), "POST:/a");
}

#[test]
fn percent_encoding_is_normalized() {
    let builder = DefaultKeyBuilder::new();
    assert_eq!(
        key(&builder, "/%7euser/%2f?q=%41%2c"),
        "GET:/~user/%2F?q=A%2C"
    );
    assert_eq!(key(&builder, "/a?q=%zz"), "GET:/a?q=%25zz");
    assert_ne!(key(&builder, "/a?x=%26"), key(&builder, "/a?x=&"));
}

#[test]
fn dropped_params_and_modes() {
    let builder = DefaultKeyBuilder::new()
        .drop_query_param("utm_*")
        .drop_query_param("fbclid");
    assert_eq!(
        key(&builder, "/p?utm_source=a&id=1&fbclid=z&utm_medium=b"),
        "GET:/p?id=1"
    );
    assert_eq!(key(&builder, "/p?utm_source=a"), "GET:/p");
    let ordered = DefaultKeyBuilder::new().query(QueryMode::Ordered);
    assert_eq!(key(&ordered, "/p?b=1&a=2"), "GET:/p?b=1&a=2");
    let ignore = DefaultKeyBuilder::new().query(QueryMode::Ignore);
    assert_eq!(key(&ignore, "/p?b=1&a=2"), "GET:/p");
}

#[test]
fn header_values_are_escaped_and_absent_headers_marked() {
    let builder = DefaultKeyBuilder::new().header(HeaderName::from_static("x-tenant"));
    let with = |value: &str| {
        let (parts, ()) = Request::get("/")
            .header("x-tenant", value)
            .body(())
            .unwrap()
            .into_parts();
        builder.build_key(&parts).unwrap().into_string()
    };
    assert_eq!(with("a|b"), "GET:/|x-tenant=a%7Cb");
    assert_eq!(with(""), "GET:/|x-tenant=");
    assert_eq!(key(&builder, "/"), "GET:/|x-tenant");
}

type Headers<'a> = &'a [(&'a str, &'a [u8])];

fn parts(uri: &str, headers: Headers<'_>) -> Parts {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

fn built(builder: &DefaultKeyBuilder, uri: &str, headers: Headers<'_>) -> Option<String> {
    builder
        .build_key(&parts(uri, headers))
        .map(CacheKey::into_string)
}

#[test]
fn the_host_is_in_the_key_lower_cased_and_without_a_default_port() {
    let builder = DefaultKeyBuilder::new();
    let host = |value: &str| built(&builder, "/p?a=1", &[("host", value.as_bytes())]);
    assert_eq!(
        host("Shop.Example").as_deref(),
        Some("GET:shop.example/p?a=1")
    );
    assert_eq!(
        host("shop.example:8080").as_deref(),
        Some("GET:shop.example:8080/p?a=1")
    );
    assert_eq!(host("[::1]:3000").as_deref(), Some("GET:[::1]:3000/p?a=1"));
    assert_eq!(host("[::1]").as_deref(), Some("GET:[::1]/p?a=1"));
    assert_eq!(
        host("shop.example:").as_deref(),
        Some("GET:shop.example/p?a=1")
    );
    assert_eq!(
        host("shop.example:0080").as_deref(),
        Some("GET:shop.example:80/p?a=1")
    );
    assert_eq!(
        host("10.0.0.1:65535").as_deref(),
        Some("GET:10.0.0.1:65535/p?a=1")
    );
    // A percent sign is escaped: `a%41` and `aA` stay apart.
    assert_eq!(
        host("a%41.example").as_deref(),
        Some("GET:a%2541.example/p?a=1")
    );
    assert_ne!(host("evil.example"), host("shop.example"));
    // No scheme to know the default port by: the port stays as the application sees it.
    assert_eq!(
        host("shop.example:80").as_deref(),
        Some("GET:shop.example:80/p?a=1")
    );
    // The URI's authority (HTTP/2, absolute-form), with its scheme's default port
    // dropped and its user information left out.
    assert_eq!(
        built(&builder, "https://Shop.example:443/p", &[]).as_deref(),
        Some("GET:shop.example/p")
    );
    assert_eq!(
        built(&builder, "http://user:secret@shop.example:8080/p", &[]).as_deref(),
        Some("GET:shop.example:8080/p")
    );
    assert_eq!(
        built(
            &builder,
            "http://shop.example/p",
            &[("host", b"SHOP.example:80")]
        )
        .as_deref(),
        Some("GET:shop.example/p")
    );
    // No host at all (an in-process request): keyed without one.
    assert_eq!(built(&builder, "/p", &[]).as_deref(), Some("GET:/p"));
}

#[test]
fn an_ambiguous_host_is_not_cached() {
    let builder = DefaultKeyBuilder::new();
    let cases: [(&str, Headers<'_>); 15] = [
        ("/p", &[("host", b"a.example"), ("host", b"b.example")]),
        ("/p", &[("host", b"a.example:65536")]),
        ("/p", &[("host", b"a.example:123456")]),
        ("/p", &[("host", b"a.example:8x")]),
        ("/p", &[("host", b"a:b:c")]),
        ("/p", &[("host", b"[")]),
        ("/p", &[("host", b"[]")]),
        ("/p", &[("host", b"[::1]x")]),
        ("/p", &[("host", b":80")]),
        ("/p", &[("host", b"a.example/evil")]),
        ("/p", &[("host", b"user@a.example")]),
        ("/p", &[("host", b"a example")]),
        ("/p", &[("host", b"")]),
        ("/p", &[("host", b"\xff.example")]),
        ("http://a.example/p", &[("host", b"b.example")]),
    ];
    for (uri, headers) in cases {
        assert_eq!(built(&builder, uri, headers), None, "{uri} {headers:?}");
    }
    // Without the host in the key, the host is not looked at.
    let single = DefaultKeyBuilder::new().ignore_host();
    assert_eq!(
        built(
            &single,
            "/p",
            &[("host", b"a.example"), ("host", b"b.example")]
        )
        .as_deref(),
        Some("GET:/p")
    );
}

#[test]
fn hosts_and_paths_never_run_into_each_other() {
    let builder = DefaultKeyBuilder::new();
    // `Host: a.example` with `/b/c` against a path-less host: the host holds no `/`.
    let with_host = built(&builder, "/b/c", &[("host", b"a.example")]);
    let no_host = built(&builder, "/a.example/b/c", &[]);
    assert_ne!(with_host, no_host);
    // A percent-encoded `/` in the host stays encoded (its `%` escaped): no second path.
    let escaped = built(&builder, "/p", &[("host", b"a%2fb.example")]);
    assert_eq!(escaped.as_deref(), Some("GET:a%252fb.example/p"));
}

#[test]
fn credentials_in_keys_are_hashed_not_written() {
    let builder = DefaultKeyBuilder::new()
        .header(header::AUTHORIZATION)
        .header(header::COOKIE)
        .hashed_header(HeaderName::from_static("x-api-key"));
    let key = |auth: &[u8], cookie: &[u8], api: &[u8]| {
        built(
            &builder,
            "/me",
            &[
                ("authorization", auth),
                ("cookie", cookie),
                ("x-api-key", api),
            ],
        )
        .unwrap()
    };
    let alice = key(b"Bearer s3cr3t", b"session=abc123", b"k-42");
    for secret in ["s3cr3t", "Bearer", "abc123", "session", "k-42", " "] {
        assert!(!alice.contains(secret), "{secret} in {alice}");
    }
    assert_eq!(
        alice,
        format!(
            "GET:/me|authorization={}|cookie={}|x-api-key={}",
            credential_hash(b"Bearer s3cr3t"),
            credential_hash(b"session=abc123"),
            credential_hash(b"k-42")
        )
    );
    // Stable, and different per user.
    assert_eq!(alice, key(b"Bearer s3cr3t", b"session=abc123", b"k-42"));
    assert_ne!(alice, key(b"Bearer other", b"session=abc123", b"k-42"));
    assert_ne!(alice, key(b"Bearer s3cr3t", b"session=abc124", b"k-42"));
    // SHA-256("abc"), the FIPS 180-2 test vector, first 128 bits.
    assert_eq!(credential_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
}

#[test]
fn spaces_in_header_values_are_escaped() {
    let builder = DefaultKeyBuilder::new().header(header::ACCEPT_LANGUAGE);
    assert_eq!(
        built(&builder, "/", &[("accept-language", b"de, en")]).as_deref(),
        Some("GET:/|accept-language=de,%20en")
    );
}

#[test]
fn a_path_that_is_not_absolute_has_no_key_with_a_host() {
    let builder = DefaultKeyBuilder::new();
    let (parts, ()) = Request::options("*")
        .header("host", "a.example")
        .body(())
        .unwrap()
        .into_parts();
    assert_eq!(builder.build_key(&parts), None);
}

#[test]
fn namespaces_nest_and_stay_readable_in_hashed_keys() {
    let key = CacheKey::new("GET:/a").namespaced("app", Some("users"), 250);
    assert_eq!(key.as_str(), "app:users:GET:/a");
    let long = CacheKey::new(format!("GET:/{}", "a".repeat(500)));
    let hashed = long.clone().namespaced("app", Some("users"), 250);
    assert!(
        hashed.as_str().starts_with("app:users:GET:/aaa"),
        "{hashed}"
    );
    assert_ne!(
        hashed,
        long.namespaced("app", None, 250),
        "a route's namespace is its own"
    );
}

#[test]
fn long_keys_are_hashed_stably() {
    let long = CacheKey::new(format!("GET:/{}", "a".repeat(500)));
    let hashed = long.clone().namespaced("app", None, 250);
    assert!(hashed.as_str().len() < 150, "{hashed}");
    assert!(hashed.as_str().starts_with("app:GET:/aaa"));
    assert!(hashed.as_str().contains('#'));
    // Stable across runs and machines: XXH3-128 of the key.
    assert_eq!(hashed, long.namespaced("app", None, 250));
    let short = CacheKey::new("GET:/a").namespaced("app", None, 250);
    assert_eq!(short.as_str(), "app:GET:/a");
}

/// An independent model of RFC 3986 equivalence: each position is an unreserved
/// character (however written), a literal reserved character, or an escaped byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Char(u8),
    Literal(u8),
    Escaped(u8),
}

fn model(component: &str) -> Vec<Unit> {
    let bytes = component.as_bytes();
    let mut units = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            if let Some(decoded) = escape_at(bytes, i) {
                units.push(if is_unreserved(decoded) {
                    Unit::Char(decoded)
                } else {
                    Unit::Escaped(decoded)
                });
                i += 3;
                continue;
            }
            units.push(Unit::Escaped(b'%'));
        } else if is_unreserved(byte) {
            units.push(Unit::Char(byte));
        } else if is_literal(byte) {
            units.push(Unit::Literal(byte));
        } else {
            units.push(Unit::Escaped(byte));
        }
        i += 1;
    }
    units
}

fn query_model(query: &str) -> Vec<Vec<Unit>> {
    let mut params: Vec<_> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(model)
        .collect();
    params.sort();
    params
}

fn uri_part() -> impl Strategy<Value = String> {
    // A small alphabet so that equivalent spellings come up often.
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("A"),
            Just("%41"),
            Just("%61"),
            Just("%2f"),
            Just("%2F"),
            Just("/"),
            Just("%"),
            Just("%25"),
            Just("="),
            Just("%3D"),
            Just("|"),
            Just("%7C"),
            Just("~"),
            Just("%7e"),
            Just(":"),
            Just("b"),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec(uri_part(), 0..4).prop_map(|params| params.join("&"))
}

fn parts_for(path: &str, query: &str) -> Option<Parts> {
    let uri = format!("/{path}?{query}");
    Request::get(uri).body(()).ok().map(|r| r.into_parts().0)
}

proptest! {
    #[test]
    fn keys_differ_exactly_when_requests_differ(
        (p1, q1, p2, q2) in (uri_part(), query(), uri_part(), query())
    ) {
        let builder = DefaultKeyBuilder::new();
        let (Some(a), Some(b)) = (parts_for(&p1, &q1), parts_for(&p2, &q2)) else {
            return Ok(());
        };
        let same = model(a.uri.path()) == model(b.uri.path())
            && query_model(a.uri.query().unwrap_or("")) == query_model(b.uri.query().unwrap_or(""));
        let ka = builder.build_key(&a).unwrap();
        let kb = builder.build_key(&b).unwrap();
        prop_assert_eq!(same, ka == kb, "{} vs {}", ka, kb);
    }

    #[test]
    fn permuted_query_gives_the_same_key(
        params in proptest::collection::vec(uri_part(), 0..6),
        seed in any::<u64>(),
    ) {
        let builder = DefaultKeyBuilder::new();
        let mut shuffled = params.clone();
        // A deterministic permutation derived from the seed.
        let len = shuffled.len();
        for i in (1..len).rev() {
            let j = (seed.rotate_left(i as u32) as usize) % (i + 1);
            shuffled.swap(i, j);
        }
        let (Some(a), Some(b)) = (parts_for("x", &params.join("&")), parts_for("x", &shuffled.join("&"))) else {
            return Ok(());
        };
        prop_assert_eq!(builder.build_key(&a), builder.build_key(&b));
    }

    #[test]
    fn header_values_never_collide(v1 in "[ -~]{0,6}", v2 in "[ -~]{0,6}") {
        let builder = DefaultKeyBuilder::new()
            .header(HeaderName::from_static("x-a"))
            .header(HeaderName::from_static("x-b"));
        let build = |a: &str, b: &str| {
            let (parts, ()) = Request::get("/").header("x-a", a).header("x-b", b).body(()).unwrap().into_parts();
            builder.build_key(&parts).unwrap()
        };
        // Shifting text between the two headers must change the key.
        let joined = format!("{v1}{v2}");
        if !v1.is_empty() && v1.trim() == v1 && v2.trim() == v2 && joined.trim() == joined {
            prop_assert_ne!(build(&v1, &v2), build("", &joined));
        }
        prop_assert_eq!(v1.trim() == v2.trim(), build(&v1, "") == build(&v2, ""));
    }

    #[test]
    fn different_hosts_never_share_a_key(
        a in "[a-zA-Z0-9.:%-]{0,12}",
        b in "[a-zA-Z0-9.:%-]{0,12}",
        path in uri_part(),
    ) {
        let builder = DefaultKeyBuilder::new();
        let uri = format!("/{path}");
        let key = |host: &str| built(&builder, &uri, &[("host", host.as_bytes())]);
        if let (Some(ka), Some(kb)) = (key(&a), key(&b)) {
            // An independent model: the host before the first `:`, in lower case, and
            // the port as a number (none when empty).
            let host_of = |host: &str| {
                let (name, port) = host.split_once(':').unwrap_or((host, ""));
                (name.to_ascii_lowercase(), port.parse::<u16>().ok())
            };
            prop_assert_eq!(host_of(&a) == host_of(&b), ka == kb, "{} vs {}", ka, kb);
        }
    }

    /// The variant slot's suffix is found from the end as a search for the last `#v` would
    /// find it.
    #[test]
    fn a_slot_suffix_is_stripped_as_a_search_would(key in "[a#v0-9]{0,12}") {
        let searched = match key.rfind("#v") {
            Some(at) if key.len() > at + 2 && key[at + 2..].bytes().all(|b| b.is_ascii_digit()) => {
                &key[..at]
            }
            _ => key.as_str(),
        };
        prop_assert_eq!(CacheKey::without_slot(&key), searched);
    }

    #[test]
    fn hashed_keys_never_equal_plain_keys(len in 0usize..400) {
        let body = format!("GET:/{}", "x".repeat(len));
        let key = CacheKey::new(body).namespaced("ns", None, 250);
        prop_assert!(key.as_str().len() <= 250);
        prop_assert_eq!(key.as_str().contains('#'), len + 8 > 250);
    }
}
