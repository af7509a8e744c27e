//! Filters in URLs: reading the query string of the API and the UI, and writing it back for
//! links, so that every view can be shared by copying its address.
//!
//! axum decodes the query string into [`QueryParams`]; this module turns its text into a
//! [`Filter`], a [`Cursor`] and a page size, with messages that say what is wrong. A new
//! filter or sort is a field here, in [`Filter`], and in the form of `ui::form`.

use api_sessions_core::time::Millis;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::detect::SignalName;
use crate::store::{AttackFilter, Cursor, Filter, Sort, StatusFilter};

/// The query parameters every view accepts. Empty values mean "not set", as HTML forms send
/// every field.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueryParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub user: Option<String>,
    pub role: Option<String>,
    pub flow: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub method: Option<String>,
    pub status: Option<String>,
    pub attack: Option<String>,
    pub q: Option<String>,
    pub risk_min: Option<String>,
    pub signal: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// How many items a page holds when `limit` does not say, and at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize {
    pub default: usize,
    pub max: usize,
}

impl PageSize {
    /// Sessions per page of the list, in the API and the UI.
    pub const SESSIONS: PageSize = PageSize { default: 50, max: 500 };
    /// Requests per page of `GET /api/sessions/{id}`; the CSV export reads pages of the most.
    pub const REQUESTS: PageSize = PageSize { default: 1000, max: 10_000 };
}

/// What a request asks for: which items, from where, how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub filter: Filter,
    pub cursor: Option<Cursor>,
    pub limit: usize,
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|value| !value.is_empty())
}

impl QueryParams {
    pub fn filter(&self) -> Result<Filter, String> {
        let time = |name: &str, value: &Option<String>| {
            set(value)
                .map(|text| {
                    Millis::parse(text).ok_or_else(|| {
                        format!(
                            "invalid \"{name}\" \"{text}\": expected RFC 3339 \
                             (2026-11-22T10:00:00Z), YYYY-MM-DDTHH:MM or YYYY-MM-DD"
                        )
                    })
                })
                .transpose()
        };
        let text = |value: &Option<String>| set(value).map(str::to_owned);
        let status = set(&self.status)
            .map(|text| {
                StatusFilter::parse(text).ok_or_else(|| {
                    format!("invalid \"status\" \"{text}\": expected a code (404) or a class (4xx)")
                })
            })
            .transpose()?;
        let risk_min = set(&self.risk_min)
            .map(|text| match text.parse::<u8>() {
                Ok(risk) if risk <= 100 => Ok(risk),
                _ => Err(format!("invalid \"risk_min\" \"{text}\": expected 0 to 100")),
            })
            .transpose()?;
        let signal = set(&self.signal)
            .map(|text| match SignalName::parse(text) {
                Some(name) => Ok(name.as_str().to_owned()),
                None => {
                    let names: Vec<&str> = SignalName::ALL.iter().map(|n| n.as_str()).collect();
                    Err(format!(
                        "invalid \"signal\" \"{text}\": expected one of {}",
                        names.join(", ")
                    ))
                }
            })
            .transpose()?;
        let sort = set(&self.sort)
            .map(|text| {
                Sort::parse(text)
                    .ok_or_else(|| format!("invalid \"sort\" \"{text}\": expected last or risk"))
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Filter {
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
            user: text(&self.user),
            role: text(&self.role),
            flow: text(&self.flow),
            request_id: text(&self.request_id),
            ip: text(&self.ip),
            method: set(&self.method).map(str::to_ascii_uppercase),
            status,
            attack: set(&self.attack).map(AttackFilter::parse),
            q: text(&self.q),
            risk_min,
            signal,
            sort,
        })
    }

    /// The filter, the cursor and `limit`, in that order of checking.
    pub fn page(&self, size: PageSize) -> Result<PageRequest, String> {
        Ok(PageRequest { filter: self.filter()?, cursor: self.cursor()?, limit: self.limit(size)? })
    }

    /// `limit`, between 1 and the most a page holds.
    pub fn limit(&self, size: PageSize) -> Result<usize, String> {
        match set(&self.limit) {
            None => Ok(size.default),
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=size.max).contains(&limit) => Ok(limit),
                _ => Err(format!("invalid \"limit\" \"{text}\": expected 1 to {}", size.max)),
            },
        }
    }

    pub fn cursor(&self) -> Result<Option<Cursor>, String> {
        set(&self.cursor)
            .map(|text| Cursor::parse(text).ok_or_else(|| format!("invalid \"cursor\" \"{text}\"")))
            .transpose()
    }
}

/// The filter as `name=value` pairs, in the order the forms show them.
pub fn pairs(filter: &Filter) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    let mut push = |name, value: Option<String>| {
        if let Some(value) = value {
            pairs.push((name, value));
        }
    };
    push("from", filter.from.map(|t| t.to_rfc3339()));
    push("to", filter.to.map(|t| t.to_rfc3339()));
    push("user", filter.user.clone());
    push("role", filter.role.clone());
    push("flow", filter.flow.clone());
    push("request_id", filter.request_id.clone());
    push("ip", filter.ip.clone());
    push("method", filter.method.clone());
    push("status", filter.status.map(|s| s.to_string()));
    push("attack", filter.attack.as_ref().map(|a| a.as_str().to_owned()));
    push("q", filter.q.clone());
    push("risk_min", filter.risk_min.map(|risk| risk.to_string()));
    push("signal", filter.signal.clone());
    push("sort", (filter.sort != Sort::default()).then(|| filter.sort.as_str().to_owned()));
    pairs
}

/// `?name=value&...` for a filter and extra pairs, or an empty string when there is nothing.
pub fn query_string(filter: &Filter, extra: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs(filter) {
        query.append_pair(name, &value);
    }
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    let query = query.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
}

/// Everything but RFC 3986's unreserved characters.
const NOT_UNRESERVED: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A path segment with everything but unreserved characters percent-encoded, for ids in URLs.
pub fn path_segment(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a query string the way the handlers receive it.
    fn params(query: &str) -> QueryParams {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        axum::extract::Query::<QueryParams>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn a_filter_survives_the_round_trip_through_its_url() {
        let filter = params(
            "from=2026-11-22T10:00&to=2026-11-22&user=al+ice%26x&status=4xx&method=post\
             &attack=any&q=%3Cscript%3E",
        )
        .filter()
        .unwrap();
        assert_eq!(filter.from, Millis::parse("2026-11-22T10:00:00Z"));
        assert_eq!(filter.user.as_deref(), Some("al ice&x"));
        assert_eq!(filter.method.as_deref(), Some("POST"));
        assert_eq!(filter.status, Some(StatusFilter::Class(4)));
        assert_eq!(filter.attack, Some(AttackFilter::Any));

        let url = query_string(&filter, &[]);
        assert!(!url.contains('<') && !url.contains(' '), "{url}");
        let again = params(&url[1..]).filter().unwrap();
        assert_eq!(again, filter);
    }

    #[test]
    fn empty_fields_are_unset_and_bad_values_are_explained() {
        let filter = params("from=&user=+&status=").filter().unwrap();
        assert_eq!(filter, Filter::default());
        assert_eq!(query_string(&filter, &[]), "");

        let err = params("from=yesterday").filter().unwrap_err();
        assert!(err.starts_with("invalid \"from\" \"yesterday\""), "{err}");
        let err = params("status=abc").filter().unwrap_err();
        assert!(err.contains("expected a code (404) or a class (4xx)"), "{err}");
        for bad in ["0", "501", "x"] {
            let params = QueryParams { limit: Some(bad.into()), ..Default::default() };
            assert!(params.limit(PageSize::SESSIONS).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_cannot_break_out_of_the_path() {
        assert_eq!(path_segment("3f9a-b_c.d"), "3f9a-b_c.d");
        assert_eq!(path_segment("../x?y#\"<"), "..%2Fx%3Fy%23%22%3C");
        assert_eq!(path_segment("é %"), "%C3%A9%20%25");
    }
}
