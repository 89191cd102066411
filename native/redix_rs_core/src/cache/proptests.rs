//! Random interleavings of submit (ticket), fill, invalidate, flush and get, checked against a
//! model: a fill is accepted, and visible, only if no invalidation of its keys and no flush
//! happened since its submit; an entry stays visible until one of its keys is invalidated.
//!
//! The store shares epochs between keys by hash, so the exact prediction is made per epoch slot;
//! that it is never more lenient than the per-key rule is checked too.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::resp::Frame;

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

/// The commands of the model: a name and the keys it reads (indices into `KEYS`).
const COMMANDS: [(&str, &[usize]); 6] = [
    ("GET", &[0]),
    ("GET", &[1]),
    ("STRLEN", &[0]),
    ("MGET", &[0, 1]),
    ("MGET", &[1, 2, 3]),
    ("GET", &[3]),
];

#[derive(Debug, Clone)]
enum Op {
    Submit(usize),
    Fill(usize, i64),
    Invalidate(Vec<usize>),
    Flush,
    Get(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..COMMANDS.len()).prop_map(Op::Submit),
        3 => (any::<usize>(), any::<i64>()).prop_map(|(i, v)| Op::Fill(i, v)),
        2 => proptest::collection::vec(0..KEYS.len(), 1..3).prop_map(Op::Invalidate),
        1 => Just(Op::Flush),
        3 => (0..COMMANDS.len()).prop_map(Op::Get),
    ]
}

fn command_key(c: usize) -> Bytes {
    let (name, keys) = COMMANDS[c];
    let mut args = vec![name];
    args.extend(keys.iter().map(|&k| KEYS[k]));
    let mut out = bytes::BytesMut::new();
    encode_key(&args, &mut out);
    out.freeze()
}

/// What the model remembers of a submitted read.
struct Pending {
    command: usize,
    at: u64,
    ticket: Ticket,
}

#[derive(Default)]
struct Model {
    now: u64,
    last_flush: u64,
    /// When each key, and each epoch slot, was last invalidated.
    key_moved: HashMap<usize, u64>,
    slot_moved: HashMap<usize, u64>,
    entries: HashMap<usize, i64>,
}

impl Model {
    fn unchanged_since(
        &self,
        moved: &HashMap<usize, u64>,
        of: impl Iterator<Item = usize>,
        at: u64,
    ) -> bool {
        self.last_flush < at
            && of
                .map(|i| moved.get(&i).copied().unwrap_or(0))
                .all(|t| t < at)
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = Store::new(Limits {
        max_entries: 1000,
        max_bytes: 1 << 20,
    })
    .unwrap();
    let slot = |k: usize| store.epoch_slot(KEYS[k].as_bytes());
    let mut model = Model::default();
    let mut pending: Vec<Pending> = Vec::new();
    for op in ops {
        model.now += 1;
        match op {
            Op::Submit(c) => {
                let keys = COMMANDS[c]
                    .1
                    .iter()
                    .map(|&k| Bytes::from_static(KEYS[k].as_bytes()));
                let ticket = store.ticket(command_key(c), keys);
                pending.push(Pending {
                    command: c,
                    at: model.now,
                    ticket,
                });
            }
            Op::Fill(_, _) if pending.is_empty() => {}
            Op::Fill(i, value) => {
                let p = pending.remove(i % pending.len());
                let keys = COMMANDS[p.command].1;
                let by_key = model.unchanged_since(&model.key_moved, keys.iter().copied(), p.at);
                let by_slot =
                    model.unchanged_since(&model.slot_moved, keys.iter().map(|&k| slot(k)), p.at);
                let accepted = store.fill(p.ticket, &Frame::Integer(value)).is_ok();
                prop_assert!(!accepted || by_key, "a stale fill was accepted");
                prop_assert_eq!(accepted, by_slot);
                if accepted {
                    model.entries.insert(p.command, value);
                }
            }
            Op::Invalidate(keys) => {
                let names: Vec<&str> = keys.iter().map(|&k| KEYS[k]).collect();
                store.invalidate_keys(&names);
                for &k in &keys {
                    model.key_moved.insert(k, model.now);
                    model.slot_moved.insert(slot(k), model.now);
                }
                model
                    .entries
                    .retain(|&c, _| !COMMANDS[c].1.iter().any(|k| keys.contains(k)));
            }
            Op::Flush => {
                store.flush();
                model.last_flush = model.now;
                model.entries.clear();
            }
            Op::Get(c) => {
                let got = store.get(&command_key(c)).map(|r| r.frame().clone());
                prop_assert_eq!(got, model.entries.get(&c).map(|&v| Frame::Integer(v)));
            }
        }
    }
    prop_assert_eq!(store.stats().entries, model.entries.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fills_are_visible_only_without_an_invalidation_since_their_submit(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        run(ops)?;
    }
}
