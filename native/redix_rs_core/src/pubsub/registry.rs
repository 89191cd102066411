//! Who is subscribed to what, as the fan-out in the reader needs it.
//!
//! A subscriber added before Redis confirmed the subscription is *pending*: it gets no message until
//! the confirmation arrives, which is when it is told `subscribed`. Redis sends a channel's messages
//! only after confirming it, so a subscriber never sees a message before its confirmation.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use bytes::Bytes;

use super::Kind;

struct Entry<S> {
    subscriber: S,
    confirmed: bool,
}

/// The subscribers of one name, and the confirmed ones as one shared list: a message is queued for
/// all of them by cloning that list's handle, not each subscriber (rebuilt only after a change).
/// Subscribers split into lanes: one shared list per lane.
pub type ByLane<S> = Arc<[Arc<[S]>]>;

struct Subscribers<S> {
    entries: Vec<Entry<S>>,
    recipients: Option<Arc<[S]>>,
    /// The same, split into lanes (one list per lane, by `lane_of`), for that many lanes.
    by_lane: Option<(usize, ByLane<S>)>,
}

impl<S> Default for Subscribers<S> {
    fn default() -> Self {
        Subscribers {
            entries: Vec::new(),
            recipients: None,
            by_lane: None,
        }
    }
}

impl<S> Subscribers<S> {
    /// Drops the shared lists after a change (they are rebuilt on demand).
    fn changed(&mut self) {
        self.recipients = None;
        self.by_lane = None;
    }
}

/// Channels, patterns and shard channels → their subscribers. `S` identifies a subscriber.
pub struct Registry<S> {
    table: HashMap<(Kind, Bytes), Subscribers<S>>,
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
        let subs = self.table.entry((kind, name)).or_default();
        subs.changed();
        match subs.entries.iter_mut().find(|e| e.subscriber == subscriber) {
            Some(entry) => entry.confirmed |= confirmed,
            None => subs.entries.push(Entry {
                subscriber,
                confirmed,
            }),
        }
    }

    /// Redis confirmed `name`: returns the subscribers that were waiting for it, now confirmed.
    pub fn confirm(&mut self, kind: Kind, name: &Bytes) -> Vec<S> {
        let Some(subs) = self.table.get_mut(&(kind, name.clone())) else {
            return Vec::new();
        };
        subs.changed();
        subs.entries
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
            .is_some_and(|subs| subs.entries.iter().any(|e| e.confirmed))
    }

    /// Removes `subscriber` from `name`; returns whether it was there.
    pub fn remove(&mut self, kind: Kind, name: &Bytes, subscriber: &S) -> bool {
        let key = (kind, name.clone());
        let Some(subs) = self.table.get_mut(&key) else {
            return false;
        };
        let before = subs.entries.len();
        subs.entries.retain(|e| &e.subscriber != subscriber);
        let removed = subs.entries.len() != before;
        subs.changed();
        if subs.entries.is_empty() {
            self.table.remove(&key);
        }
        removed
    }

    /// The confirmed subscribers of `name`, who get its messages.
    pub fn recipients<'a>(&'a self, kind: Kind, name: &Bytes) -> impl Iterator<Item = &'a S> + 'a {
        self.table
            .get(&(kind, name.clone()))
            .into_iter()
            .flat_map(|subs| subs.entries.iter())
            .filter(|e| e.confirmed)
            .map(|e| &e.subscriber)
    }

    /// The confirmed subscribers of `name` as one shared list (`None` when there are none): the same
    /// list, at the cost of a reference count, until the subscriptions of `name` change.
    pub fn shared_recipients(&mut self, kind: Kind, name: &Bytes) -> Option<Arc<[S]>> {
        let subs = self.table.get_mut(&(kind, name.clone()))?;
        if subs.recipients.is_none() {
            let confirmed: Vec<S> = subs
                .entries
                .iter()
                .filter(|e| e.confirmed)
                .map(|e| e.subscriber.clone())
                .collect();
            subs.recipients = Some(confirmed.into());
        }
        subs.recipients.clone().filter(|list| !list.is_empty())
    }

    /// The confirmed subscribers of `name` split into `lanes` shared lists, subscriber `s` in list
    /// `lane_of(s)` (which must be below `lanes`), each in the order of [`Self::shared_recipients`];
    /// `None` when there are none. The same lists until the subscriptions of `name` change.
    pub fn shared_recipients_by_lane(
        &mut self,
        kind: Kind,
        name: &Bytes,
        lanes: usize,
        lane_of: impl Fn(&S) -> usize,
    ) -> Option<ByLane<S>> {
        let subs = self.table.get_mut(&(kind, name.clone()))?;
        match &subs.by_lane {
            Some((n, lists)) if *n == lanes => {}
            _ => {
                let mut split: Vec<Vec<S>> = vec![Vec::new(); lanes];
                for e in subs.entries.iter().filter(|e| e.confirmed) {
                    split[lane_of(&e.subscriber)].push(e.subscriber.clone());
                }
                let lists: Vec<Arc<[S]>> = split.into_iter().map(Arc::from).collect();
                subs.by_lane = Some((lanes, lists.into()));
            }
        }
        subs.by_lane
            .as_ref()
            .map(|(_, lists)| lists.clone())
            .filter(|lists| lists.iter().any(|list| !list.is_empty()))
    }
}

impl<S: Clone + Eq + Hash> Registry<S> {
    /// Every subscriber once, whatever it subscribed to (for telling each about a disconnection).
    pub fn subscribers(&self) -> Vec<S> {
        let mut seen = HashSet::new();
        self.table
            .values()
            .flat_map(|subs| subs.entries.iter())
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
    fn shared_recipients_follow_every_change() {
        let mut reg = Registry::default();
        let a = name("a");
        assert!(reg.shared_recipients(Kind::Channel, &a).is_none());
        reg.add_pending(Kind::Channel, a.clone(), 1);
        assert!(
            reg.shared_recipients(Kind::Channel, &a).is_none(),
            "pending only"
        );
        reg.confirm(Kind::Channel, &a);
        let first = reg.shared_recipients(Kind::Channel, &a).unwrap();
        assert_eq!(&first[..], &[1]);
        let again = reg.shared_recipients(Kind::Channel, &a).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same list until a change");
        reg.add_confirmed(Kind::Channel, a.clone(), 2);
        assert_eq!(
            &reg.shared_recipients(Kind::Channel, &a).unwrap()[..],
            &[1, 2]
        );
        assert_eq!(&first[..], &[1], "a list handed out earlier is unchanged");
        reg.remove(Kind::Channel, &a, &1);
        assert_eq!(&reg.shared_recipients(Kind::Channel, &a).unwrap()[..], &[2]);
        reg.remove(Kind::Channel, &a, &2);
        assert!(reg.shared_recipients(Kind::Channel, &a).is_none());
    }

    #[test]
    fn recipients_by_lane_follow_every_change() {
        let mut reg = Registry::default();
        let a = name("a");
        let odd = |s: &i32| (*s % 2) as usize;
        assert!(reg
            .shared_recipients_by_lane(Kind::Channel, &a, 2, odd)
            .is_none());
        for s in 1..=5 {
            reg.add_confirmed(Kind::Channel, a.clone(), s);
        }
        reg.add_pending(Kind::Channel, a.clone(), 7);
        let lanes = reg
            .shared_recipients_by_lane(Kind::Channel, &a, 2, odd)
            .unwrap();
        assert_eq!(&lanes[0][..], &[2, 4]);
        assert_eq!(
            &lanes[1][..],
            &[1, 3, 5],
            "in order; the pending one left out"
        );
        let again = reg
            .shared_recipients_by_lane(Kind::Channel, &a, 2, odd)
            .unwrap();
        assert!(Arc::ptr_eq(&lanes, &again), "the same lists until a change");
        reg.remove(Kind::Channel, &a, &3);
        let lanes = reg
            .shared_recipients_by_lane(Kind::Channel, &a, 2, odd)
            .unwrap();
        assert_eq!(&lanes[1][..], &[1, 5]);
        reg.confirm(Kind::Channel, &a);
        let lanes = reg
            .shared_recipients_by_lane(Kind::Channel, &a, 2, odd)
            .unwrap();
        assert_eq!(&lanes[1][..], &[1, 5, 7]);
        let one = reg
            .shared_recipients_by_lane(Kind::Channel, &a, 1, |_| 0)
            .unwrap();
        assert_eq!(
            &one[0][..],
            &[1, 2, 4, 5, 7],
            "another lane count splits again"
        );
        for s in [1, 2, 4, 5, 7] {
            reg.remove(Kind::Channel, &a, &s);
        }
        assert!(reg
            .shared_recipients_by_lane(Kind::Channel, &a, 2, odd)
            .is_none());
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
