//! The codecs' round trips, property-tested, and their refusals of what they cannot read.

mod shared_decode_tests {
    use super::super::*;
    use http::StatusCode;

    #[test]
    fn shared_decoding_slices_the_body_without_copying() {
        let entry = CachedResponse::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![7u8; 4096]),
        );
        let encoded = BinaryCodec.encode(&entry);
        let decoded = BinaryCodec.decode_shared(&encoded).unwrap();
        assert_eq!(decoded, entry);
        let start = encoded.as_ptr() as usize;
        let body = decoded.body.as_ptr() as usize;
        assert!(
            body >= start && body < start + encoded.len(),
            "the body points into the input"
        );
        assert_eq!(
            JsonCodec.decode_shared(&JsonCodec.encode(&entry)).unwrap(),
            entry
        );
    }
}

mod round_trips {
    #![allow(clippy::unwrap_used)]

    use super::super::binary::{BINARY_VERSION, MAGIC, encode_binary, write_binary};
    use super::super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn entry(body: &'static [u8]) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            stored_at: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            initial_age: Duration::from_secs(3),
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(600),
            vary: vec![
                (
                    "accept-language".parse().unwrap(),
                    Some(HeaderValue::from_static("en")),
                ),
                ("x-missing".parse().unwrap(), None),
            ],
            tags: vec!["a".to_owned()],
        }
    }

    const CODECS: [&dyn Codec; 2] = [&BinaryCodec, &JsonCodec];

    fn arb_name() -> impl Strategy<Value = HeaderName> {
        const COMMON: &[&str] = &["content-type", "set-cookie", "cache-control", "etag"];
        prop_oneof![
            prop::sample::select(COMMON).prop_map(HeaderName::from_static),
            "[a-z][a-z0-9-]{0,15}".prop_map(|name| HeaderName::try_from(name).unwrap()),
        ]
    }

    fn arb_value() -> impl Strategy<Value = HeaderValue> {
        let byte = prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff];
        prop_oneof![
            vec(byte, 0..24).prop_map(|v| HeaderValue::from_bytes(&v).unwrap()),
            "[ -~]{0,24}".prop_map(|v| HeaderValue::from_str(&v).unwrap()),
        ]
    }

    fn arb_entry(max_body: usize) -> impl Strategy<Value = CachedResponse> {
        // Year ~2500 in nanoseconds since the epoch, well inside a u64.
        const YEAR_2500_NS: u64 = 16_725_225_600_000_000_000;
        let body = prop_oneof![
            vec(any::<u8>(), 0..max_body).prop_map(Bytes::from),
            ".{0,64}".prop_map(Bytes::from),
        ];
        (
            (100u16..=999, vec((arb_name(), arb_value()), 0..8)),
            vec((arb_name(), proptest::option::of(arb_value())), 0..4),
            vec(".{0,12}", 0..4),
            body,
            (0..=YEAR_2500_NS, any::<[u64; 4]>()),
        )
            .prop_map(|((status, header_list), vary, tags, body, (stored, d))| {
                let mut headers = HeaderMap::new();
                for (name, value) in header_list {
                    headers.append(name, value);
                }
                CachedResponse {
                    status: StatusCode::from_u16(status).unwrap(),
                    headers,
                    body,
                    stored_at: UNIX_EPOCH + Duration::from_nanos(stored),
                    initial_age: Duration::from_nanos(d[0]),
                    ttl: Duration::from_nanos(d[1]),
                    stale_while_revalidate: Duration::from_nanos(d[2]),
                    stale_if_error: Duration::from_nanos(d[3]),
                    vary,
                    tags,
                }
            })
    }

    proptest! {
        #[test]
        fn both_codecs_round_trip_any_entry_exactly(entry in arb_entry(4096)) {
            for codec in CODECS {
                let bytes = codec.encode(&entry);
                prop_assert_eq!(codec.decode(&bytes).unwrap(), entry.clone(), "{}", codec.name());
            }
            let mut len = 0;
            write_binary(&mut len, &entry);
            prop_assert_eq!(encode_binary(&entry).len(), len);
        }

        #[test]
        fn every_truncation_is_an_error_not_a_panic(entry in arb_entry(64)) {
            for codec in CODECS {
                let bytes = codec.encode(&entry);
                for end in 0..bytes.len() {
                    prop_assert!(codec.decode(&bytes[..end]).is_err(), "{} at {end}", codec.name());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(garbage in vec(any::<u8>(), 0..512)) {
            for codec in CODECS {
                let _ = codec.decode(&garbage);
            }
            // Behind valid magic and version the parser reaches the fields.
            let _ = BinaryCodec.decode(&[b"TRC\x01".as_slice(), &garbage].concat());
        }

        #[test]
        fn corrupting_one_byte_never_panics(
            entry in arb_entry(64), index in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            for codec in CODECS {
                let mut bytes = codec.encode(&entry).to_vec();
                let at = index.index(bytes.len());
                bytes[at] = byte;
                let _ = codec.decode(&bytes);
            }
        }

        #[test]
        fn another_version_is_unsupported(
            entry in arb_entry(64), byte in any::<u8>(), version in 2u64..
        ) {
            prop_assume!(byte != BINARY_VERSION);
            let mut binary = BinaryCodec.encode(&entry).to_vec();
            binary[3] = byte;
            let kind = BinaryCodec.decode(&binary).unwrap_err().kind();
            prop_assert_eq!(kind, DecodeErrorKind::UnsupportedVersion);

            let json = String::from_utf8(JsonCodec.encode(&entry).to_vec()).unwrap();
            let json = json.replacen(r#"{"v":1,"#, &format!(r#"{{"v":{version},"#), 1);
            let kind = JsonCodec.decode(json.as_bytes()).unwrap_err().kind();
            prop_assert_eq!(kind, DecodeErrorKind::UnsupportedVersion);
        }

        #[test]
        fn garbage_is_an_unknown_format(garbage in vec(any::<u8>(), 0..256)) {
            prop_assume!(!garbage.starts_with(MAGIC));
            prop_assume!(garbage.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{'));
            for codec in CODECS {
                let kind = codec.decode(&garbage).unwrap_err().kind();
                prop_assert_eq!(kind, DecodeErrorKind::UnknownFormat);
            }
        }
    }

    #[test]
    fn json_of_a_utf8_body_is_readable() {
        let json = JsonCodec.encode(&entry(b"hello"));
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.starts_with(r#"{"v":1,"status":200,"#), "{text}");
        assert!(text.contains(r#""body":"hello""#), "{text}");
        assert!(
            text.contains(r#"["set-cookie","a=1"],["set-cookie","b=2"]"#),
            "{text}"
        );
        assert!(text.contains(r#""vary":[["accept-language","en"],["x-missing",null]]"#));
        assert!(!text.contains("body_b64"), "{text}");
    }

    #[test]
    fn json_of_a_non_utf8_body_uses_body_b64() {
        let entry = entry(b"\xff\x00binary");
        let json = JsonCodec.encode(&entry);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""body_b64":"/wBiaW5hcnk=""#), "{text}");
        assert!(!text.contains(r#""body":"#), "{text}");
        let binary = BinaryCodec.encode(&entry);
        assert_eq!(
            JsonCodec.decode(&json).unwrap(),
            BinaryCodec.decode(&binary).unwrap()
        );
    }

    #[test]
    fn json_of_a_non_utf8_header_value_uses_b64() {
        let mut entry = entry(b"");
        let value = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        entry.headers.insert("x-obs", value.clone());
        entry.vary.push(("x-obs".parse().unwrap(), Some(value)));
        let json = JsonCodec.encode(&entry);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#"["x-obs",{"b64":"Y2Fm6Q=="}]"#), "{text}");
        assert_eq!(JsonCodec.decode(&json).unwrap(), entry);
    }

    #[test]
    fn binary_rejects_trailing_bytes() {
        let mut bytes = BinaryCodec.encode(&entry(b"hi")).to_vec();
        bytes.push(0);
        let err = BinaryCodec.decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), DecodeErrorKind::Invalid);
        assert_eq!(
            err.to_string(),
            "cannot decode cached response: trailing bytes after the body"
        );
    }

    #[test]
    fn a_forged_header_count_is_truncated_without_a_huge_allocation() {
        let mut bytes = BinaryCodec.encode(&entry(b"")).to_vec();
        let headers_at = MAGIC.len() + 1 + 2 + 5 * 8;
        bytes[headers_at..headers_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        bytes.truncate(headers_at + 4);
        let kind = BinaryCodec.decode(&bytes).unwrap_err().kind();
        assert_eq!(kind, DecodeErrorKind::Truncated);
    }

    #[test]
    fn the_binary_stored_at_is_where_stores_compare_it() {
        let mut entry = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::new());
        entry.stored_at = UNIX_EPOCH + Duration::from_nanos(0x0102_0304_0506_0708);
        let encoded = BinaryCodec.encode(&entry);
        assert_eq!(encoded[..4], BINARY_PREFIX);
        assert_eq!(encoded[BINARY_STORED_AT], binary_stored_at(&entry));
        assert_eq!(binary_stored_at(&entry), [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn malformed_json_is_classified() {
        let kind = |text: &str| JsonCodec.decode(text.as_bytes()).unwrap_err().kind();
        assert_eq!(kind(r#"{"status":200}"#), DecodeErrorKind::UnknownFormat);
        assert_eq!(kind("[1]"), DecodeErrorKind::UnknownFormat);
        assert_eq!(kind(r#"{"v":7}"#), DecodeErrorKind::UnsupportedVersion);
        assert_eq!(kind(r#"{"v":1,"status":200}"#), DecodeErrorKind::Invalid);
        assert_eq!(kind(r#"{"v":1,"status":"#), DecodeErrorKind::Truncated);
        let both = String::from_utf8(JsonCodec.encode(&entry(b"x")).to_vec()).unwrap();
        let both = both.replace(r#""body":"x""#, r#""body":"x","body_b64":"eA==""#);
        assert_eq!(kind(&both), DecodeErrorKind::Invalid);
        let bad_status = String::from_utf8(JsonCodec.encode(&entry(b"x")).to_vec()).unwrap();
        assert_eq!(
            kind(&bad_status.replace("200", "1000")),
            DecodeErrorKind::Invalid
        );
    }

    #[test]
    fn times_saturate_instead_of_failing() {
        let mut entry = entry(b"");
        entry.stored_at = UNIX_EPOCH - Duration::from_secs(1);
        entry.ttl = Duration::MAX;
        for codec in CODECS {
            let decoded = codec.decode(&codec.encode(&entry)).unwrap();
            assert_eq!(decoded.stored_at, UNIX_EPOCH);
            assert_eq!(decoded.ttl, Duration::from_nanos(u64::MAX));
        }
    }

    #[test]
    fn codecs_name_themselves_and_do_not_read_each_other() {
        assert_eq!((BinaryCodec.name(), JsonCodec.name()), ("binary", "json"));
        let entry = entry(b"hi");
        let json_as_binary = BinaryCodec.decode(&JsonCodec.encode(&entry)).unwrap_err();
        assert_eq!(json_as_binary.kind(), DecodeErrorKind::UnknownFormat);
        let binary_as_json = JsonCodec.decode(&BinaryCodec.encode(&entry)).unwrap_err();
        assert_eq!(binary_as_json.kind(), DecodeErrorKind::UnknownFormat);
    }
}
