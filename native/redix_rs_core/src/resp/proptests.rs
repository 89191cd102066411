//! Property tests: arbitrary frames survive encode → parse however the bytes
//! are split, commands round-trip, and no input makes the parser panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::{encode_command, encoded_len, Frame, Limits, Parsed, Parser};

fn bytes_of(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Simple strings and errors cannot contain CR or LF.
fn line_text() -> impl Strategy<Value = Bytes> {
    "[ -~]{0,12}".prop_map(Bytes::from)
}

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes_of(24).prop_map(Frame::Bulk),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        Just(Frame::Null),
        any::<f64>().prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        "-?[0-9]{1,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        bytes_of(24).prop_map(Frame::BulkError),
        (any::<[u8; 3]>(), bytes_of(16))
            .prop_map(|(format, text)| Frame::Verbatim { format, text }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        let pairs = vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Frame::Array),
            vec(inner.clone(), 0..6).prop_map(Frame::Set),
            vec(inner.clone(), 0..6).prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (pairs, inner).prop_map(|(attrs, value)| Frame::Attribute {
                attrs,
                value: Box::new(value),
            }),
        ]
    })
}

/// Structural equality where NaN equals NaN (RESP cannot carry NaN payloads)
/// and 0.0 differs from -0.0 (it does carry the sign).
fn same(a: &Frame, b: &Frame) -> bool {
    use Frame::*;
    match (a, b) {
        (Double(x), Double(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (Array(x), Array(y)) | (Set(x), Set(y)) | (Push(x), Push(y)) => same_list(x, y),
        (Map(x), Map(y)) => same_pairs(x, y),
        (
            Attribute {
                attrs: xa,
                value: xv,
            },
            Attribute {
                attrs: ya,
                value: yv,
            },
        ) => same_pairs(xa, ya) && same(xv, yv),
        _ => a == b,
    }
}

fn same_list(x: &[Frame], y: &[Frame]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
}

fn same_pairs(x: &[(Frame, Frame)], y: &[(Frame, Frame)]) -> bool {
    x.len() == y.len()
        && x.iter()
            .zip(y)
            .all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
}

fn wire(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out.to_vec()
}

/// Split points to try: all of them for small encodings, a spread otherwise.
fn split_points(len: usize) -> Vec<usize> {
    let step = (len / 256).max(1);
    (0..=len)
        .step_by(step)
        .chain([len.saturating_sub(1), len])
        .collect()
}

/// Feeds `chunks` in order, returning every frame completed along the way.
fn feed(parser: &mut Parser, chunks: &[&[u8]]) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Parsed::Complete(frame) = parser.parse(&mut buf).expect("valid input") {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "unconsumed: {buf:?}");
    frames
}

/// Parses until the input is exhausted or rejected; must only never panic.
fn drain(limits: Limits, input: &[u8]) {
    let mut parser = Parser::new(limits);
    let mut buf = BytesMut::from(input);
    while let Ok(Parsed::Complete(_)) = parser.parse(&mut buf) {}
    let _ = parser.pending_bulk_remaining(&buf);
}

fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 16,
        max_aggregate_len: 4,
        max_depth: 3,
        max_reply_bytes: 64,
    }
}

/// Bytes biased towards RESP tokens so the fuzzing gets past the type byte.
fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        proptest::sample::select(b"+-:$*_,#(!=%~>|".to_vec()).prop_map(|b| vec![b]),
        "-?[0-9]{1,3}".prop_map(String::into_bytes),
        Just(b"\r\n".to_vec()),
        Just(b"-1".to_vec()),
        vec(any::<u8>(), 1..4),
    ];
    vec(token, 0..48).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whole_buffer_round_trips(f in frame()) {
        let bytes = wire(&f);
        let mut buf = BytesMut::from(&bytes[..]);
        let parsed = Parser::default().parse(&mut buf);
        prop_assert!(matches!(&parsed, Ok(Parsed::Complete(g)) if same(&f, g)), "{parsed:?}");
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_split_point_round_trips(f in frame()) {
        let bytes = wire(&f);
        for at in split_points(bytes.len()) {
            let mut parser = Parser::default();
            let mut buf = BytesMut::from(&bytes[..at]);
            let first = parser.parse(&mut buf).expect("valid prefix");
            let parsed = if at == bytes.len() {
                first
            } else {
                prop_assert_eq!(first, Parsed::Incomplete, "split at {}", at);
                buf.extend_from_slice(&bytes[at..]);
                parser.parse(&mut buf).expect("valid input")
            };
            prop_assert!(matches!(&parsed, Parsed::Complete(g) if same(&f, g)), "at {at}");
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_at_a_time_round_trips(f in frame()) {
        let bytes = wire(&f);
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let frames = feed(&mut Parser::default(), &chunks);
        prop_assert_eq!(frames.len(), 1);
        prop_assert!(same(&f, &frames[0]));
    }

    #[test]
    fn concatenated_frames_parse_in_order(
        fs in vec(frame(), 1..6),
        chunk in 1usize..64,
    ) {
        let bytes: Vec<u8> = fs.iter().flat_map(wire).collect();
        let whole = feed(&mut Parser::default(), &[&bytes]);
        prop_assert!(same_list(&fs, &whole));
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        let chunked = feed(&mut Parser::default(), &chunks);
        prop_assert!(same_list(&fs, &chunked));
    }

    #[test]
    fn commands_round_trip(args in vec(vec(any::<u8>(), 0..32), 0..8)) {
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_command(&args, &mut out);
        prop_assert_eq!(out.len() - 6, encoded_len(&args));
        let mut buf = out.split_off(6);
        let expected = Frame::Array(args.into_iter().map(|a| Frame::Bulk(Bytes::from(a))).collect());
        prop_assert_eq!(Parser::default().parse(&mut buf), Ok(Parsed::Complete(expected)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn random_bytes_never_panic(input in vec(any::<u8>(), 0..256)) {
        drain(Limits::default(), &input);
        drain(small_limits(), &input);
    }

    #[test]
    fn resp_like_garbage_never_panics(input in resp_ish()) {
        drain(Limits::default(), &input);
        drain(small_limits(), &input);
    }

    #[test]
    fn garbage_after_valid_prefix_never_panics(
        f in frame(),
        cut in any::<prop::sample::Index>(),
        tail in resp_ish(),
    ) {
        let mut input = wire(&f);
        input.truncate(cut.index(input.len() + 1));
        input.extend_from_slice(&tail);
        drain(Limits::default(), &input);
        drain(small_limits(), &input);
    }
}
