//! Who is subscribed to what, as the fan-out in the reader needs it.
//!
//! A subscriber added before Redis confirmed the subscription is *pending*: it gets no message until
//! the confirmation arrives, which is when it is told `subscribed`. Redis sends a channel's messages
//! only after confirming it, so a subscriber never sees a message before its confirmation.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use bytes::Bytes;

use super::Kind;

struct Entry<S> {
    subscriber: S,
    confirmed: bool,
}

/// Channels, patterns and shard channels → their subscribers. `S` identifies a subscriber.
pub struct Registry<S> {
    table: HashMap<(Kind, Bytes), Vec<Entry<S>>>,
}

impl<S> Default for Registry<S> {
    fn default() -> Self {
        Registry {
            table: HashMap::new(),
        }
    }
}

impl<S: Clone + PartialEq> Registry<S> {
    /// Adds `subscriber` to wait for Redis's confirmation of `name`.
    pub fn add_pending(&mut self, kind: Kind, name: Bytes, subscriber: S) {
        self.add(kind, name, subscriber, false);
    }

    /// Adds `subscriber` to a subscription Redis already confirmed.
    pub fn add_confirmed(&mut self, kind: Kind, name: Bytes, subscriber: S) {
        self.add(kind, name, subscriber, true);
    }

    fn add(&mut self, kind: Kind, name: Bytes, subscriber: S, confirmed: bool) {
        let entries = self.table.entry((kind, name)).or_default();
        match entries.iter_mut().find(|e| e.subscriber == subscriber) {
            Some(entry) => entry.confirmed |= confirmed,
            None => entries.push(Entry {
                subscriber,
                confirmed,
            }),
        }
    }

    /// Redis confirmed `name`: returns the subscribers that were waiting for it, now confirmed.
    pub fn confirm(&mut self, kind: Kind, name: &Bytes) -> Vec<S> {
        let Some(entries) = self.table.get_mut(&(kind, name.clone())) else {
            return Vec::new();
        };
        entries
            .iter_mut()
            .filter(|e| !e.confirmed)
            .map(|e| {
                e.confirmed = true;
                e.subscriber.clone()
            })
            .collect()
    }

    /// Whether Redis already confirmed `name` (some subscriber of it is confirmed).
    pub fn is_confirmed(&self, kind: Kind, name: &Bytes) -> bool {
        self.table
            .get(&(kind, name.clone()))
            .is_some_and(|entries| entries.iter().any(|e| e.confirmed))
    }

    /// Removes `subscriber` from `name`; returns whether it was there.
    pub fn remove(&mut self, kind: Kind, name: &Bytes, subscriber: &S) -> bool {
        let key = (kind, name.clone());
        let Some(entries) = self.table.get_mut(&key) else {
            return false;
        };
        let before = entries.len();
        entries.retain(|e| &e.subscriber != subscriber);
        let removed = entries.len() != before;
        if entries.is_empty() {
            self.table.remove(&key);
        }
        removed
    }

    /// The confirmed subscribers of `name`, who get its messages.
    pub fn recipients<'a>(&'a self, kind: Kind, name: &Bytes) -> impl Iterator<Item = &'a S> + 'a {
        self.table
            .get(&(kind, name.clone()))
            .into_iter()
            .flatten()
            .filter(|e| e.confirmed)
            .map(|e| &e.subscriber)
    }
}

impl<S: Clone + Eq + Hash> Registry<S> {
    /// Every subscriber once, whatever it subscribed to (for telling each about a disconnection).
    pub fn subscribers(&self) -> Vec<S> {
        let mut seen = HashSet::new();
        self.table
            .values()
            .flatten()
            .filter(|e| seen.insert(e.subscriber.clone()))
            .map(|e| e.subscriber.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn pending_subscribers_get_messages_only_once_confirmed() {
        let mut reg = Registry::default();
        reg.add_pending(Kind::Channel, name("a"), 1);
        reg.add_pending(Kind::Channel, name("a"), 2);
        assert_eq!(reg.recipients(Kind::Channel, &name("a")).count(), 0);
        assert!(!reg.is_confirmed(Kind::Channel, &name("a")));
        assert_eq!(reg.confirm(Kind::Channel, &name("a")), vec![1, 2]);
        assert!(reg.is_confirmed(Kind::Channel, &name("a")));
        assert_eq!(
            reg.recipients(Kind::Channel, &name("a"))
                .copied()
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        // A second confirmation (a repeated SUBSCRIBE) tells nobody again.
        assert!(reg.confirm(Kind::Channel, &name("a")).is_empty());
    }

    #[test]
    fn kinds_are_separate_namespaces() {
        let mut reg = Registry::default();
        reg.add_confirmed(Kind::Pattern, name("a"), 1);
        assert_eq!(reg.recipients(Kind::Channel, &name("a")).count(), 0);
        assert_eq!(reg.recipients(Kind::Shard, &name("a")).count(), 0);
        assert_eq!(reg.recipients(Kind::Pattern, &name("a")).count(), 1);
    }

    #[test]
    fn adding_twice_keeps_one_entry_and_removal_cleans_up() {
        let mut reg = Registry::default();
        reg.add_pending(Kind::Channel, name("a"), 7);
        reg.add_confirmed(Kind::Channel, name("a"), 7);
        assert_eq!(reg.recipients(Kind::Channel, &name("a")).count(), 1);
        assert!(reg.remove(Kind::Channel, &name("a"), &7));
        assert!(!reg.remove(Kind::Channel, &name("a"), &7));
        assert!(reg.subscribers().is_empty());
    }

    #[test]
    fn subscribers_lists_each_once() {
        let mut reg = Registry::default();
        reg.add_confirmed(Kind::Channel, name("a"), 1);
        reg.add_confirmed(Kind::Channel, name("b"), 1);
        reg.add_pending(Kind::Pattern, name("c*"), 2);
        let mut all = reg.subscribers();
        all.sort();
        assert_eq!(all, vec![1, 2]);
    }
}
