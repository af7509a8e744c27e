//! Session ids in URLs: the whole id, or a prefix of at least [`MIN_PREFIX`] characters that
//! only one retained session starts with (ids are long hashes; people copy the start).

use crate::app::AppState;
use crate::error::Error;

/// The shortest prefix looked up.
pub const MIN_PREFIX: usize = 12;

/// How many matching ids an ambiguous prefix's error lists.
pub const CANDIDATES: usize = 10;

/// The session id `id` stands for: itself when a session has it (or when it is too short to
/// be a prefix, or nothing matches, which the caller reports), else the one session whose id
/// starts with it; several are an [`Error::AmbiguousSession`].
pub async fn resolve(app: &AppState, id: &str) -> Result<String, Error> {
    if id.chars().count() < MIN_PREFIX {
        return Ok(id.to_owned());
    }
    let prefix = id.to_owned();
    let mut found =
        app.with_store(move |store| store.session_ids_with_prefix(&prefix, CANDIDATES + 1)).await?;
    if found.is_empty() || found.iter().any(|candidate| candidate == id) {
        return Ok(id.to_owned());
    }
    if found.len() == 1 {
        return Ok(found.remove(0));
    }
    let more = found.len() > CANDIDATES;
    found.truncate(CANDIDATES);
    Err(Error::AmbiguousSession { prefix: id.to_owned(), candidates: found, more })
}
