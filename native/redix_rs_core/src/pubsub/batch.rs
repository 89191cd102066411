//! Taking a bounded batch of deliveries off the queue owed to subscribers: the `RedixRs.PubSub` process
//! sends one batch per call, on a normal scheduler, so a batch must stay short in count and in bytes to
//! build, while each event's properties are built once for all of its subscribers. One queued item may
//! hold the deliveries of one event to many subscribers; a batch may take part of it.

use std::collections::VecDeque;

/// Queued deliveries of one event: to one subscriber or to many.
pub trait Deliveries: Sized {
    /// How many deliveries the item holds (at least one).
    fn count(&self) -> usize;
    /// Splits off the first `n` deliveries (`0 < n < count()`) as an item of their own.
    fn split_front(&mut self, n: usize) -> Self;
    /// Identifies the event (equal for all of its items).
    fn group(&self) -> usize;
    /// What building the event costs.
    fn group_cost(&self) -> usize;
}

/// The next deliveries to send: at most `max_items` deliveries, and events costing at most `max_cost`
/// in all, but always at least one delivery (so that a single large event still goes).
pub fn take_batch<T: Deliveries>(
    queue: &mut VecDeque<T>,
    max_items: usize,
    max_cost: usize,
) -> Vec<T> {
    let mut batch = Vec::new();
    let (mut taken, mut cost) = (0, 0);
    let mut last = None;
    while let Some(next) = queue.front_mut() {
        if taken == max_items {
            break;
        }
        if last != Some(next.group()) {
            last = Some(next.group());
            cost += next.group_cost();
            if cost > max_cost && taken > 0 {
                break;
            }
        }
        let room = max_items - taken;
        if next.count() > room {
            batch.push(next.split_front(room));
            break;
        }
        taken += next.count();
        batch.extend(queue.pop_front());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event id, its cost, deliveries)
    #[derive(Debug, PartialEq)]
    struct D(usize, usize, usize);

    impl Deliveries for D {
        fn count(&self) -> usize {
            self.2
        }
        fn split_front(&mut self, n: usize) -> D {
            self.2 -= n;
            D(self.0, self.1, n)
        }
        fn group(&self) -> usize {
            self.0
        }
        fn group_cost(&self) -> usize {
            self.1
        }
    }

    fn queue(items: &[(usize, usize, usize)]) -> VecDeque<D> {
        items.iter().map(|&(g, c, n)| D(g, c, n)).collect()
    }

    #[test]
    fn an_event_costs_once_for_all_its_deliveries() {
        // 100 subscribers of one 60-byte event fit in a 100-byte budget, queued one by one or as one.
        let mut q = queue(&[(1, 60, 1); 100]);
        assert_eq!(take_batch(&mut q, 200, 100).len(), 100);
        let mut q = queue(&[(1, 60, 100)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 60, 100)]);
    }

    #[test]
    fn an_event_to_many_is_taken_in_parts() {
        let mut q = queue(&[(1, 10, 450), (2, 10, 1)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 10, 200)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 10, 200)]);
        assert_eq!(
            take_batch(&mut q, 200, 100),
            vec![D(1, 10, 50), D(2, 10, 1)]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn bounded_by_count_and_by_cost() {
        let mut q = queue(&[(1, 1, 1); 10]);
        assert_eq!(take_batch(&mut q, 4, 100).len(), 4);
        assert_eq!(q.len(), 6);
        let mut q = queue(&[(1, 60, 1), (2, 60, 1), (3, 60, 1)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 60, 1)]);
        assert_eq!(take_batch(&mut q, 200, 200), vec![D(2, 60, 1), D(3, 60, 1)]);
    }

    #[test]
    fn one_delivery_always_goes() {
        let mut q = queue(&[(1, 1_000_000, 1), (2, 1, 1)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 1_000_000, 1)]);
        assert!(take_batch(&mut VecDeque::<D>::new(), 200, 100).is_empty());
    }
}
