//! Example-based tests of the parser: every type, edge cases, hostile input
//! and the linear-work guarantee of incremental parsing.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{encode_command, Frame, Limit, Limits, Parsed, Parser, ProtocolError};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Parses `input` as exactly one frame with default limits.
fn one(input: &[u8]) -> Frame {
    let mut buf = BytesMut::from(input);
    match Parser::default().parse(&mut buf) {
        Ok(Parsed::Complete(frame)) => {
            assert!(buf.is_empty(), "left over: {buf:?}");
            frame
        }
        other => panic!("expected a frame from {input:?}, got {other:?}"),
    }
}

fn err_with(limits: Limits, input: &[u8]) -> ProtocolError {
    match Parser::new(limits).parse(&mut BytesMut::from(input)) {
        Err(e) => e,
        other => panic!("expected an error from {input:?}, got {other:?}"),
    }
}

fn err(input: &[u8]) -> ProtocolError {
    err_with(Limits::default(), input)
}

fn incomplete(parser: &mut Parser, buf: &mut BytesMut) {
    assert_eq!(parser.parse(buf), Ok(Parsed::Incomplete));
}

#[test]
fn parses_resp2_scalars() {
    assert_eq!(one(b"+OK\r\n"), Frame::Simple(b("OK")));
    assert_eq!(one(b"+\r\n"), Frame::Simple(b("")));
    assert_eq!(one(b"-ERR bad thing\r\n"), Frame::Error(b("ERR bad thing")));
    assert_eq!(one(b":0\r\n"), Frame::Integer(0));
    assert_eq!(one(b":+7\r\n"), Frame::Integer(7));
    assert_eq!(one(b":-9223372036854775808\r\n"), Frame::Integer(i64::MIN));
    assert_eq!(one(b":9223372036854775807\r\n"), Frame::Integer(i64::MAX));
    assert_eq!(one(b"$-1\r\n"), Frame::NullBulk);
    assert_eq!(one(b"*-1\r\n"), Frame::NullArray);
}

#[test]
fn parses_bulk_edge_cases() {
    assert_eq!(one(b"$0\r\n\r\n"), Frame::Bulk(b("")));
    assert_eq!(one(b"$5\r\na\0\r\nb\r\n"), Frame::Bulk(b("a\0\r\nb")));
    assert_eq!(
        one(b"$1\r\n\xff\r\n"),
        Frame::Bulk(Bytes::from_static(b"\xff"))
    );
}

#[test]
fn parses_resp3_scalars() {
    assert_eq!(one(b"_\r\n"), Frame::Null);
    assert_eq!(one(b"#t\r\n"), Frame::Boolean(true));
    assert_eq!(one(b"#f\r\n"), Frame::Boolean(false));
    let big = "-3492890328409238509324850943850943825024385";
    let wire = format!("({big}\r\n");
    assert_eq!(one(wire.as_bytes()), Frame::BigNumber(Bytes::from(big)));
    assert_eq!(one(b"(0\r\n"), Frame::BigNumber(b("0")));
    assert_eq!(one(b"!3\r\nERR\r\n"), Frame::BulkError(b("ERR")));
    assert_eq!(
        one(b"=15\r\ntxt:Some string\r\n"),
        Frame::Verbatim {
            format: *b"txt",
            text: b("Some string")
        }
    );
    assert_eq!(
        one(b"=4\r\nmkd:\r\n"),
        Frame::Verbatim {
            format: *b"mkd",
            text: b("")
        }
    );
}

#[test]
fn parses_doubles() {
    let cases: [(&[u8], f64); 9] = [
        (b",1.5\r\n", 1.5),
        (b",-0.25\r\n", -0.25),
        (b",1e10\r\n", 1e10),
        (b",10\r\n", 10.0),
        (b",-1.5E-3\r\n", -1.5e-3),
        (b",inf\r\n", f64::INFINITY),
        (b",+inf\r\n", f64::INFINITY),
        (b",-inf\r\n", f64::NEG_INFINITY),
        (b",-0\r\n", -0.0),
    ];
    for (wire, expected) in cases {
        match one(wire) {
            Frame::Double(v) => assert_eq!(v.to_bits(), expected.to_bits(), "{wire:?}"),
            other => panic!("{wire:?} gave {other:?}"),
        }
    }
    assert!(matches!(one(b",nan\r\n"), Frame::Double(v) if v.is_nan()));
}

#[test]
fn parses_nested_aggregates() {
    let wire = b"%2\r\n+a\r\n~2\r\n:1\r\n#f\r\n$1\r\nb\r\n%1\r\n_\r\n>1\r\n*0\r\n";
    let expected = Frame::Map(vec![
        (
            Frame::Simple(b("a")),
            Frame::Set(vec![Frame::Integer(1), Frame::Boolean(false)]),
        ),
        (
            Frame::Bulk(b("b")),
            Frame::Map(vec![(Frame::Null, Frame::Push(vec![Frame::Array(vec![])]))]),
        ),
    ]);
    assert_eq!(one(wire), expected);
    assert_eq!(one(b"%0\r\n"), Frame::Map(vec![]));
    assert_eq!(one(b"~0\r\n"), Frame::Set(vec![]));
    assert_eq!(one(b"*3\r\n$-1\r\n*-1\r\n_\r\n"), {
        Frame::Array(vec![Frame::NullBulk, Frame::NullArray, Frame::Null])
    });
}

#[test]
fn parses_attribute_before_reply() {
    let wire = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n";
    let expected = Frame::Attribute {
        attrs: vec![(
            Frame::Simple(b("key-popularity")),
            Frame::Map(vec![(Frame::Bulk(b("a")), Frame::Double(0.19))]),
        )],
        value: Box::new(Frame::Array(vec![Frame::Integer(2)])),
    };
    assert_eq!(one(wire), expected);
    let empty = Frame::Attribute {
        attrs: vec![],
        value: Box::new(Frame::Null),
    };
    assert_eq!(one(b"|0\r\n_\r\n"), empty);
}

#[test]
fn parses_attribute_nested_in_array() {
    let wire = b"*2\r\n:1\r\n|1\r\n+ttl\r\n:5\r\n+OK\r\n";
    let attributed = Frame::Attribute {
        attrs: vec![(Frame::Simple(b("ttl")), Frame::Integer(5))],
        value: Box::new(Frame::Simple(b("OK"))),
    };
    assert_eq!(one(wire), Frame::Array(vec![Frame::Integer(1), attributed]));
}

#[test]
fn leaves_following_frames_in_buffer() {
    let mut buf = BytesMut::from(&b":1\r\n+OK\r\n$1"[..]);
    let mut parser = Parser::default();
    assert_eq!(
        parser.parse(&mut buf),
        Ok(Parsed::Complete(Frame::Integer(1)))
    );
    assert_eq!(
        parser.parse(&mut buf),
        Ok(Parsed::Complete(Frame::Simple(b("OK"))))
    );
    assert_eq!(parser.parse(&mut buf), Ok(Parsed::Incomplete));
    assert!(!parser.is_mid_frame());
}

#[test]
fn rejects_malformed_lines() {
    assert_eq!(err(b"?"), ProtocolError::InvalidTypeByte(b'?'));
    assert_eq!(err(b"\r\n"), ProtocolError::InvalidTypeByte(b'\r'));
    assert_eq!(err(b":\r\n"), ProtocolError::InvalidInteger);
    assert_eq!(err(b":-\r\n"), ProtocolError::InvalidInteger);
    assert_eq!(err(b":12a\r\n"), ProtocolError::InvalidInteger);
    assert_eq!(
        err(b":9223372036854775808\r\n"),
        ProtocolError::InvalidInteger
    );
    assert_eq!(err(b",\r\n"), ProtocolError::InvalidDouble);
    assert_eq!(err(b",1.2.3\r\n"), ProtocolError::InvalidDouble);
    assert_eq!(err(b"#x\r\n"), ProtocolError::InvalidBoolean);
    assert_eq!(err(b"#\r\n"), ProtocolError::InvalidBoolean);
    assert_eq!(err(b"(\r\n"), ProtocolError::InvalidBigNumber);
    assert_eq!(err(b"(-\r\n"), ProtocolError::InvalidBigNumber);
    assert_eq!(err(b"(12x\r\n"), ProtocolError::InvalidBigNumber);
    assert_eq!(err(b"_x\r\n"), ProtocolError::InvalidNull);
    assert_eq!(err(b"+OK\n"), ProtocolError::MissingCrlf);
    assert_eq!(err(b"+\n"), ProtocolError::MissingCrlf);
}

#[test]
fn rejects_bad_lengths() {
    assert_eq!(err(b"$-2\r\n"), ProtocolError::InvalidLength(-2));
    assert_eq!(err(b"*-2\r\n"), ProtocolError::InvalidLength(-2));
    assert_eq!(err(b"!-1\r\n"), ProtocolError::InvalidLength(-1));
    for tag in ["%", "~", ">", "|"] {
        assert_eq!(
            err(format!("{tag}-1\r\n").as_bytes()),
            ProtocolError::InvalidLength(-1)
        );
    }
    assert_eq!(err(b"$x\r\n"), ProtocolError::InvalidInteger);
    assert_eq!(err(b"=3\r\n"), ProtocolError::InvalidVerbatim);
    assert_eq!(err(b"=5\r\ntxt-a\r\n"), ProtocolError::InvalidVerbatim);
}

#[test]
fn rejects_missing_crlf_after_payload() {
    assert_eq!(err(b"$3\r\nabcde"), ProtocolError::MissingCrlf);
    assert_eq!(err(b"$3\r\nabc\n\r"), ProtocolError::MissingCrlf);
    assert_eq!(err(b"!1\r\nab\r\n"), ProtocolError::MissingCrlf);
}

#[test]
fn rejects_hostile_lengths_before_allocating() {
    let started = Instant::now();
    let max_bulk = Limits::default().max_bulk_len;
    let max_agg = Limits::default().max_aggregate_len;
    let bulk = ProtocolError::BulkTooLong {
        len: 99_999_999_999,
        max: max_bulk,
    };
    assert_eq!(err(b"$99999999999\r\n"), bulk);
    let agg = ProtocolError::AggregateTooLong {
        len: 99_999_999_999,
        max: max_agg,
    };
    assert_eq!(err(b"*99999999999\r\n"), agg);
    let map = ProtocolError::AggregateTooLong {
        len: 99_999_999_999,
        max: max_agg,
    };
    assert_eq!(err(b"%99999999999\r\n"), map);
    // At the limit the header is accepted, but only a small capacity is
    // reserved: this would abort the test process otherwise.
    let mut parser = Parser::default();
    let mut buf = BytesMut::from(format!("*{max_agg}\r\n").as_bytes());
    incomplete(&mut parser, &mut buf);
    assert!(parser.is_mid_frame());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn enforces_depth_limit() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(
        one(b"*1\r\n*1\r\n*1\r\n:1\r\n"),
        Frame::Array(vec![Frame::Array(vec![Frame::Array(vec![
            Frame::Integer(1)
        ])])])
    );
    assert_eq!(
        err_with(limits, b"*1\r\n*1\r\n*1\r\n*0\r\n"),
        ProtocolError::TooDeep { max: 3 }
    );
    assert_eq!(
        err_with(limits, b"|0\r\n%1\r\n~1\r\n*1\r\n"),
        ProtocolError::TooDeep { max: 3 }
    );
    let deep = "*1\r\n".repeat(100_000);
    assert_eq!(err(deep.as_bytes()), ProtocolError::TooDeep { max: 256 });
}

#[test]
fn enforces_line_limits() {
    let limits = Limits {
        max_bulk_len: 8,
        ..Limits::default()
    };
    // A status or error line over `max_bulk_len` is a reply over the limit (its caller is told so),
    // not garbage.
    assert_eq!(
        err_with(limits, b"+123456789\r\n"),
        ProtocolError::BulkTooLong { len: 9, max: 8 }
    );
    assert_eq!(
        err_with(limits, b"-1234567890"),
        ProtocolError::BulkTooLong { len: 9, max: 8 }
    );
    let mut parser = Parser::new(limits);
    let mut buf = BytesMut::from(&b"+12345678\r"[..]);
    incomplete(&mut parser, &mut buf);
    buf.extend_from_slice(b"\n");
    assert_eq!(
        parser.parse(&mut buf),
        Ok(Parsed::Complete(Frame::Simple(b("12345678"))))
    );
    let long_header = format!(":{}", "1".repeat(70_000));
    assert_eq!(err(long_header.as_bytes()), ProtocolError::LineTooLong);
    assert_eq!(
        err_with(limits, b"$9\r\n"),
        ProtocolError::BulkTooLong { len: 9, max: 8 }
    );
}

#[test]
fn error_messages_are_readable() {
    let shown = ProtocolError::InvalidTypeByte(b'%').to_string();
    assert_eq!(shown, "invalid type byte 0x25 ('%')");
    let shown = ProtocolError::InvalidTypeByte(0).to_string();
    assert_eq!(shown, "invalid type byte 0x00 ('\\x00')");
    let shown = ProtocolError::BulkTooLong { len: 10, max: 5 }.to_string();
    assert_eq!(shown, "bulk length 10 exceeds the limit of 5 bytes");
}

#[test]
fn remembers_pending_bulk() {
    let mut parser = Parser::default();
    let mut buf = BytesMut::from(&b"*2\r\n$10\r\nabc"[..]);
    incomplete(&mut parser, &mut buf);
    // Header consumed, payload kept in the buffer untouched.
    assert_eq!(&buf[..], b"abc");
    assert_eq!(parser.pending_bulk_remaining(&buf), Some(9));
    assert!(parser.is_mid_frame());
    buf.extend_from_slice(b"defghij\r");
    incomplete(&mut parser, &mut buf);
    assert_eq!(parser.pending_bulk_remaining(&buf), Some(1));
    buf.extend_from_slice(b"\n:5\r\n");
    let expected = Frame::Array(vec![Frame::Bulk(b("abcdefghij")), Frame::Integer(5)]);
    assert_eq!(parser.parse(&mut buf), Ok(Parsed::Complete(expected)));
    assert_eq!(parser.pending_bulk_remaining(&buf), None);
    assert!(!parser.is_mid_frame());
}

#[test]
fn large_array_in_chunks_is_linear() {
    let mut wire = BytesMut::new();
    let args: Vec<String> = (0..100_000).map(|i| format!("value-{i}")).collect();
    encode_command(&args, &mut wire);
    let started = Instant::now();
    let mut parser = Parser::default();
    let mut buf = BytesMut::new();
    let mut result = None;
    for chunk in wire.chunks(4096) {
        buf.extend_from_slice(chunk);
        if let Parsed::Complete(frame) = parser.parse(&mut buf).expect("valid input") {
            result = Some(frame);
        }
    }
    let Some(Frame::Array(items)) = result else {
        panic!("array not completed");
    };
    assert_eq!(items.len(), 100_000);
    assert_eq!(items[99_999], Frame::Bulk(Bytes::from("value-99999")));
    assert!(
        parser.bytes_examined() < 3 * wire.len(),
        "{}",
        parser.bytes_examined()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn slow_line_is_scanned_once() {
    let line = format!("+{}\r\n", "x".repeat(50_000));
    let mut parser = Parser::default();
    let mut buf = BytesMut::new();
    let mut done = None;
    for byte in line.as_bytes() {
        buf.extend_from_slice(&[*byte]);
        if let Parsed::Complete(frame) = parser.parse(&mut buf).expect("valid input") {
            done = Some(frame);
        }
    }
    assert!(matches!(done, Some(Frame::Simple(s)) if s.len() == 50_000));
    assert!(parser.bytes_examined() <= line.len());
}

#[test]
fn enforces_the_reply_byte_limit_per_top_level_frame() {
    // `*2\r\n$3\r\nabc\r\n$3\r\ndef\r\n` is 22 bytes.
    let reply = b"*2\r\n$3\r\nabc\r\n$3\r\ndef\r\n";
    let at = Limits {
        max_reply_bytes: 22,
        ..Limits::default()
    };
    let mut parser = Parser::new(at);
    let mut buf = BytesMut::new();
    // The count starts again with each frame: three replies at the limit in a row are fine.
    for _ in 0..3 {
        buf.extend_from_slice(reply);
    }
    for _ in 0..3 {
        assert!(matches!(parser.parse(&mut buf), Ok(Parsed::Complete(_))));
    }
    let below = Limits {
        max_reply_bytes: 21,
        ..Limits::default()
    };
    assert_eq!(
        err_with(below, reply),
        ProtocolError::ReplyTooLarge { max: 21 }
    );
    // A bulk that would go past it is refused at its header, before its bytes arrive.
    let mut parser = Parser::new(below);
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nabc\r\n$300\r\n"[..]);
    assert_eq!(
        parser.parse(&mut buf),
        Err(ProtocolError::ReplyTooLarge { max: 21 })
    );
    assert_eq!(
        ProtocolError::ReplyTooLarge { max: 1 }.limit(),
        Some(Limit::ReplyBytes)
    );
    assert_eq!(ProtocolError::MissingCrlf.limit(), None);
}

#[test]
fn a_line_still_arriving_counts_against_the_reply_bound() {
    let limits = Limits {
        max_reply_bytes: 100,
        ..Limits::default()
    };
    let mut parser = Parser::new(limits);
    let mut buf = BytesMut::from(&b"+"[..]);
    buf.extend_from_slice(&[b'a'; 99]);
    incomplete(&mut parser, &mut buf);
    buf.extend_from_slice(b"aa");
    assert_eq!(
        parser.parse(&mut buf),
        Err(ProtocolError::ReplyTooLarge { max: 100 })
    );
}

#[test]
fn the_top_level_type_is_known_once_a_frame_begins() {
    let mut parser = Parser::default();
    assert_eq!(parser.top_level_tag(), None);
    let mut buf = BytesMut::from(&b">2\r\n+invalidate\r\n*1\r\n$3\r\nab"[..]);
    incomplete(&mut parser, &mut buf);
    assert_eq!(parser.top_level_tag(), Some(b'>'));
    buf.extend_from_slice(b"c\r\n:1\r\n");
    assert!(matches!(
        parser.parse(&mut buf),
        Ok(Parsed::Complete(Frame::Push(_)))
    ));
    assert_eq!(
        parser.top_level_tag(),
        None,
        "reset once the frame is complete"
    );
    assert!(matches!(
        parser.parse(&mut buf),
        Ok(Parsed::Complete(Frame::Integer(1)))
    ));
}
