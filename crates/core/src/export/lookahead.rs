//! Popping a few captures ahead of the drain, so their memory can be fetched in time, without
//! ever keeping one the drain would then lose.

use crossbeam_queue::ArrayQueue;

/// What a drain has popped ahead of the capture it works on, so that it can be prefetched.
///
/// Nothing is popped once the queue was found empty: a capture pushed in between would be
/// held here when the drain ends, and lost (neither exported nor counted as dropped). And
/// nothing is held across a delivery (the caller says how much room the batch has left): a
/// delivery may wait on a slow receiver, and what it holds is neither in the queue nor in a
/// batch.
pub(super) struct Lookahead<T> {
    /// Worked on after the one `advance` returned.
    pub(super) current: Option<T>,
    /// Worked on after `current`.
    pub(super) next: Option<T>,
    /// The queue was found empty.
    dry: bool,
}

impl<T> Lookahead<T> {
    pub(super) fn new() -> Lookahead<T> {
        Lookahead { current: None, next: None, dry: false }
    }

    /// The next item to work on, after which up to `room` items (at most two) stay popped
    /// ahead of it.
    pub(super) fn advance(&mut self, queue: &ArrayQueue<T>, room: usize) -> Option<T> {
        let item = match self.current.take() {
            Some(item) => {
                self.current = self.next.take();
                item
            }
            None => self.pop(queue)?,
        };
        if self.current.is_none() && room >= 1 {
            self.current = self.pop(queue);
        }
        if self.current.is_some() && self.next.is_none() && room >= 2 {
            self.next = self.pop(queue);
        }
        Some(item)
    }

    fn pop(&mut self, queue: &ArrayQueue<T>) -> Option<T> {
        if self.dry {
            return None;
        }
        let item = queue.pop();
        self.dry = item.is_none();
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookahead_never_holds_what_came_after_the_queue_ran_dry() {
        let queue = ArrayQueue::new(8);
        // Empty at the start, then an item arrives: it stays in the queue.
        let mut ahead = Lookahead::new();
        assert_eq!(ahead.advance(&queue, 2), None);
        queue.push(1).unwrap();
        assert_eq!(ahead.advance(&queue, 2), None);
        assert_eq!(queue.len(), 1, "left for the next drain");

        // One item, then another arrives while the first is worked on.
        let mut ahead = Lookahead::new();
        assert_eq!(ahead.advance(&queue, 2), Some(1));
        queue.push(2).unwrap();
        assert_eq!(ahead.advance(&queue, 2), None);
        assert_eq!(queue.pop(), Some(2), "not popped after the queue was seen empty");

        // A run of items comes out whole and in order, two ahead.
        for i in 10..15 {
            queue.push(i).unwrap();
        }
        let mut ahead = Lookahead::new();
        let mut seen = vec![ahead.advance(&queue, 2).unwrap()];
        assert_eq!((ahead.current, ahead.next), (Some(11), Some(12)));
        while let Some(i) = ahead.advance(&queue, 2) {
            seen.push(i);
            if i == 12 {
                queue.push(15).unwrap();
            }
        }
        assert_eq!(seen, [10, 11, 12, 13, 14, 15]);
        assert!(queue.is_empty());
    }

    #[test]
    fn lookahead_holds_no_more_than_the_room_it_is_given() {
        let queue = ArrayQueue::new(8);
        for i in 0..6 {
            queue.push(i).unwrap();
        }
        let mut ahead = Lookahead::new();
        // A batch of three: two may be ahead of its first record, one of its second, none
        // of its last (the batch is delivered with nothing held).
        assert_eq!(ahead.advance(&queue, 2), Some(0));
        assert_eq!(ahead.advance(&queue, 1), Some(1));
        assert_eq!(ahead.advance(&queue, 0), Some(2));
        assert_eq!((ahead.current, ahead.next, queue.len()), (None, None, 3));
        // The next batch starts from the queue, in order.
        assert_eq!(ahead.advance(&queue, 2), Some(3));
        assert_eq!((ahead.current, ahead.next), (Some(4), Some(5)));
        assert_eq!(ahead.advance(&queue, 0), Some(4));
        assert_eq!(ahead.advance(&queue, 0), Some(5));
        assert_eq!(ahead.advance(&queue, 2), None);
    }
}
