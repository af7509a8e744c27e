//! The index of the free-text filter `q`.
//!
//! `q` is a substring test, which no B-tree answers, and testing it row by row through SQLite
//! costs about half a microsecond a request: too slow for a week of traffic. So each ingest
//! transaction also writes, per hour it touches:
//!
//! - a block: the search texts of its requests, packed with their time, id and session, which
//!   a query reads whole and scans with a SIMD substring search;
//! - the hour's trigram Bloom filter: every 3-byte window of those texts. A substring's
//!   trigrams are all among its text's, so an hour whose filter lacks one cannot hold a match
//!   and its blocks are not read. A false positive only costs a scan, never a result.
//!
//! A rare term then reads the few hours it may be in; a common one stops after the first
//! hours, once the page is full.

use std::collections::hash_map::{Entry, HashMap};

use memchr::memmem;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::schema;
use crate::store::Result;

/// Bits per hour. 16 KiB keep false positives rare up to about 40,000 distinct trigrams an
/// hour, and a week of filters small enough to load for every query.
const BITS: usize = 1 << 17;

/// The two bit positions of a trigram.
fn positions(trigram: &[u8]) -> [usize; 2] {
    let value = u64::from(trigram[0]) | u64::from(trigram[1]) << 8 | u64::from(trigram[2]) << 16;
    let hash = value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    [(hash >> 47) as usize, (hash >> 30) as usize & (BITS - 1)]
}

fn set(bits: &mut [u8], text: &[u8]) {
    for trigram in text.windows(3) {
        for position in positions(trigram) {
            bits[position / 8] |= 1 << (position % 8);
        }
    }
}

/// Whether `bits` may hold every trigram of `needle`; always true for needles too short to
/// have one, and for a filter of another size (written by another version).
fn may_contain(bits: &[u8], needle: &[u8]) -> bool {
    bits.len() != BITS / 8
        || needle.windows(3).all(|trigram| {
            positions(trigram)
                .iter()
                .all(|&position| bits[position / 8] & (1 << (position % 8)) != 0)
        })
}

/// One request in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub ts: i64,
    pub id: i64,
    pub session: i64,
}

/// Block entry: ts, id, session (i64 LE each), text length (u32 LE), text.
const HEADER: usize = 8 + 8 + 8 + 4;

fn push_entry(block: &mut Vec<u8>, hit: Hit, text: &[u8]) {
    block.extend_from_slice(&hit.ts.to_le_bytes());
    block.extend_from_slice(&hit.id.to_le_bytes());
    block.extend_from_slice(&hit.session.to_le_bytes());
    block.extend_from_slice(&(text.len() as u32).to_le_bytes());
    block.extend_from_slice(text);
}

/// The entries of a block; stops at the first malformed one.
pub(super) fn entries(block: &[u8]) -> impl Iterator<Item = (Hit, &[u8])> {
    let mut rest = block;
    std::iter::from_fn(move || {
        let header = rest.get(..HEADER)?;
        let field = |at: usize| i64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes")) as usize;
        let text = rest.get(HEADER..HEADER + len)?;
        rest = &rest[HEADER + len..];
        Some((Hit { ts: field(0), id: field(8), session: field(16) }, text))
    })
}

/// The trigram filters of a batch's search texts, per hour, computed on the thread that hands
/// the batch over, so the database writer only merges them.
#[derive(Default)]
pub struct BatchFilters {
    hours: Vec<(i64, Vec<u8>)>,
}

/// Hours a batch gets filters for. A batch spans an hour or two; one spread over more (a
/// replayed spool, a broken clock) leaves the rest to the writer rather than take 16 KiB of
/// memory per hour.
const BATCH_FILTER_HOURS: usize = 8;

impl BatchFilters {
    /// Filters of the search texts of `records`: (hour, text) pairs.
    pub fn of<'t>(records: impl IntoIterator<Item = (i64, &'t str)>) -> Self {
        let mut filters = BatchFilters::default();
        for (hour, text) in records {
            let at = match filters.hours.iter().position(|(h, _)| *h == hour) {
                Some(at) => at,
                None if filters.hours.len() < BATCH_FILTER_HOURS => {
                    filters.hours.push((hour, vec![0; BITS / 8]));
                    filters.hours.len() - 1
                }
                None => continue,
            };
            set(&mut filters.hours[at].1, text.as_bytes());
        }
        filters
    }

    /// Whether the filter of `hour` already has the batch's texts of that hour.
    pub fn covers(&self, hour: i64) -> bool {
        self.hours.iter().any(|(h, _)| *h == hour)
    }
}

/// What a transaction adds to the index, written before it commits.
#[derive(Default)]
pub struct Pending {
    hours: HashMap<i64, (Vec<u8>, Vec<u8>)>,
}

impl Pending {
    fn hour(&mut self, tx: &Transaction<'_>, hour: i64) -> Result<&mut (Vec<u8>, Vec<u8>)> {
        Ok(match self.hours.entry(hour) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let stored: Option<Vec<u8>> = tx
                    .prepare_cached("SELECT bits FROM search_filters WHERE hour = ?")?
                    .query_row([hour], |row| row.get(0))
                    .optional()?;
                let bits = stored
                    .filter(|bits| bits.len() == BITS / 8)
                    .unwrap_or_else(|| vec![0; BITS / 8]);
                entry.insert((bits, Vec::new()))
            }
        })
    }

    /// Merges the filters computed for a batch.
    pub fn merge(&mut self, tx: &Transaction<'_>, filters: &BatchFilters) -> Result<()> {
        for (hour, bits) in &filters.hours {
            let (stored, _) = self.hour(tx, *hour)?;
            for (stored, new) in stored.iter_mut().zip(bits) {
                *stored |= new;
            }
        }
        Ok(())
    }

    /// Adds a stored request's search text to its hour; `filtered` when the hour's filter
    /// has it already (see [`BatchFilters`]).
    pub fn add(
        &mut self,
        tx: &Transaction<'_>,
        hour: i64,
        hit: Hit,
        text: &str,
        filtered: bool,
    ) -> Result<()> {
        let (bits, block) = self.hour(tx, hour)?;
        if !filtered {
            set(bits, text.as_bytes());
        }
        push_entry(block, hit, text.as_bytes());
        Ok(())
    }

    pub fn save(self, tx: &Transaction<'_>) -> Result<()> {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO search_filters (hour, bits) VALUES (?, ?)
             ON CONFLICT (hour) DO UPDATE SET bits = excluded.bits",
        )?;
        let mut insert =
            tx.prepare_cached("INSERT INTO search_blocks (hour, data) VALUES (?, ?)")?;
        for (hour, (bits, block)) in self.hours {
            upsert.execute(params![hour, bits])?;
            if !block.is_empty() {
                insert.execute(params![hour, block])?;
            }
        }
        Ok(())
    }
}

/// Rebuilds every block from the search texts in `requests` (filters stay valid: they only
/// depend on the texts).
pub fn rebuild_blocks(tx: &Transaction<'_>) -> Result<()> {
    /// Bytes a rebuilt block holds at most, about what an ingest transaction writes.
    const BLOCK_BYTES: usize = 4 << 20;

    tx.execute("DELETE FROM search_blocks", [])?;
    let mut insert = tx.prepare("INSERT INTO search_blocks (hour, data) VALUES (?, ?)")?;
    let mut select =
        tx.prepare("SELECT hour, ts, id, session, search FROM requests ORDER BY id")?;
    let mut rows = select.query([])?;
    let mut block = Vec::new();
    let mut block_hour = None;
    while let Some(row) = rows.next()? {
        let hour: i64 = row.get(0)?;
        if block_hour.is_some_and(|h| h != hour) || block.len() >= BLOCK_BYTES {
            insert.execute(params![block_hour, block])?;
            block.clear();
        }
        block_hour = Some(hour);
        let hit = Hit { ts: row.get(1)?, id: row.get(2)?, session: row.get(3)? };
        push_entry(&mut block, hit, row.get_ref(4)?.as_bytes().map_err(rusqlite::Error::from)?);
    }
    if !block.is_empty() {
        insert.execute(params![block_hour, block])?;
    }
    Ok(())
}

/// The hours between `low` and `high` (inclusive) that may hold requests whose search text
/// contains `needle` (lowercase), newest first.
fn candidate_hours(conn: &Connection, low: i64, high: i64, needle: &str) -> Result<Vec<i64>> {
    let mut select = conn.prepare_cached(
        "SELECT hour, bits FROM search_filters WHERE hour BETWEEN ? AND ? ORDER BY hour DESC",
    )?;
    let mut rows = select.query([low, high])?;
    let mut hours = Vec::new();
    while let Some(row) = rows.next()? {
        let bits = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        if may_contain(bits, needle.as_bytes()) {
            hours.push(row.get(0)?);
        }
    }
    Ok(hours)
}

/// The requests whose search text contains a needle, within a time range, read from the
/// index an hour at a time and kept: a list first walks hours newest first to find its
/// sessions, then counts each session's matching requests, mostly in the same hours.
///
/// Counting through the index rather than through a session's rows is what keeps `q` fast:
/// testing the text of every request of a long session (a bot's thousands) costs a row
/// lookup each, while the hours a session spans are scanned once for the whole page.
pub struct Scan {
    finder: memmem::Finder<'static>,
    from: i64,
    to: i64,
    /// Hours the filters do not rule out, newest first.
    candidates: Vec<i64>,
    hours: HashMap<i64, Vec<Hit>>,
}

impl Scan {
    /// A scan for `needle` (lowercase) over `from..=to`.
    pub fn new(conn: &Connection, needle: &str, from: i64, to: i64) -> Result<Self> {
        let candidates = candidate_hours(conn, schema::hour(from), schema::hour(to), needle)?;
        Ok(Scan {
            finder: memmem::Finder::new(needle.as_bytes()).into_owned(),
            from,
            to,
            candidates,
            hours: HashMap::new(),
        })
    }

    /// The hours that may hold a hit, newest first.
    pub fn candidates(&self) -> &[i64] {
        &self.candidates
    }

    /// The hits of one hour, newest first.
    pub fn hits(&mut self, conn: &Connection, hour: i64) -> Result<&[Hit]> {
        Ok(match self.hours.entry(hour) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let mut select =
                    conn.prepare_cached("SELECT data FROM search_blocks WHERE hour = ?")?;
                let mut rows = select.query([hour])?;
                let mut hits = Vec::new();
                let range = self.from..=self.to;
                while let Some(row) = rows.next()? {
                    let block = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                    hits.extend(
                        entries(block)
                            .filter(|(hit, text)| {
                                range.contains(&hit.ts) && self.finder.find(text).is_some()
                            })
                            .map(|(hit, _)| hit),
                    );
                }
                hits.sort_unstable_by(|a, b| b.cmp(a));
                entry.insert(hits)
            }
        })
    }

    /// The ids of the hits of `session`, whose requests lie within `first..=last`, in id
    /// (time) order.
    pub fn session_hits(
        &mut self,
        conn: &Connection,
        session: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<i64>> {
        let (low, high) = (schema::hour(first.max(self.from)), schema::hour(last.min(self.to)));
        let hours: Vec<i64> =
            self.candidates.iter().copied().filter(|hour| (low..=high).contains(hour)).collect();
        let mut ids = Vec::new();
        for hour in hours {
            ids.extend(
                self.hits(conn, hour)?
                    .iter()
                    .filter(|hit| hit.session == session)
                    .map(|hit| hit.id),
            );
        }
        ids.sort_unstable();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_find_every_substring_and_rule_out_most_others() {
        let mut bits = vec![0; BITS / 8];
        let texts = ["/api/v1/orders/1001\nalice\norder_id=ord-1001", "/login\nbob"];
        for text in texts {
            set(&mut bits, text.as_bytes());
        }
        for text in texts {
            for start in 0..text.len() {
                for end in start..=text.len() {
                    let needle = &text.as_bytes()[start..end];
                    assert!(may_contain(&bits, needle), "{:?}", &text[start..end]);
                }
            }
        }
        assert!(may_contain(&bits, b"zz"), "too short to tell");
        let absent = ["carol", "payments", "ord-2002", "/admin", "passwd"];
        assert!(absent.iter().all(|needle| !may_contain(&bits, needle.as_bytes())));
        assert!(may_contain(&[0; 16], b"carol"), "a filter of another size rules nothing out");
    }

    #[test]
    fn blocks_round_trip_and_stop_at_damage() {
        let mut block = Vec::new();
        let a = Hit { ts: -5, id: 1, session: 7 };
        let b = Hit { ts: 1_795_341_600_123, id: i64::MAX, session: 0 };
        push_entry(&mut block, a, b"/a");
        push_entry(&mut block, b, b"");
        let all: Vec<_> = entries(&block).collect();
        assert_eq!(all, [(a, &b"/a"[..]), (b, &b""[..])]);
        assert_eq!(entries(&block[..block.len() - 1]).count(), 1);
        assert_eq!(entries(&block[..HEADER + 1]).count(), 0);
    }
}
