//! Which entry to evict: S3-FIFO (Yang et al., SOSP 2023), over a slab of entries linked into
//! two queues.
//!
//! * A new entry joins the *small* queue (a tenth of the budget), unless the ghost remembers its
//!   command being evicted lately: then it joins the *main* queue.
//! * A hit only raises the entry's 2-bit frequency (an atomic store under the shard's read lock:
//!   hits never take the writer lock nor reorder a list).
//! * Evicting from small: the oldest entry moves to main (frequency kept) if it was read since it
//!   was filled, else it is evicted and its command's hash goes to the ghost.
//! * Evicting from main: the oldest entry with a frequency above zero goes back to the tail with
//!   its frequency lowered by one (second chance, up to three); the first one at zero is evicted.
//!
//! Why: a scan (a million keys read once) only ever passes through the small queue, so entries that
//! are read again (hot keys) sit in main, out of its reach; and hits cost no more than a relaxed
//! atomic, which LRU's move-to-front cannot offer. Both bounds (entries and bytes) are enforced: the
//! small queue gives way while it holds more than its tenth of either.

use bytes::Bytes;

use super::epochs::KeyHash;
use super::ghost::Ghost;
use super::reply::Reply;

/// An index into the slab.
pub(super) type Id = u32;
const NIL: Id = Id::MAX;

/// An entry as the writer side knows it.
pub(super) struct Node {
    pub(super) command: Bytes,
    /// The hash the store chose the shard with (also what the ghost remembers).
    pub(super) hash: u64,
    pub(super) keys: Box<[KeyHash]>,
    pub(super) cost: usize,
    /// Shared with the shard map: where readers bump the frequency.
    pub(super) reply: Reply,
    queue: Queue,
    prev: Id,
    next: Id,
}

impl NewNode {
    pub(super) fn new(command: Bytes, hash: u64, keys: Box<[KeyHash]>, cost: usize) -> NewNode {
        NewNode {
            command,
            hash,
            keys,
            cost,
        }
    }
}

/// What it takes to insert an entry; the policy assigns its id and queue.
pub(super) struct NewNode {
    command: Bytes,
    hash: u64,
    keys: Box<[KeyHash]>,
    cost: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

/// A doubly linked FIFO threaded through the slab: tail is newest.
#[derive(Debug, Clone, Copy)]
struct List {
    head: Id,
    tail: Id,
    len: usize,
    bytes: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
        bytes: 0,
    };
}

/// The budget: at most this many entries and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    pub(super) entries: usize,
    pub(super) bytes: usize,
}

/// The entries, their queues and the ghost.
pub(super) struct Policy {
    nodes: Vec<Option<Node>>,
    free: Vec<Id>,
    small: List,
    main: List,
    ghost: Ghost,
    budget: Budget,
    small_budget: Budget,
}

impl Policy {
    pub(super) fn new(budget: Budget) -> Policy {
        Policy {
            nodes: Vec::new(),
            free: Vec::new(),
            small: List::EMPTY,
            main: List::EMPTY,
            ghost: Ghost::new(budget.entries),
            budget,
            small_budget: Budget {
                entries: (budget.entries / 10).max(1),
                bytes: (budget.bytes / 10).max(1),
            },
        }
    }

    pub(super) fn entries(&self) -> usize {
        self.small.len + self.main.len
    }

    pub(super) fn bytes(&self) -> usize {
        self.small.bytes + self.main.bytes
    }

    pub(super) fn get(&self, id: Id) -> Option<&Node> {
        self.nodes.get(id as usize).and_then(Option::as_ref)
    }

    /// Adds an entry for `reply` and gives the reply its id. Fails only when the slab already holds
    /// `u32::MAX` entries, which no budget allows.
    pub(super) fn insert(&mut self, new: NewNode, reply: &Reply) -> Option<Id> {
        let id = self.allocate()?;
        reply.set_id(id);
        let queue = if self.ghost.contains(new.hash) {
            Queue::Main
        } else {
            Queue::Small
        };
        let node = Node {
            command: new.command,
            hash: new.hash,
            keys: new.keys,
            cost: new.cost,
            reply: reply.clone(),
            queue,
            prev: NIL,
            next: NIL,
        };
        *self.nodes.get_mut(id as usize)? = Some(node);
        self.push_back(id);
        Some(id)
    }

    fn allocate(&mut self) -> Option<Id> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        let id = Id::try_from(self.nodes.len())
            .ok()
            .filter(|&id| id != NIL)?;
        self.nodes.push(None);
        Some(id)
    }

    /// Takes the entry out (invalidated, replaced or evicted).
    pub(super) fn remove(&mut self, id: Id) -> Option<Node> {
        self.unlink(id);
        let node = self.nodes.get_mut(id as usize)?.take()?;
        self.free.push(id);
        Some(node)
    }

    /// True while the entries exceed either bound.
    pub(super) fn over_budget(&self) -> bool {
        self.entries() > self.budget.entries || self.bytes() > self.budget.bytes
    }

    /// The next entry to evict, after moving the entries S3-FIFO keeps (the caller removes it, and
    /// then asks again while [`Policy::over_budget`]). `None` only when empty.
    pub(super) fn victim(&mut self) -> Option<Id> {
        loop {
            let small_over = self.small.len > self.small_budget.entries
                || self.small.bytes > self.small_budget.bytes;
            let from_small = self.small.len > 0 && (small_over || self.main.len == 0);
            let head = if from_small {
                self.small.head
            } else {
                self.main.head
            };
            let (queue, freq) = {
                let node = self.get(head)?;
                (node.queue, node.reply.freq())
            };
            match (queue, freq) {
                (_, 0) => return Some(head),
                // Read since it was filled: it earned main, its frequency intact.
                (Queue::Small, _) => self.requeue(head, Queue::Main, freq),
                (Queue::Main, _) => self.requeue(head, Queue::Main, freq - 1),
            }
        }
    }

    /// Remembers an entry evicted from the small queue unread (call before removing it).
    pub(super) fn remember_if_small(&mut self, id: Id) {
        if let Some(node) = self.get(id) {
            if node.queue == Queue::Small {
                let hash = node.hash;
                self.ghost.insert(hash);
            }
        }
    }

    /// Drops every entry (the ghost too: after a flush nothing recent is worth favouring).
    pub(super) fn clear(&mut self) {
        self.nodes.clear();
        self.free.clear();
        self.small = List::EMPTY;
        self.main = List::EMPTY;
        self.ghost.clear();
    }

    /// Moves `id` to the tail of `queue` with frequency `freq`.
    fn requeue(&mut self, id: Id, queue: Queue, freq: u8) {
        self.unlink(id);
        if let Some(node) = self.node_mut(id) {
            node.queue = queue;
            node.reply.set_freq(freq);
        }
        self.push_back(id);
    }

    fn node_mut(&mut self, id: Id) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn list_mut(&mut self, queue: Queue) -> &mut List {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
        }
    }

    fn push_back(&mut self, id: Id) {
        let Some((queue, cost)) = self.get(id).map(|n| (n.queue, n.cost)) else {
            return;
        };
        let old_tail = self.list_mut(queue).tail;
        if let Some(node) = self.node_mut(id) {
            node.prev = old_tail;
            node.next = NIL;
        }
        match self.node_mut(old_tail) {
            Some(tail) => tail.next = id,
            None => self.list_mut(queue).head = id,
        }
        let list = self.list_mut(queue);
        list.tail = id;
        list.len += 1;
        list.bytes += cost;
    }

    fn unlink(&mut self, id: Id) {
        let Some((queue, cost, prev, next)) =
            self.get(id).map(|n| (n.queue, n.cost, n.prev, n.next))
        else {
            return;
        };
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.list_mut(queue).head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.list_mut(queue).tail = prev,
        }
        if let Some(node) = self.node_mut(id) {
            node.prev = NIL;
            node.next = NIL;
        }
        let list = self.list_mut(queue);
        list.len -= 1;
        list.bytes -= cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Frame;

    fn reply() -> Reply {
        Reply::new(&Frame::Integer(1)).unwrap()
    }

    fn node(i: u64, cost: usize) -> NewNode {
        NewNode::new(Bytes::from(i.to_string()), i, Box::new([]), cost)
    }

    fn policy(entries: usize, bytes: usize) -> Policy {
        Policy::new(Budget { entries, bytes })
    }

    /// Evicts until within budget, as the store does; returns the evicted hashes.
    fn evict(p: &mut Policy) -> Vec<u64> {
        let mut out = Vec::new();
        while p.over_budget() {
            let id = p.victim().unwrap();
            p.remember_if_small(id);
            out.push(p.remove(id).unwrap().hash);
        }
        out
    }

    #[test]
    fn lists_keep_counts_through_removals() {
        let mut p = policy(100, 1000);
        let ids: Vec<Id> = (0..5)
            .map(|i| p.insert(node(i, 10), &reply()).unwrap())
            .collect();
        assert_eq!((p.entries(), p.bytes()), (5, 50));
        // Middle, head and tail.
        for id in [ids[2], ids[0], ids[4]] {
            assert!(p.remove(id).is_some());
        }
        assert_eq!((p.entries(), p.bytes()), (2, 20));
        assert!(p.remove(ids[0]).is_none(), "removed twice");
        assert_eq!(p.small.head, ids[1]);
        assert_eq!(p.small.tail, ids[3]);
        // Freed ids are reused.
        let again = p.insert(node(9, 1), &reply()).unwrap();
        assert!(ids.contains(&again));
    }

    #[test]
    fn unread_entries_leave_first_and_read_ones_move_to_main() {
        let mut p = policy(10, 1_000_000);
        let replies: Vec<Reply> = (0..10).map(|_| reply()).collect();
        for (i, r) in replies.iter().enumerate() {
            p.insert(node(i as u64, 1), r).unwrap();
        }
        replies[0].touch();
        p.insert(node(10, 1), &reply()).unwrap();
        // Entry 0 is the oldest but was read: it moves to main, entry 1 goes.
        assert_eq!(evict(&mut p), vec![1]);
        assert_eq!(p.main.len, 1);
        // Entry 1 is in the ghost: filled again, it goes to main directly.
        p.insert(node(1, 1), &reply()).unwrap();
        assert_eq!(p.main.len, 2);
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let mut p = policy(1000, 100);
        for i in 0..50 {
            p.insert(node(i, 7), &reply()).unwrap();
            evict(&mut p);
            assert!(p.bytes() <= 100);
        }
        assert_eq!(p.entries(), 100 / 7);
    }

    #[test]
    fn clear_empties() {
        let mut p = policy(10, 100);
        (0..5).for_each(|i| {
            p.insert(node(i, 1), &reply()).unwrap();
        });
        p.clear();
        assert_eq!((p.entries(), p.bytes()), (0, 0));
        assert!(p.victim().is_none());
    }
}
