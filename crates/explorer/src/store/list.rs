//! What a page of the sessions list asks for and how it is cut: the sort, the cursors in both
//! directions, and the page built from sessions fetched in cursor order.
//!
//! Every sort orders sessions by one integer (its key) and then by an internal number that
//! tells apart sessions with equal keys, so a position in the list is a pair `(key, number)`
//! and keyset pagination works the same for every sort and in both directions.

use std::cmp::Ordering;
use std::fmt;

use super::Filter;

/// What the list is sorted by.
///
/// Adding a sort: a variant here with its name in [`SortKey::ALL`] and [`SortKey::name`], its
/// value in [`SortKey::value`], and its column or expression in each store (`sort_column` in
/// the SQLite store, with an index, and `sort_expression` in the ClickHouse one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Time of the last (selected) request.
    #[default]
    Last,
    /// Time of the first (selected) request.
    First,
    /// Number of (selected) requests.
    Requests,
    /// Time from the first to the last (selected) request.
    Duration,
    /// Number of (selected) malicious requests.
    Attacks,
    /// The session's risk, 0 to 100.
    Risk,
}

impl SortKey {
    pub const ALL: [SortKey; 6] = [
        SortKey::Last,
        SortKey::First,
        SortKey::Requests,
        SortKey::Duration,
        SortKey::Attacks,
        SortKey::Risk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Last => "last",
            SortKey::First => "first",
            SortKey::Requests => "requests",
            SortKey::Duration => "duration",
            SortKey::Attacks => "attacks",
            SortKey::Risk => "risk",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|key| key.name() == text)
    }

    /// The key of a session from its aggregates.
    pub fn value(self, aggregates: &Aggregates) -> i64 {
        match self {
            SortKey::Last => aggregates.last_ts,
            SortKey::First => aggregates.first_ts,
            SortKey::Requests => aggregates.requests as i64,
            SortKey::Duration => aggregates.last_ts - aggregates.first_ts,
            SortKey::Attacks => aggregates.attacks as i64,
            SortKey::Risk => i64::from(aggregates.risk),
        }
    }
}

/// What the sort keys are computed from: a session's counts over its (selected) requests, and
/// its risk, which is the whole session's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aggregates {
    pub first_ts: i64,
    pub last_ts: i64,
    pub requests: u64,
    pub attacks: u64,
    pub risk: u8,
}

impl Aggregates {
    /// Counts one request.
    pub fn add(&mut self, ts: i64, malicious: bool) {
        if self.requests == 0 {
            (self.first_ts, self.last_ts) = (ts, ts);
        } else {
            self.first_ts = self.first_ts.min(ts);
            self.last_ts = self.last_ts.max(ts);
        }
        self.requests += 1;
        self.attacks += u64::from(malicious);
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "desc" => Some(Order::Desc),
            "asc" => Some(Order::Asc),
            _ => None,
        }
    }

    /// `ASC` or `DESC`.
    pub fn sql(self) -> &'static str {
        match self {
            Order::Desc => "DESC",
            Order::Asc => "ASC",
        }
    }

    pub fn reverse(self) -> Self {
        match self {
            Order::Desc => Order::Asc,
            Order::Asc => Order::Desc,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub order: Order,
}

/// A session's position in a sorted list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey {
    pub value: i64,
    /// The store's internal number of the session.
    pub id: i64,
}

/// Which side of a position a page lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The page after the position (`next_cursor`).
    After,
    /// The page before it (`prev_cursor`).
    Before,
}

/// Where a page of the list starts: `after` or `before` a session's position.
///
/// Its text is `VALUE.ID` for the page after the position, `pVALUE.ID` for the page before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub direction: Direction,
    pub key: SessionKey,
}

impl ListCursor {
    pub fn parse(text: &str) -> Option<Self> {
        let (direction, rest) = match text.strip_prefix('p') {
            Some(rest) => (Direction::Before, rest),
            None => (Direction::After, text),
        };
        let (value, id) = rest.split_once('.')?;
        Some(ListCursor {
            direction,
            key: SessionKey { value: value.parse().ok()?, id: id.parse().ok()? },
        })
    }

    /// The order to fetch in: the list's order for the page after a position, the reverse
    /// (nearest first) for the page before it.
    pub fn fetch_order(cursor: Option<Self>, order: Order) -> Order {
        match cursor {
            Some(ListCursor { direction: Direction::Before, .. }) => order.reverse(),
            _ => order,
        }
    }

    /// Whether `key` lies beyond this cursor in the direction fetched (see
    /// [`ListCursor::fetch_order`]).
    pub fn admits(self, order: Order, key: SessionKey) -> bool {
        let wanted = match ListCursor::fetch_order(Some(self), order) {
            Order::Desc => Ordering::Less,
            Order::Asc => Ordering::Greater,
        };
        key.cmp(&self.key) == wanted
    }

    /// `<` or `>`: how a row's `(key, id)` compares to the cursor's when it lies beyond it.
    pub fn sql_comparison(self, order: Order) -> &'static str {
        match ListCursor::fetch_order(Some(self), order) {
            Order::Desc => "<",
            Order::Asc => ">",
        }
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.direction == Direction::Before {
            f.write_str("p")?;
        }
        write!(f, "{}.{}", self.key.value, self.key.id)
    }
}

/// A request for one page of the sessions list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Filter,
    pub sort: Sort,
    pub cursor: Option<ListCursor>,
    pub limit: usize,
}

impl ListQuery {
    /// The first page of `filter` in the default order.
    pub fn new(filter: Filter, limit: usize) -> Self {
        ListQuery { filter, limit, ..ListQuery::default() }
    }

    /// The order rows are fetched in (see [`ListCursor::fetch_order`]).
    pub fn fetch_order(&self) -> Order {
        ListCursor::fetch_order(self.cursor, self.sort.order)
    }

    /// Sorts `items` in fetch order and keeps those beyond the cursor, up to one more than a
    /// page; for stores that rank sessions themselves.
    pub fn fetch<T>(&self, mut items: Vec<(SessionKey, T)>) -> Vec<(SessionKey, T)> {
        let order = self.fetch_order();
        if let Some(cursor) = self.cursor {
            items.retain(|(key, _)| cursor.admits(self.sort.order, *key));
        }
        let want = self.limit + 1;
        let compare = |a: &(SessionKey, T), b: &(SessionKey, T)| match order {
            Order::Asc => a.0.cmp(&b.0),
            Order::Desc => b.0.cmp(&a.0),
        };
        if items.len() > want {
            items.select_nth_unstable_by(want - 1, compare);
            items.truncate(want);
        }
        items.sort_unstable_by(compare);
        items
    }

    /// The page from up to `limit + 1` items fetched in fetch order, with the cursors around
    /// it.
    pub fn window<T>(&self, mut fetched: Vec<(SessionKey, T)>) -> Window<T> {
        let more = fetched.len() > self.limit;
        fetched.truncate(self.limit);
        let backwards =
            matches!(self.cursor, Some(ListCursor { direction: Direction::Before, .. }));
        if backwards {
            fetched.reverse();
        }
        let cursor = |direction, item: Option<&(SessionKey, T)>| {
            item.map(|(key, _)| ListCursor { direction, key: *key })
        };
        // Paging forward, there is something before the page when it was reached by a cursor;
        // paging back, something after it.
        let (next, prev) = if backwards {
            (
                cursor(Direction::After, fetched.last()),
                more.then(|| cursor(Direction::Before, fetched.first())).flatten(),
            )
        } else {
            (
                more.then(|| cursor(Direction::After, fetched.last())).flatten(),
                self.cursor.and_then(|_| cursor(Direction::Before, fetched.first())),
            )
        };
        Window { items: fetched.into_iter().map(|(_, item)| item).collect(), next, prev }
    }
}

/// One page of items in list order, and the cursors of the pages around it.
#[derive(Clone, Debug)]
pub struct Window<T> {
    pub items: Vec<T>,
    pub next: Option<ListCursor>,
    pub prev: Option<ListCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(values: &[(i64, i64)]) -> Vec<(SessionKey, i64)> {
        values.iter().map(|&(value, id)| (SessionKey { value, id }, id)).collect()
    }

    /// Walks every page forward, then back from the last one, with `fetch` doing the store's
    /// part.
    fn walk(all: &[(i64, i64)], order: Order, limit: usize) {
        let mut query =
            ListQuery { sort: Sort { key: SortKey::Requests, order }, limit, ..Default::default() };
        let mut expected: Vec<i64> = {
            let mut sorted = keys(all);
            sorted.sort_by_key(|(key, _)| *key);
            if order == Order::Desc {
                sorted.reverse();
            }
            sorted.into_iter().map(|(_, id)| id).collect()
        };
        let mut pages = Vec::new();
        loop {
            let window = query.window(query.fetch(keys(all)));
            assert!(window.items.len() <= limit);
            assert_eq!(window.prev.is_some(), !pages.is_empty(), "prev only after the first page");
            pages.push(window.items.clone());
            match window.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
        let forward: Vec<i64> = pages.concat();
        assert_eq!(forward, expected);
        // And back: each page again, in the same order.
        let mut back = Vec::new();
        let mut window = query.window(query.fetch(keys(all)));
        while let Some(prev) = window.prev {
            query.cursor = Some(prev);
            window = query.window(query.fetch(keys(all)));
            back.push(window.items.clone());
        }
        back.reverse();
        pages.pop();
        assert_eq!(back, pages);
        expected.clear();
    }

    #[test]
    fn pages_cover_the_list_once_both_ways() {
        let all = [(5, 1), (3, 2), (5, 3), (1, 4), (3, 5), (9, 6), (5, 7), (0, 8)];
        for order in [Order::Desc, Order::Asc] {
            for limit in 1..=9 {
                walk(&all, order, limit);
            }
        }
    }

    #[test]
    fn cursors_round_trip_through_their_text() {
        for cursor in [
            ListCursor { direction: Direction::After, key: SessionKey { value: -5, id: 7 } },
            ListCursor {
                direction: Direction::Before,
                key: SessionKey { value: 12, id: i64::MAX },
            },
        ] {
            assert_eq!(ListCursor::parse(&cursor.to_string()), Some(cursor));
        }
        for bad in ["", "p", "1", "x.1", "1.x", "q1.2", "1.2.3"] {
            assert_eq!(ListCursor::parse(bad), None, "{bad}");
        }
    }
}
