//! Filters in URLs: reading the query string of the API and the UI, and writing it back for
//! links, so that every view can be shared by copying its address.
//!
//! axum decodes the query string into [`QueryParams`]; this module turns its text into a
//! [`Filter`], a [`Cursor`] and a page size, with messages that say what is wrong. A new
//! filter or sort is a field here, in [`Filter`], and in the form of `ui::form`.

use api_sessions_core::time::Millis;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::detect::SignalName;
use crate::store::{
    AttackFilter, Cursor, Filter, ListCursor, ListQuery, Order, Sort, SortKey, StatusFilter,
};

/// The query parameters every view accepts. Empty values mean "not set", as HTML forms send
/// every field. Any other parameter is refused, so that a misspelt filter is not silently
/// ignored.
///
/// The descriptions of the fields are those of the parameters in `/api/openapi.json`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// Requests at or after this time: RFC 3339, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DD` (UTC).
    pub from: Option<String>,
    /// Requests before this time, in the forms of `from`.
    pub to: Option<String>,
    /// Sessions where this user was seen (case-insensitive).
    pub user: Option<String>,
    /// Sessions where this role was seen (case-insensitive).
    pub role: Option<String>,
    /// Sessions that touched this business flow (case-insensitive).
    pub flow: Option<String>,
    /// Sessions with a User-Agent that contains this text (case-insensitive).
    pub ua: Option<String>,
    /// Requests with this `request_id`.
    pub request_id: Option<String>,
    /// Requests from this client address.
    pub ip: Option<String>,
    /// Requests with this method.
    pub method: Option<String>,
    /// Requests with this status (`404`) or class (`4xx`).
    pub status: Option<String>,
    /// Malicious requests: `any`, or an attack type (case-insensitive).
    pub attack: Option<String>,
    /// Requests whose path, parameters, user or User-Agent contain this text.
    pub q: Option<String>,
    /// What sessions are sorted by: `last` (default), `first`, `requests`, `duration`,
    /// `attacks` or `risk`.
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    /// Sessions with a request to this endpoint, `METHOD TEMPLATE` (`GET /orders/{id}`).
    pub endpoint: Option<String>,
    /// Sessions whose risk is at least this, 0 to 100.
    #[param(value_type = Option<u8>, maximum = 100)]
    pub risk_min: Option<String>,
    /// Sessions with this signal among their findings.
    pub signal: Option<String>,
    /// Items per page: sessions 1 to 500 (default 50), requests 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1)]
    pub limit: Option<String>,
    /// Where the page starts: a `next_cursor` or `prev_cursor` of another page.
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
    /// Decodes a query string; an unknown or repeated parameter is an error that names it.
    pub fn from_query(query: Option<&str>) -> Result<QueryParams, String> {
        serde_urlencoded::from_str(query.unwrap_or("")).map_err(|err| {
            let message = err.to_string();
            let message = message
                .replace("unknown field", "unknown parameter")
                .replace("duplicate field", "repeated parameter");
            format!("invalid query: {message}")
        })
    }

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
        let (from, to) = (time("from", &self.from)?, time("to", &self.to)?);
        if let (Some(from), Some(to)) = (from, to) {
            if from > to {
                return Err(format!(
                    "invalid range: \"from\" {} is after \"to\" {}",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                ));
            }
        }
        let endpoint = set(&self.endpoint)
            .map(|text| {
                crate::endpoints::parse_key(text)
                    .map(|(method, template)| crate::endpoints::key(method, template))
                    .ok_or_else(|| {
                        format!(
                            "invalid \"endpoint\" \"{text}\": expected METHOD TEMPLATE \
                             (GET /orders/{{id}})"
                        )
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
        Ok(Filter {
            from,
            to,
            user: text(&self.user),
            role: text(&self.role),
            flow: text(&self.flow),
            ua: text(&self.ua),
            request_id: text(&self.request_id),
            ip: text(&self.ip),
            method: set(&self.method).map(str::to_ascii_uppercase),
            status,
            attack: set(&self.attack).map(AttackFilter::parse),
            q: text(&self.q),
            endpoint,
            risk_min,
            signal,
        })
    }

    /// The filter, the cursor and `limit`, in that order of checking, for a session's requests;
    /// `sort` and `order`, which only order the list, are checked all the same.
    pub fn page(&self, size: PageSize) -> Result<PageRequest, String> {
        let filter = self.filter()?;
        self.sort()?;
        Ok(PageRequest { filter, cursor: self.cursor()?, limit: self.limit(size)? })
    }

    /// A page of the sessions list: the filter, `sort` and `order`, the cursor and `limit`.
    pub fn list_query(&self) -> Result<ListQuery, String> {
        let filter = self.filter()?;
        let sort = self.sort()?;
        let cursor = set(&self.cursor)
            .map(|text| {
                ListCursor::parse(text).ok_or_else(|| format!("invalid \"cursor\" \"{text}\""))
            })
            .transpose()?;
        Ok(ListQuery { filter, sort, cursor, limit: self.limit(PageSize::SESSIONS)? })
    }

    /// `sort` and `order`.
    pub fn sort(&self) -> Result<Sort, String> {
        let key = match set(&self.sort) {
            None => SortKey::default(),
            Some(text) => SortKey::parse(text).ok_or_else(|| {
                let names: Vec<&str> = SortKey::ALL.iter().map(|key| key.name()).collect();
                format!("invalid \"sort\" \"{text}\": expected one of {}", names.join(", "))
            })?,
        };
        let order = match set(&self.order) {
            None => Order::default(),
            Some(text) => Order::parse(text)
                .ok_or_else(|| format!("invalid \"order\" \"{text}\": expected desc or asc"))?,
        };
        Ok(Sort { key, order })
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
    push("ua", filter.ua.clone());
    push("request_id", filter.request_id.clone());
    push("ip", filter.ip.clone());
    push("method", filter.method.clone());
    push("status", filter.status.map(|s| s.to_string()));
    push("attack", filter.attack.as_ref().map(|a| a.as_str().to_owned()));
    push("q", filter.q.clone());
    push("endpoint", filter.endpoint.clone());
    push("risk_min", filter.risk_min.map(|risk| risk.to_string()));
    push("signal", filter.signal.clone());
    pairs
}

/// `sort` and `order` as `name=value` pairs, leaving out the defaults.
pub fn sort_pairs(sort: Sort) -> Vec<(&'static str, &'static str)> {
    let mut pairs = Vec::new();
    if sort.key != SortKey::default() {
        pairs.push(("sort", sort.key.name()));
    }
    if sort.order != Order::default() {
        pairs.push(("order", sort.order.name()));
    }
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

/// The query parameters of a request; a bad query string is a 400 that names the parameter.
pub struct Params(pub QueryParams);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = crate::error::Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        QueryParams::from_query(parts.uri.query())
            .map(Params)
            .map_err(crate::error::Error::BadRequest)
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
        QueryParams::from_query(Some(query)).unwrap()
    }

    #[test]
    fn unknown_repeated_and_inverted_parameters_are_named() {
        let err = QueryParams::from_query(Some("user=a&usr=b")).unwrap_err();
        assert!(err.contains("unknown parameter `usr`"), "{err}");
        let err = QueryParams::from_query(Some("user=a&user=b")).unwrap_err();
        assert!(err.contains("`user`"), "{err}");
        assert!(QueryParams::from_query(None).is_ok());
        let err = params("from=2026-11-22T10:00&to=2026-11-22T09:00").filter().unwrap_err();
        assert!(err.starts_with("invalid range: \"from\""), "{err}");
        assert!(params("from=2026-11-22T10:00&to=2026-11-22T10:00").filter().is_ok());
        let err = params("sort=risky").sort().unwrap_err();
        assert!(err.starts_with("invalid \"sort\" \"risky\""), "{err}");
        let err = params("order=up").sort().unwrap_err();
        assert!(err.starts_with("invalid \"order\" \"up\""), "{err}");
    }

    #[test]
    fn a_filter_survives_the_round_trip_through_its_url() {
        let filter = params(
            "from=2026-11-22T10:00&to=2026-11-23&user=al+ice%26x&status=4xx&method=post\
             &ua=Mozilla%2F5.0+(X11&attack=any&q=%3Cscript%3E&endpoint=GET+%2Forders%2F%7Bid%7D",
        )
        .filter()
        .unwrap();
        assert_eq!(filter.from, Millis::parse("2026-11-22T10:00:00Z"));
        assert_eq!(filter.user.as_deref(), Some("al ice&x"));
        assert_eq!(filter.ua.as_deref(), Some("Mozilla/5.0 (X11"));
        assert_eq!(filter.method.as_deref(), Some("POST"));
        assert_eq!(filter.status, Some(StatusFilter::Class(4)));
        assert_eq!(filter.attack, Some(AttackFilter::Any));
        assert_eq!(filter.endpoint.as_deref(), Some("GET /orders/{id}"));

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
        let err = params("endpoint=GET").filter().unwrap_err();
        assert!(err.contains("expected METHOD TEMPLATE"), "{err}");
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
