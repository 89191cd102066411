//! Taking a bounded batch of deliveries off the queue owed to subscribers: the `RedixRs.PubSub` process
//! sends one batch per call, on a normal scheduler, so a batch must stay short in count and in bytes to
//! build, while each event's properties are built once for all of its subscribers.

use std::collections::VecDeque;

/// A queued delivery that belongs to an event whose cost (bytes to build) is paid once, however many
/// of its deliveries follow each other.
pub trait Grouped {
    /// Identifies the event (equal for all of its deliveries).
    fn group(&self) -> usize;
    /// What building the event costs.
    fn group_cost(&self) -> usize;
}

/// The next deliveries to send: at most `max_items`, and events costing at most `max_cost` in all,
/// but always at least one delivery (so that a single large event still goes).
pub fn take_batch<T: Grouped>(
    queue: &mut VecDeque<T>,
    max_items: usize,
    max_cost: usize,
) -> Vec<T> {
    let mut batch = Vec::new();
    let mut cost = 0;
    let mut last = None;
    while let Some(next) = queue.front() {
        if batch.len() == max_items {
            break;
        }
        if last != Some(next.group()) {
            last = Some(next.group());
            cost += next.group_cost();
            if cost > max_cost && !batch.is_empty() {
                break;
            }
        }
        batch.extend(queue.pop_front());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event id, its cost)
    #[derive(Debug, PartialEq)]
    struct D(usize, usize);

    impl Grouped for D {
        fn group(&self) -> usize {
            self.0
        }
        fn group_cost(&self) -> usize {
            self.1
        }
    }

    fn queue(items: &[(usize, usize)]) -> VecDeque<D> {
        items.iter().map(|&(g, c)| D(g, c)).collect()
    }

    #[test]
    fn an_event_costs_once_for_all_its_deliveries() {
        // 100 subscribers of one 60-byte event fit in a 100-byte budget.
        let mut q = queue(&[(1, 60); 100]);
        assert_eq!(take_batch(&mut q, 200, 100).len(), 100);
    }

    #[test]
    fn bounded_by_count_and_by_cost() {
        let mut q = queue(&[(1, 1); 10]);
        assert_eq!(take_batch(&mut q, 4, 100).len(), 4);
        assert_eq!(q.len(), 6);
        let mut q = queue(&[(1, 60), (2, 60), (3, 60)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 60)]);
        assert_eq!(take_batch(&mut q, 200, 200), vec![D(2, 60), D(3, 60)]);
    }

    #[test]
    fn one_delivery_always_goes() {
        let mut q = queue(&[(1, 1_000_000), (2, 1)]);
        assert_eq!(take_batch(&mut q, 200, 100), vec![D(1, 1_000_000)]);
        assert!(take_batch(&mut VecDeque::<D>::new(), 200, 100).is_empty());
    }
}
