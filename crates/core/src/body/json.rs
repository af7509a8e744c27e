//! JSON value extraction in one pass.
//!
//! The walker follows only the containers some pointer still reaches; everything else is skipped
//! by matching brackets and strings, without decoding, at any depth: the open brackets of a
//! skipped subtree cost one bit each, so a deep prefix cannot hide the values after it. When
//! the document ends early or stops being JSON, the walk stops and whatever it decided before
//! stands: that is how a body cut at the limit still yields its complete values.
//!
//! It is written here rather than taken from a JSON library because none offers what the
//! request path's exporter needs together: values borrowed from the body and only the pointed
//! ones decoded, no recursion and no depth limit, a stop as soon as every pointer is decided
//! (the response filter asks that of a prefix), and a cut body told apart from a whole one, so
//! that a number or literal at the cut is not taken as complete. serde_json and its streaming
//! deserializer recurse, refuse a document past 128 levels and treat an early end as an error
//! of the whole document.

use core::ops::Range;

use memchr::{memchr, memchr2};

use super::pointer::{array_index, Pointer};
use super::Extent;

/// The value of each pointer: `None` when absent, null, cut off or unreadable.
pub fn extract(body: &[u8], extent: Extent, pointers: &[&Pointer]) -> Vec<Option<String>> {
    let paths: Vec<&[String]> = pointers.iter().map(|pointer| pointer.tokens()).collect();
    lookup(body, extent, &paths).into_iter().map(Lookup::into_text).collect()
}

/// Whether `prefix`, the start of a document, decides every pointer: its value or its
/// absence is known, so no continuation of the document changes what [`extract`] finds.
/// The walk stops as soon as that is so, which for pointers near the start is a few bytes
/// into a large document.
pub fn decides_all(prefix: &[u8], pointers: &[&Pointer]) -> bool {
    let paths: Vec<&[String]> = pointers.iter().map(|pointer| pointer.tokens()).collect();
    lookup(prefix, Extent::Cut, &paths).iter().all(|found| !matches!(found, Lookup::Undecided))
}

/// What one walk learned about one path.
#[derive(Clone, Debug)]
pub(crate) enum Lookup {
    /// The document ended, or stopped being JSON, before the path was decided.
    Undecided,
    /// The path does not exist, or holds null.
    Missing,
    /// A string, unescaped.
    String(String),
    /// A number or boolean as written, or an object or array as compact JSON.
    Other(String),
}

impl Lookup {
    pub(crate) fn into_text(self) -> Option<String> {
        match self {
            Lookup::String(text) | Lookup::Other(text) => Some(text),
            Lookup::Undecided | Lookup::Missing => None,
        }
    }
}

/// Resolves every path (pointer tokens) in one walk over `body`.
pub(crate) fn lookup(body: &[u8], extent: Extent, paths: &[&[String]]) -> Vec<Lookup> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mut walker = Walker {
        cur: Cursor { buf: body, pos: 0, extent },
        paths,
        found: vec![Lookup::Undecided; paths.len()],
        undecided: paths.len(),
        live: Vec::new(),
        frames: Vec::new(),
        key: Vec::new(),
    };
    // An error only ends the walk early; the paths it left undecided have no value.
    let _ = walker.run();
    walker.found
}

/// The document cannot be read further: it ended, or is not JSON.
#[derive(Debug)]
struct Stop;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

impl Container {
    fn opened_by(byte: u8) -> Option<Container> {
        match byte {
            b'{' => Some(Container::Object),
            b'[' => Some(Container::Array),
            _ => None,
        }
    }

    fn close(self) -> u8 {
        match self {
            Container::Object => b'}',
            Container::Array => b']',
        }
    }
}

/// A container on the path of at least one pointer.
#[derive(Clone, Copy)]
struct Frame {
    kind: Container,
    /// Pointer tokens consumed to reach this container.
    depth: usize,
    /// Its segment of `Walker::live`: the paths that lead here.
    live_start: usize,
    live_end: usize,
    /// Offset of the opening bracket, to copy the container when a path ends on it.
    start: usize,
    /// Members read so far; in an array, the index of the next element.
    members: usize,
}

struct Walker<'a, 'p> {
    cur: Cursor<'a>,
    paths: &'p [&'p [String]],
    found: Vec<Lookup>,
    undecided: usize,
    /// Indexes into `paths`, one segment per frame plus one for the member being read.
    live: Vec<usize>,
    frames: Vec<Frame>,
    /// Reused to unescape object keys that contain escapes.
    key: Vec<u8>,
}

impl Walker<'_, '_> {
    fn run(&mut self) -> Result<(), Stop> {
        self.cur.skip_bom();
        self.cur.skip_ws();
        self.live.extend(0..self.paths.len());
        self.value(0, 0)?;

        while let Some(&frame) = self.frames.last() {
            if self.undecided == 0 {
                return Ok(());
            }
            if !self.wants_members(&frame) {
                self.cur.skip_nested(frame.kind)?;
                self.close()?;
                continue;
            }

            self.cur.skip_ws();
            if self.cur.peek() == Some(frame.kind.close()) {
                self.cur.pos += 1;
                self.close()?;
                continue;
            }
            if frame.members > 0 {
                self.cur.expect(b',')?;
                self.cur.skip_ws();
            }
            if let Some(top) = self.frames.last_mut() {
                top.members += 1;
            }
            self.member(&frame)?;
        }
        Ok(())
    }

    /// Reads the next member of `frame`, following the paths that continue through it.
    fn member(&mut self, frame: &Frame) -> Result<(), Stop> {
        let segment = self.live.len();
        let depth = frame.depth;
        match frame.kind {
            Container::Object => {
                let name = self.cur.string()?;
                self.cur.skip_ws();
                self.cur.expect(b':')?;
                self.cur.skip_ws();
                let key = if name.escaped {
                    self.key.clear();
                    unescape(name.raw, &mut self.key);
                    &self.key[..]
                } else {
                    name.raw
                };
                for k in frame.live_start..frame.live_end {
                    let i = self.live[k];
                    let path = self.paths[i];
                    if self.is_undecided(i) && path.len() > depth && path[depth].as_bytes() == key {
                        self.live.push(i);
                    }
                }
            }
            Container::Array => {
                for k in frame.live_start..frame.live_end {
                    let i = self.live[k];
                    let path = self.paths[i];
                    if self.is_undecided(i)
                        && path.len() > depth
                        && array_index(&path[depth]) == Some(frame.members)
                    {
                        self.live.push(i);
                    }
                }
            }
        }

        if self.live.len() == segment {
            self.cur.skip_value()
        } else {
            self.value(depth + 1, segment)
        }
    }

    /// Reads the value at the cursor for the paths in `live[segment..]`, all of which lead to
    /// it after `depth` tokens: enters it when some path goes deeper, else settles them all.
    fn value(&mut self, depth: usize, segment: usize) -> Result<(), Stop> {
        let end = self.live.len();
        let byte = self.cur.peek().ok_or(Stop)?;
        let goes_deeper = self.live[segment..end].iter().any(|&i| self.paths[i].len() > depth);

        // Frames are only pushed on the way of some pointer, so they are no more than the
        // longest pointer has tokens.
        if let (Some(kind), true) = (Container::opened_by(byte), goes_deeper) {
            self.frames.push(Frame {
                kind,
                depth,
                live_start: segment,
                live_end: end,
                start: self.cur.pos,
                members: 0,
            });
            self.cur.pos += 1;
            if kind == Container::Array {
                for k in segment..end {
                    let i = self.live[k];
                    let path = self.paths[i];
                    if path.len() > depth && array_index(&path[depth]).is_none() {
                        self.settle(i, Lookup::Missing);
                    }
                }
            }
            return Ok(());
        }

        let ends_here = self.live[segment..end].iter().any(|&i| self.paths[i].len() == depth);
        let value = if ends_here {
            self.cur.read_value()?
        } else {
            self.cur.skip_value()?;
            Lookup::Missing
        };
        for k in segment..end {
            let i = self.live[k];
            let found = if self.paths[i].len() == depth { value.clone() } else { Lookup::Missing };
            self.settle(i, found);
        }
        self.live.truncate(segment);
        Ok(())
    }

    /// Whether a path through `frame` still needs one of its members.
    fn wants_members(&self, frame: &Frame) -> bool {
        self.live[frame.live_start..frame.live_end]
            .iter()
            .any(|&i| self.is_undecided(i) && self.paths[i].len() > frame.depth)
    }

    /// Called with the cursor just past the top frame's closing bracket.
    fn close(&mut self) -> Result<(), Stop> {
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        let segment = frame.live_start..frame.live_end;
        let ends_here = self.live[segment.clone()]
            .iter()
            .any(|&i| self.is_undecided(i) && self.paths[i].len() == frame.depth);
        let value = if ends_here {
            // The span ends with the closing bracket, so nothing in it reaches its end.
            let span = &self.cur.buf[frame.start..self.cur.pos];
            let mut span = Cursor { buf: span, pos: 0, extent: Extent::Whole };
            Lookup::Other(span.compact()?)
        } else {
            Lookup::Missing
        };
        for k in segment {
            let i = self.live[k];
            let found =
                if self.paths[i].len() == frame.depth { value.clone() } else { Lookup::Missing };
            self.settle(i, found);
        }
        self.live.truncate(frame.live_start);
        Ok(())
    }

    fn is_undecided(&self, i: usize) -> bool {
        matches!(self.found[i], Lookup::Undecided)
    }

    fn settle(&mut self, i: usize, found: Lookup) {
        if self.is_undecided(i) {
            self.found[i] = found;
            self.undecided -= 1;
        }
    }
}

/// Where one occurrence of a pointed value is, for masking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Index of the path.
    pub path: usize,
    /// A string's bytes between its quotes, or any other value's text.
    pub span: Range<usize>,
    pub string: bool,
    /// The value did not end before the end of the body, or stopped being JSON: the span runs
    /// to the end.
    pub cut: bool,
}

/// Every occurrence of the values at `paths`, duplicate keys included (extraction takes only
/// the first, a masker hides them all). Iterative like [`lookup`], and as bounded: frames only
/// on the way of some path, everything else skipped.
pub(crate) fn locate(body: &[u8], extent: Extent, paths: &[&[String]]) -> Vec<Found> {
    let mut locator = Locator {
        cur: Cursor { buf: body, pos: 0, extent },
        paths,
        live: Vec::new(),
        frames: Vec::new(),
        found: Vec::new(),
        key: Vec::new(),
    };
    if !paths.is_empty() && locator.run().is_err() {
        // Containers a path ends on that were still open run to the end.
        for frame in &locator.frames {
            for &i in &locator.live[frame.live_start..frame.live_end] {
                if paths[i].len() == frame.depth {
                    let span = frame.start..body.len();
                    locator.found.push(Found { path: i, span, string: false, cut: true });
                }
            }
        }
    }
    locator.found
}

struct Locator<'a, 'p> {
    cur: Cursor<'a>,
    paths: &'p [&'p [String]],
    live: Vec<usize>,
    frames: Vec<Frame>,
    found: Vec<Found>,
    key: Vec<u8>,
}

impl Locator<'_, '_> {
    fn run(&mut self) -> Result<(), Stop> {
        self.cur.skip_bom();
        self.cur.skip_ws();
        self.live.extend(0..self.paths.len());
        self.value(0, 0)?;
        while let Some(&frame) = self.frames.last() {
            self.cur.skip_ws();
            if self.cur.peek() == Some(frame.kind.close()) {
                self.cur.pos += 1;
                self.frames.pop();
                for k in frame.live_start..frame.live_end {
                    let i = self.live[k];
                    if self.paths[i].len() == frame.depth {
                        let span = frame.start..self.cur.pos;
                        self.found.push(Found { path: i, span, string: false, cut: false });
                    }
                }
                self.live.truncate(frame.live_start);
                continue;
            }
            if frame.members > 0 {
                self.cur.expect(b',')?;
                self.cur.skip_ws();
            }
            if let Some(top) = self.frames.last_mut() {
                top.members += 1;
            }
            let segment = self.live.len();
            let depth = frame.depth;
            if frame.kind == Container::Object {
                let name = self.cur.string()?;
                self.cur.skip_ws();
                self.cur.expect(b':')?;
                self.cur.skip_ws();
                let key = if name.escaped {
                    self.key.clear();
                    unescape(name.raw, &mut self.key);
                    &self.key[..]
                } else {
                    name.raw
                };
                for k in frame.live_start..frame.live_end {
                    let i = self.live[k];
                    let path = self.paths[i];
                    if path.len() > depth && path[depth].as_bytes() == key {
                        self.live.push(i);
                    }
                }
            } else {
                for k in frame.live_start..frame.live_end {
                    let i = self.live[k];
                    let path = self.paths[i];
                    if path.len() > depth && array_index(&path[depth]) == Some(frame.members) {
                        self.live.push(i);
                    }
                }
            }
            if self.live.len() == segment {
                self.cur.skip_value()?;
            } else {
                self.value(depth + 1, segment)?;
            }
        }
        Ok(())
    }

    /// The value at the cursor for the paths in `live[segment..]`, reached after `depth` tokens.
    fn value(&mut self, depth: usize, segment: usize) -> Result<(), Stop> {
        let end = self.live.len();
        let start = self.cur.pos;
        let byte = self.cur.peek().ok_or(Stop)?;
        let goes_deeper = self.live[segment..end].iter().any(|&i| self.paths[i].len() > depth);
        if let (Some(kind), true) = (Container::opened_by(byte), goes_deeper) {
            self.frames.push(Frame {
                kind,
                depth,
                live_start: segment,
                live_end: end,
                start,
                members: 0,
            });
            self.cur.pos += 1;
            return Ok(());
        }
        let ends_here = self.live[segment..end].iter().any(|&i| self.paths[i].len() == depth);
        let read = if !ends_here {
            self.cur.skip_value()
        } else {
            let len = self.cur.buf.len();
            let (span, string, read) = if byte == b'"' {
                match self.cur.string() {
                    Ok(_) => (start + 1..self.cur.pos - 1, true, Ok(())),
                    Err(stop) => (start + 1..len, true, Err(stop)),
                }
            } else {
                match self.cur.skip_value() {
                    Ok(()) => (start..self.cur.pos, false, Ok(())),
                    Err(stop) => (start..len, false, Err(stop)),
                }
            };
            for k in segment..end {
                let i = self.live[k];
                if self.paths[i].len() == depth {
                    let (span, cut) = (span.clone(), read.is_err());
                    self.found.push(Found { path: i, span, string, cut });
                }
            }
            read
        };
        self.live.truncate(segment);
        read
    }
}

/// The value of a located span as extraction gives it: a string unescaped, any other value
/// compacted. `None` for a span that was cut.
pub(crate) fn located_value(body: &[u8], found: &Found) -> Option<String> {
    let raw = &body[found.span.clone()];
    match (found.cut, found.string) {
        (true, _) => None,
        (false, true) => {
            Some(decode_string(RawString { raw, escaped: memchr(b'\\', raw).is_some() }))
        }
        (false, false) => {
            let mut cursor = Cursor { buf: raw, pos: 0, extent: Extent::Whole };
            cursor.read_value().ok().and_then(Lookup::into_text)
        }
    }
}

/// The bytes that matter when skipping a container: quotes and brackets.
const STRUCTURAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'"' as usize] = true;
    table[b'{' as usize] = true;
    table[b'}' as usize] = true;
    table[b'[' as usize] = true;
    table[b']' as usize] = true;
    table
};

/// A string token: its bytes between the quotes, still escaped.
struct RawString<'a> {
    raw: &'a [u8],
    escaped: bool,
}

/// Open containers inside a value being skipped or copied, one bit each (1 for an object): the
/// innermost 128 in a register, deeper ones spilled to the heap. Each level is one byte of
/// input, so the spill is at most an eighth of the body, which the body limit bounds.
#[derive(Default)]
struct Levels {
    open: u128,
    depth: usize,
    spill: Vec<u64>,
}

impl Levels {
    const HELD: usize = u128::BITS as usize;

    fn push(&mut self, kind: Container) {
        if self.depth >= Self::HELD {
            let spilled = self.depth - Self::HELD;
            if spilled % 64 == 0 {
                self.spill.push(0);
            }
            let outermost = (self.open >> (Self::HELD - 1)) as u64;
            if let Some(word) = self.spill.last_mut() {
                *word |= outermost << (spilled % 64);
            }
        }
        self.open = (self.open << 1) | u128::from(kind == Container::Object);
        self.depth += 1;
    }

    /// Closes the innermost container with `byte`, which must be its closing bracket.
    fn pop(&mut self, byte: u8) -> Result<(), Stop> {
        if self.top().map(Container::close) != Some(byte) {
            return Err(Stop);
        }
        self.open >>= 1;
        self.depth -= 1;
        if self.depth >= Self::HELD {
            let spilled = self.depth - Self::HELD;
            let word =
                if spilled % 64 == 0 { self.spill.pop() } else { self.spill.last().copied() };
            let outermost = word.map_or(0, |word| (word >> (spilled % 64)) & 1);
            if spilled % 64 != 0 {
                if let Some(word) = self.spill.last_mut() {
                    *word &= !(1 << (spilled % 64));
                }
            }
            self.open |= u128::from(outermost) << (Self::HELD - 1);
        }
        Ok(())
    }

    fn top(&self) -> Option<Container> {
        match (self.depth, self.open & 1) {
            (0, _) => None,
            (_, 1) => Some(Container::Object),
            _ => Some(Container::Array),
        }
    }
}

#[derive(Clone, Copy)]
enum Expect {
    Value,
    ValueOrClose,
    Key,
    KeyOrClose,
    Colon,
    CommaOrClose,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    extent: Extent,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn skip_bom(&mut self) {
        if self.buf[self.pos..].starts_with(b"\xEF\xBB\xBF") {
            self.pos += 3;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Stop> {
        if self.peek() != Some(byte) {
            return Err(Stop);
        }
        self.pos += 1;
        Ok(())
    }

    /// Whether the byte after a number or literal ends it. The end of the input does only
    /// when it is the end of the body: at a cut, `12` may go on as `123` and `true` as
    /// `truex`, which would be no value at all.
    fn at_delimiter(&self) -> bool {
        match self.peek() {
            Some(byte) => matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}'),
            None => self.extent == Extent::Whole,
        }
    }

    /// Reads the value at the cursor: strings unescaped, containers compacted, null missing.
    fn read_value(&mut self) -> Result<Lookup, Stop> {
        Ok(match self.peek().ok_or(Stop)? {
            b'"' => Lookup::String(decode_string(self.string()?)),
            b'{' | b'[' => Lookup::Other(self.compact()?),
            b't' | b'f' | b'n' => match self.literal()? {
                "null" => Lookup::Missing,
                word => Lookup::Other(word.to_owned()),
            },
            b'-' | b'0'..=b'9' => {
                Lookup::Other(String::from_utf8_lossy(self.number()?).into_owned())
            }
            _ => return Err(Stop),
        })
    }

    fn skip_value(&mut self) -> Result<(), Stop> {
        let byte = self.peek().ok_or(Stop)?;
        if let Some(kind) = Container::opened_by(byte) {
            self.pos += 1;
            return self.skip_nested(kind);
        }
        match byte {
            b'"' => self.string().map(drop),
            b't' | b'f' | b'n' => self.literal().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => Err(Stop),
        }
    }

    /// Skips to just past the end of the open container `kind`, matching brackets and strings
    /// only: the fast path for subtrees no pointer reaches.
    fn skip_nested(&mut self, kind: Container) -> Result<(), Stop> {
        let mut levels = Levels::default();
        levels.push(kind);
        loop {
            let rest = &self.buf[self.pos..];
            let at = rest.iter().position(|&byte| STRUCTURAL[usize::from(byte)]).ok_or(Stop)?;
            let byte = rest[at];
            self.pos += at + 1;
            match byte {
                b'"' => {
                    self.string_rest()?;
                }
                b'{' => levels.push(Container::Object),
                b'[' => levels.push(Container::Array),
                b'}' | b']' => {
                    levels.pop(byte)?;
                    if levels.depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }

    fn string(&mut self) -> Result<RawString<'a>, Stop> {
        self.expect(b'"')?;
        let start = self.pos;
        let escaped = self.string_rest()?;
        Ok(RawString { raw: &self.buf[start..self.pos - 1], escaped })
    }

    /// Moves past the closing quote of a string whose opening quote was consumed, checking
    /// escapes; returns whether there were any.
    fn string_rest(&mut self) -> Result<bool, Stop> {
        let mut escaped = false;
        loop {
            let rest = self.buf.get(self.pos..).ok_or(Stop)?;
            let at = find_quote_or_backslash(rest).ok_or(Stop)?;
            self.pos += at + 1;
            if rest[at] == b'"' {
                return Ok(escaped);
            }
            escaped = true;
            self.pos += match rest.get(at + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 1,
                Some(b'u') if rest.get(at + 2..).and_then(hex4).is_some() => 5,
                _ => return Err(Stop),
            };
        }
    }

    fn number(&mut self) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Stop),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits1()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits1()?;
        }
        if !self.at_delimiter() {
            return Err(Stop);
        }
        Ok(&self.buf[start..self.pos])
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn digits1(&mut self) -> Result<(), Stop> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            return Err(Stop);
        }
        Ok(())
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self) -> Result<&'static str, Stop> {
        let rest = &self.buf[self.pos..];
        let word = ["true", "false", "null"]
            .into_iter()
            .find(|word| rest.starts_with(word.as_bytes()))
            .ok_or(Stop)?;
        self.pos += word.len();
        if !self.at_delimiter() {
            return Err(Stop);
        }
        Ok(word)
    }

    /// Copies the value at the cursor without whitespace, checking that it is JSON; strings
    /// are kept as written, invalid UTF-8 in them replaced.
    fn compact(&mut self) -> Result<String, Stop> {
        let mut out = Vec::new();
        let mut levels = Levels::default();
        let mut expect = Expect::Value;
        loop {
            self.skip_ws();
            let start = self.pos;
            let byte = self.peek().ok_or(Stop)?;
            match (expect, byte) {
                (Expect::Value | Expect::ValueOrClose, b'{' | b'[') => {
                    let kind = if byte == b'{' { Container::Object } else { Container::Array };
                    levels.push(kind);
                    self.pos += 1;
                    out.push(byte);
                    expect = if kind == Container::Object {
                        Expect::KeyOrClose
                    } else {
                        Expect::ValueOrClose
                    };
                    continue;
                }
                (Expect::Value | Expect::ValueOrClose, b'"') => {
                    self.string()?;
                }
                (Expect::Value | Expect::ValueOrClose, b't' | b'f' | b'n') => {
                    self.literal()?;
                }
                (Expect::Value | Expect::ValueOrClose, b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                (Expect::Key | Expect::KeyOrClose, b'"') => {
                    self.string()?;
                    out.extend_from_slice(&self.buf[start..self.pos]);
                    expect = Expect::Colon;
                    continue;
                }
                (Expect::Colon, b':') | (Expect::CommaOrClose, b',') => {
                    self.pos += 1;
                    out.push(byte);
                    expect = match (byte, levels.top()) {
                        (b',', Some(Container::Object)) => Expect::Key,
                        _ => Expect::Value,
                    };
                    continue;
                }
                (Expect::ValueOrClose | Expect::KeyOrClose | Expect::CommaOrClose, b'}' | b']') => {
                    levels.pop(byte)?;
                    self.pos += 1;
                }
                _ => return Err(Stop),
            }
            out.extend_from_slice(&self.buf[start..self.pos]);
            if levels.depth == 0 {
                return Ok(utf8_lossy(out));
            }
            expect = Expect::CommaOrClose;
        }
    }
}

/// Where a string's content stops: at its closing quote or an escape.
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    // Most strings in API bodies are short keys and values, for which a plain loop beats the
    // setup of a vectorised search; long ones (tokens, blobs) still get the latter.
    const SHORT: usize = 16;
    let head = &bytes[..bytes.len().min(SHORT)];
    match head.iter().position(|&byte| byte == b'"' || byte == b'\\') {
        Some(at) => Some(at),
        None => memchr2(b'"', b'\\', &bytes[head.len()..]).map(|at| head.len() + at),
    }
}

/// The four hex digits of a `\u` escape.
fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.get(..4)?;
    digits.iter().try_fold(0, |code, &digit| Some((code << 4) | char::from(digit).to_digit(16)?))
}

fn decode_string(string: RawString<'_>) -> String {
    if !string.escaped {
        return String::from_utf8_lossy(string.raw).into_owned();
    }
    let mut out = Vec::with_capacity(string.raw.len());
    unescape(string.raw, &mut out);
    utf8_lossy(out)
}

/// Appends the bytes a string's escapes stand for. Surrogate pairs are joined; a lone
/// surrogate becomes U+FFFD, as it has no UTF-8 form.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(at) = memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + at]);
        i += at + 1;
        let Some(&escape) = raw.get(i) else {
            break;
        };
        i += 1;
        let byte = match escape {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let Some(unit) = raw.get(i..).and_then(hex4) else {
                    break;
                };
                i += 4;
                let low = match raw.get(i..) {
                    Some([b'\\', b'u', rest @ ..]) => hex4(rest),
                    _ => None,
                };
                let code = match (unit, low) {
                    (0xd800..=0xdbff, Some(low @ 0xdc00..=0xdfff)) => {
                        i += 6;
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    _ => unit,
                };
                let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            // `"`, `\` and `/` stand for themselves.
            other => other,
        };
        out.push(byte);
    }
    out.extend_from_slice(&raw[i..]);
}

fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn extract_as(body: &[u8], extent: Extent, pointers: &[&str]) -> Vec<Option<String>> {
        let pointers: Vec<Pointer> = pointers.iter().map(|p| Pointer::parse(p).unwrap()).collect();
        extract(body, extent, &pointers.iter().collect::<Vec<_>>())
    }

    fn extract_all(body: &[u8], pointers: &[&str]) -> Vec<Option<String>> {
        extract_as(body, Extent::Whole, pointers)
    }

    fn extract_one(body: impl AsRef<[u8]>, pointer: &str) -> Option<String> {
        extract_all(body.as_ref(), &[pointer]).remove(0)
    }

    /// From a body cut at the limit.
    fn extract_cut(body: impl AsRef<[u8]>, pointer: &str) -> Option<String> {
        extract_as(body.as_ref(), Extent::Cut, &[pointer]).remove(0)
    }

    #[test]
    fn scalars_are_their_text_and_strings_unquoted() {
        let body = r#"{"s": "alice", "i": -12, "f": 1.5e-3, "E": 1.0E+2, "z": -0, "t": true,
                      "no": false, "nil": null, "big": 123456789012345678901234567890.5e400}"#;
        assert_eq!(extract_one(body, "/s").as_deref(), Some("alice"));
        assert_eq!(extract_one(body, "/i").as_deref(), Some("-12"));
        assert_eq!(extract_one(body, "/f").as_deref(), Some("1.5e-3"));
        assert_eq!(extract_one(body, "/E").as_deref(), Some("1.0E+2"));
        assert_eq!(extract_one(body, "/z").as_deref(), Some("-0"));
        assert_eq!(extract_one(body, "/t").as_deref(), Some("true"));
        assert_eq!(extract_one(body, "/no").as_deref(), Some("false"));
        assert_eq!(extract_one(body, "/nil"), None);
        assert_eq!(
            extract_one(body, "/big").as_deref(),
            Some("123456789012345678901234567890.5e400")
        );
        assert_eq!(extract_one(body, "/absent"), None);
    }

    #[test]
    fn unescapes_strings() {
        let body = r#"{"v": "q\" b\\ s\/ \b\f\n\r\t \u00e9\u20AC"}"#;
        assert_eq!(extract_one(body, "/v").as_deref(), Some("q\" b\\ s/ \u{8}\u{c}\n\r\t é€"));
    }

    #[test]
    fn joins_surrogate_pairs_and_replaces_lone_surrogates() {
        assert_eq!(extract_one(r#"["\ud83d\ude00"]"#, "/0").as_deref(), Some("😀"));
        assert_eq!(extract_one(r#"["\uD83D\uDE00!"]"#, "/0").as_deref(), Some("😀!"));
        assert_eq!(extract_one(r#"["a\ud800b"]"#, "/0").as_deref(), Some("a\u{fffd}b"));
        assert_eq!(extract_one(r#"["\udc00"]"#, "/0").as_deref(), Some("\u{fffd}"));
        assert_eq!(extract_one(r#"["\ud800"]"#, "/0").as_deref(), Some("\u{fffd}"));
        // A high surrogate followed by an escape that is not a low one: both are kept apart.
        assert_eq!(extract_one(r#"["\ud800\u0041"]"#, "/0").as_deref(), Some("\u{fffd}A"));
        assert_eq!(extract_one(r#"["\ud800\ud800"]"#, "/0").as_deref(), Some("\u{fffd}\u{fffd}"));
    }

    #[test]
    fn keeps_nul_and_replaces_invalid_utf8() {
        assert_eq!(extract_one(r#"["a\u0000b"]"#, "/0").as_deref(), Some("a\0b"));
        assert_eq!(extract_one(b"[\"a\0b\"]", "/0").as_deref(), Some("a\0b"));
        assert_eq!(extract_one(b"[\"\xff\xfeok\"]", "/0").as_deref(), Some("\u{fffd}\u{fffd}ok"));
        assert_eq!(extract_one(b"[\"\xc3\\n\"]", "/0").as_deref(), Some("\u{fffd}\n"));
        assert_eq!(extract_one(b"[[\"\xe2\x82\"]]", "/0").as_deref(), Some("[\"\u{fffd}\"]"));
    }

    #[test]
    fn invalid_escapes_make_the_value_unreadable() {
        assert_eq!(extract_one(r#"{"v": "a\x"}"#, "/v"), None);
        assert_eq!(extract_one(r#"{"v": "\u12G4"}"#, "/v"), None);
        assert_eq!(extract_one(r#"{"v": "\u12"}"#, "/v"), None);
    }

    #[test]
    fn keys_are_compared_unescaped() {
        let body = r#"{"a\u0062": 1, "c\/d": 2, "\u00e9": 3, "x\"y": 4}"#;
        assert_eq!(extract_one(body, "/ab").as_deref(), Some("1"));
        assert_eq!(extract_one(body, "/c~1d").as_deref(), Some("2"));
        assert_eq!(extract_one(body, "/é").as_deref(), Some("3"));
        assert_eq!(extract_one(body, "/x\"y").as_deref(), Some("4"));
    }

    #[test]
    fn pointer_escapes_select_keys_with_slash_and_tilde() {
        let body = r#"{"a/b": 1, "m~n": 2, "": {"": 3}, "~1": 4}"#;
        assert_eq!(extract_one(body, "/a~1b").as_deref(), Some("1"));
        assert_eq!(extract_one(body, "/m~0n").as_deref(), Some("2"));
        assert_eq!(extract_one(body, "//").as_deref(), Some("3"));
        assert_eq!(extract_one(body, "/~01").as_deref(), Some("4"));
        assert_eq!(extract_one(body, "/a/b"), None);
    }

    #[test]
    fn arrays_take_canonical_indexes_only() {
        let body = r#"{"items": [{"id": 7}, "two", [3]], "obj": {"0": "zero", "01": "z"}}"#;
        assert_eq!(extract_one(body, "/items/0/id").as_deref(), Some("7"));
        assert_eq!(extract_one(body, "/items/1").as_deref(), Some("two"));
        assert_eq!(extract_one(body, "/items/2/0").as_deref(), Some("3"));
        assert_eq!(extract_one(body, "/items/01"), None);
        assert_eq!(extract_one(body, "/items/-"), None);
        assert_eq!(extract_one(body, "/items/3"), None);
        assert_eq!(extract_one(body, "/items/id"), None);
        // In objects a digit token is an ordinary key, leading zeros included.
        assert_eq!(extract_one(body, "/obj/0").as_deref(), Some("zero"));
        assert_eq!(extract_one(body, "/obj/01").as_deref(), Some("z"));
    }

    #[test]
    fn first_duplicate_key_wins() {
        assert_eq!(extract_one(r#"{"t": "a", "t": "b"}"#, "/t").as_deref(), Some("a"));
        // The first occurrence decides even when it is null or lacks the child.
        assert_eq!(extract_one(r#"{"t": null, "t": "b"}"#, "/t"), None);
        assert_eq!(extract_one(r#"{"u": {"x": 1}, "u": {"id": 2}}"#, "/u/id"), None);
        assert_eq!(
            extract_one(r#"{"u": {"id": 1, "id": 2}, "u": {"id": 3}}"#, "/u/id").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn objects_and_arrays_are_compact_json() {
        let body = "{ \"user\" : { \"name\" : \"a b\\n\\u00e9\" ,\n\t\"roles\" : [ 1 , true , null , [ ] , { } ] } }";
        assert_eq!(
            extract_one(body, "/user").as_deref(),
            Some(r#"{"name":"a b\n\u00e9","roles":[1,true,null,[],{}]}"#)
        );
        assert_eq!(extract_one(body, "/user/roles").as_deref(), Some("[1,true,null,[],{}]"));
        assert_eq!(
            extract_one(body, "").as_deref(),
            Some(r#"{"user":{"name":"a b\n\u00e9","roles":[1,true,null,[],{}]}}"#)
        );
    }

    #[test]
    fn malformed_containers_have_no_compact_form() {
        assert_eq!(extract_one(r#"{"a": [1 2]}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": [1,]}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": {"k" 1}}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": {"k": 1,}}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": {1: 2}}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": [01]}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": [1}}"#, "/a"), None);
    }

    #[test]
    fn resolves_many_pointers_in_one_walk() {
        let body = br#"{"a": {"b": [10, {"c": "deep"}], "x": 1}, "z": "last"}"#;
        let values = extract_all(body, &["/z", "/a/b/1/c", "/a", "/a/b", "/a/x", "/nope", "/z"]);
        assert_eq!(
            values,
            [
                Some("last".to_owned()),
                Some("deep".to_owned()),
                Some(r#"{"b":[10,{"c":"deep"}],"x":1}"#.to_owned()),
                Some(r#"[10,{"c":"deep"}]"#.to_owned()),
                Some("1".to_owned()),
                None,
                Some("last".to_owned()),
            ]
        );
    }

    #[test]
    fn skipped_subtrees_may_hold_brackets_in_strings() {
        let body = r#"{"x": "}]", "y": {"z": ["[{", "\"}"], "w": {}}, "t": 1}"#;
        assert_eq!(extract_one(body, "/t").as_deref(), Some("1"));
    }

    #[test]
    fn paths_through_scalars_have_no_value() {
        let body = r#"{"a": "text", "n": 5, "nil": null}"#;
        assert_eq!(extract_one(body, "/a/0"), None);
        assert_eq!(extract_one(body, "/n/x"), None);
        assert_eq!(extract_one(body, "/nil/x"), None);
        assert_eq!(extract_one("\"top\"", "/a"), None);
    }

    #[test]
    fn truncated_documents_keep_complete_values() {
        let body = r#"{"id": "u1", "n": 42, "ok": true, "obj": {"k": 1}, "cut": "abc"#;
        for extent in [Extent::Cut, Extent::Whole] {
            let one = |pointer| extract_as(body.as_bytes(), extent, &[pointer]).remove(0);
            assert_eq!(one("/id").as_deref(), Some("u1"));
            assert_eq!(one("/n").as_deref(), Some("42"));
            assert_eq!(one("/ok").as_deref(), Some("true"));
            assert_eq!(one("/obj").as_deref(), Some(r#"{"k":1}"#));
            assert_eq!(one("/cut"), None);
            assert_eq!(one(""), None);
            assert_eq!(one("/later"), None);
        }
    }

    #[test]
    fn values_cut_at_the_end_are_absent() {
        // The digits that follow might have been cut off.
        assert_eq!(extract_cut(r#"{"n": 12"#, "/n"), None);
        assert_eq!(extract_cut(r#"{"n": 12."#, "/n"), None);
        assert_eq!(extract_cut(r#"{"o": {"k": 1}"#, "/o").as_deref(), Some(r#"{"k":1}"#));
        assert_eq!(extract_cut(r#"{"o": {"k": 1"#, "/o"), None);
        assert_eq!(extract_cut(r#"{"o": {"k": 1"#, "/o/k"), None);
        assert_eq!(extract_cut(r#"{"t": tru"#, "/t"), None);
        // `true` may go on as `truex`, which has no value.
        assert_eq!(extract_cut(r#"{"t": true"#, "/t"), None);
        assert_eq!(extract_cut(r#"{"t": true "#, "/t").as_deref(), Some("true"));
        assert_eq!(extract_cut(r#"{"s": "a\"#, "/s"), None);
        assert_eq!(extract_cut(r#"{"s": "\ud83d\ude"#, "/s"), None);
    }

    #[test]
    fn the_end_of_a_whole_body_ends_a_number_or_literal() {
        assert_eq!(extract_one(r#"{"n": 12"#, "/n").as_deref(), Some("12"));
        assert_eq!(extract_one(r#"{"t": true"#, "/t").as_deref(), Some("true"));
        assert_eq!(extract_one(r#"{"n": 12."#, "/n"), None);
        assert_eq!(extract_one(r#"{"t": truex}"#, "/t"), None);
    }

    #[test]
    fn a_top_level_scalar_at_the_cut_is_absent() {
        for text in ["123", "-0.5e3", "true", "false"] {
            assert_eq!(extract_cut(text, ""), None, "{text}");
            assert_eq!(extract_one(text, "").as_deref(), Some(text), "{text}");
            assert_eq!(extract_cut(format!("{text}\n"), "").as_deref(), Some(text), "{text}");
        }
        assert_eq!(extract_cut("null", ""), None);
        assert_eq!(extract_cut(" \"s\" ", "").as_deref(), Some("s"));
        assert_eq!(extract_cut("\"s\"", "").as_deref(), Some("s"));
    }

    #[test]
    fn broken_json_keeps_what_came_before() {
        assert_eq!(extract_one(r#"{"a": 1 "b": 2}"#, "/a").as_deref(), Some("1"));
        assert_eq!(extract_one(r#"{"a": 1 "b": 2}"#, "/b"), None);
        assert_eq!(extract_one(r#"{"x": [}, "a": 1}"#, "/a"), None);
        assert_eq!(extract_one(r#"{"a": 1, , "b": 2}"#, "/b"), None);
        assert_eq!(extract_one(r#"{"a": 1}"#, "/a").as_deref(), Some("1"));
        assert_eq!(extract_one(r#"{"a": 1} trailing"#, "/a").as_deref(), Some("1"));
        assert_eq!(extract_one("not json", ""), None);
        assert_eq!(extract_one("", ""), None);
        assert_eq!(extract_one("{'a': 1}", "/a"), None);
    }

    #[test]
    fn skips_a_leading_byte_order_mark() {
        assert_eq!(extract_one(b"\xEF\xBB\xBF{\"a\": 1}", "/a").as_deref(), Some("1"));
    }

    fn nested_arrays(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn reads_values_at_any_depth() {
        for levels in [127, 128, 129, 130, 1000] {
            let deepest = format!("/{}", vec!["0"; levels - 1].join("/"));
            let body = nested_arrays(levels, "7");
            assert_eq!(extract_one(&body, &format!("{deepest}/0")).as_deref(), Some("7"));
            assert_eq!(extract_one(&body, &deepest).as_deref(), Some("[7]"));
            assert_eq!(extract_one(&body, "/0").map(|v| v.len()), Some(2 * (levels - 1) + 1));
        }
    }

    #[test]
    fn values_after_a_deep_subtree_are_found() {
        for levels in [100, 128, 129, 200, 64 << 10] {
            let deep = nested_arrays(levels, "1");
            let body = format!(r#"{{"before": "kept", "deep": {deep}, "after": "found"}}"#);
            let values = extract_all(body.as_bytes(), &["/before", "/after", "/nope"]);
            assert_eq!(values, [Some("kept".to_owned()), Some("found".to_owned()), None]);
            assert_eq!(extract_one(&body, "/deep").map(|v| v.len()), Some(2 * levels + 1));
            // Objects and arrays mixed, skipped as an array element.
            let mixed =
                format!("{}1{}", r#"{"a":["#.repeat(levels / 2 + 1), "]}".repeat(levels / 2 + 1));
            let body = format!(r#"[{mixed}, {{"token": "t"}}]"#);
            assert_eq!(extract_one(&body, "/1/token").as_deref(), Some("t"));
        }
    }

    #[test]
    fn a_deep_subtree_with_a_wrong_bracket_stops_the_walk() {
        let body = format!(r#"{{"deep": {}1{}}}, "after": 1}}"#, "[".repeat(300), "]".repeat(299));
        assert_eq!(extract_one(&body, "/after"), None);
        // The mismatch is deep in the spilled levels, far from the innermost 128.
        let body =
            format!(r#"{{"deep": {{"x":{}1{}]}}, "after": 1}}"#, "[".repeat(300), "]".repeat(300));
        assert_eq!(extract_one(&body, "/after"), None);
        let body =
            format!(r#"{{"deep": {{"x":{}1{}}}, "after": 1}}"#, "[".repeat(300), "]".repeat(300));
        assert_eq!(extract_one(&body, "/after").as_deref(), Some("1"));
    }

    #[test]
    fn survives_megabytes_of_open_brackets() {
        let mut body = br#"{"a": "x", "b": "#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 10 << 20));
        assert_eq!(extract_all(&body, &["/a", "/b", "/b/0/0"]), [Some("x".to_owned()), None, None]);
        let body = vec![b'{'; 10 << 20];
        assert_eq!(extract_one(&body, "/a"), None);
        // Skipped, not descended into: still one pass, one bit per level.
        let mut body = br#"{"skip": "#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 10 << 20));
        assert_eq!(extract_all(&body, &["/a"]), [None]);
    }

    #[test]
    fn stops_early_once_every_pointer_is_decided() {
        // Everything after the value is garbage; an early stop never looks at it.
        assert_eq!(extract_one(r#"{"a": {"b": 1}, ]]]]"#, "/a/b").as_deref(), Some("1"));
        assert_eq!(extract_one(r#"[1, 2, ]]]"#, "/1").as_deref(), Some("2"));
    }

    #[test]
    fn no_pointers_no_values() {
        assert!(extract(b"{}", Extent::Whole, &[]).is_empty());
    }

    fn key() -> impl Strategy<Value = String> {
        // Mostly a tiny alphabet, so that keys repeat across levels, with `/` and `~` to
        // exercise pointer escapes.
        prop_oneof![3 => "[ab~/]{0,2}", 1 => any::<String>()]
    }

    fn container(inner: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    }

    fn json_value() -> BoxedStrategy<Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, container).boxed()
    }

    /// A document as an API sends it: an object or array, compact or pretty.
    pub(crate) fn document() -> impl Strategy<Value = (Value, String)> {
        (container(json_value()), any::<bool>()).prop_map(|(value, pretty)| {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            (value, text)
        })
    }

    fn escape_token(token: &str) -> String {
        token.replace('~', "~0").replace('/', "~1")
    }

    /// Every node's pointer, the document itself included.
    fn all_pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    all_pointers(child, format!("{prefix}/{}", escape_token(key)), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    all_pointers(child, format!("{prefix}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(prefix);
    }

    /// What a pointer should give, per serde_json.
    fn expected(value: Option<&Value>) -> Option<String> {
        match value? {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Pointers into `value`: existing ones, and some that miss (wrong keys, bad indexes).
    fn pointers_into(
        value: &Value,
        picks: &[prop::sample::Index],
        misses: &[String],
    ) -> Vec<String> {
        let mut existing = Vec::new();
        all_pointers(value, String::new(), &mut existing);
        let mut pointers: Vec<String> =
            picks.iter().map(|pick| pick.get(&existing).clone()).collect();
        pointers.extend(misses.iter().cloned());
        pointers
    }

    fn miss() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "[ab]",
                Just("0".to_owned()),
                Just("01".to_owned()),
                Just("-".to_owned()),
                Just("1".to_owned())
            ],
            1..4,
        )
        .prop_map(|tokens| format!("/{}", tokens.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_serde_json_pointer(
            (value, text) in document(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 1..5),
            misses in prop::collection::vec(miss(), 0..3),
        ) {
            let pointers = pointers_into(&value, &picks, &misses);
            let refs: Vec<&str> = pointers.iter().map(String::as_str).collect();
            let values = extract_all(text.as_bytes(), &refs);
            for (pointer, got) in pointers.iter().zip(values) {
                let want = expected(value.pointer(pointer));
                prop_assert_eq!(&got, &want, "pointer {:?} in {}", pointer, text);
            }
        }

        #[test]
        fn truncation_never_changes_a_value(
            (value, text) in document(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            let pointers = pointers_into(&value, &picks, &[]);
            let refs: Vec<&str> = pointers.iter().map(String::as_str).collect();
            let full = extract_all(text.as_bytes(), &refs);
            for cut in 0..text.len() {
                let partial = extract_as(&text.as_bytes()[..cut], Extent::Cut, &refs);
                for ((pointer, whole), part) in pointers.iter().zip(&full).zip(partial) {
                    prop_assert!(part.is_none() || part.as_ref() == whole.as_ref(),
                        "pointer {:?} cut at {}: {:?} vs {:?}", pointer, cut, part, whole);
                }
            }
        }

        #[test]
        fn a_deciding_prefix_gives_the_values_of_the_whole(
            (value, text) in document(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
            misses in prop::collection::vec(miss(), 0..2),
        ) {
            let pointers = pointers_into(&value, &picks, &misses);
            let parsed: Vec<Pointer> = pointers.iter().map(|p| Pointer::parse(p).unwrap()).collect();
            let refs: Vec<&Pointer> = parsed.iter().collect();
            let full = extract(text.as_bytes(), Extent::Whole, &refs);
            prop_assert!(decides_all(text.as_bytes(), &refs), "the whole decides: {}", text);
            let mut decided_at = None;
            for cut in 0..=text.len() {
                let prefix = &text.as_bytes()[..cut];
                if decides_all(prefix, &refs) {
                    decided_at.get_or_insert(cut);
                    let got = extract(prefix, Extent::Cut, &refs);
                    prop_assert_eq!(&got, &full, "cut at {} of {}", cut, text);
                }
            }
            // Once decided, every longer prefix is too.
            let first = decided_at.unwrap();
            prop_assert!((first..=text.len()).all(|cut| decides_all(&text.as_bytes()[..cut], &refs)));
        }

        #[test]
        fn a_deep_subtree_hides_nothing_after_it(
            kinds in prop::collection::vec(any::<bool>(), 0..2000),
            skipped in any::<bool>(),
        ) {
            let mut deep = String::new();
            for &object in &kinds {
                deep.push_str(if object { r#"{"k":"# } else { "[" });
            }
            deep.push_str(r#"[1,"}]"]"#);
            for &object in kinds.iter().rev() {
                deep.push(if object { '}' } else { ']' });
            }
            let body = format!(r#"{{"deep": {deep}, "token": "t"}}"#);
            // Skipped as a member no pointer reaches, or copied as the value of one.
            let pointers: &[&str] = if skipped { &["/token"] } else { &["/token", "/deep"] };
            let values = extract_all(body.as_bytes(), pointers);
            prop_assert_eq!(values[0].as_deref(), Some("t"));
            if !skipped {
                prop_assert_eq!(values[1].as_ref().map(String::len), Some(deep.len()));
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(body in any::<Vec<u8>>()) {
            for value in extract_all(&body, &["", "/a", "/0", "/a/0/b"]).into_iter().flatten() {
                // Each input byte becomes at most one U+FFFD.
                prop_assert!(value.len() <= 3 * body.len());
            }
        }

        #[test]
        fn never_panics_on_json_like_bytes(
            body in prop::collection::vec(prop::sample::select(b"{}[]\",:\\/ u0123456789-+.eEtrufalsnab\0\xff".to_vec()), 0..256),
        ) {
            for value in extract_all(&body, &["", "/a", "/0", "/a/0", "/b/a"]).into_iter().flatten() {
                prop_assert!(value.len() <= 3 * body.len());
            }
        }
    }
}
