//! A session's requests against their endpoints: which endpoint each one called, how that
//! endpoint stands against the documents, and whether the request took far longer or answered
//! far more than the endpoint usually does (its p95 over the retention).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::list::SpecIndex;
use super::stats::{OutlierRule, Stats};
use super::{Endpoints, SpecStatus};
use crate::store::endpoints::EndpointKey;
use crate::store::{EndpointRange, Result, Store, StoredRequest};

/// What a request's endpoint says about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Annotation {
    /// `METHOD TEMPLATE`.
    pub endpoint: String,
    /// Which of `duration_ms` and `response_bytes` are far above the endpoint's p95.
    pub outliers: Vec<&'static str>,
    pub endpoint_stats: EndpointFacts,
}

/// The endpoint as a request's row shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointFacts {
    pub server: String,
    pub spec: Option<SpecStatus>,
    pub requests: u64,
    pub attacks: u64,
    pub duration_ms_p95: Option<f64>,
    pub response_bytes_p95: Option<f64>,
}

#[derive(Deserialize)]
struct Measures {
    duration_ms: f64,
    response_bytes: u64,
}

/// The annotation of each request, in order; `None` for a request stored without an endpoint.
pub fn annotate(
    store: &dyn Store,
    endpoints: &Endpoints,
    session_id: &str,
    requests: &[StoredRequest],
) -> Result<Vec<Option<Annotation>>> {
    let positions: Vec<_> = requests.iter().map(|r| r.position).collect();
    let keys = store.request_endpoints(session_id, &positions)?;
    let mut distinct: Vec<EndpointKey> = keys.iter().flatten().cloned().collect();
    distinct.sort();
    distinct.dedup();
    let usual: HashMap<EndpointKey, Stats> = if distinct.is_empty() {
        HashMap::new()
    } else {
        let range = EndpointRange { only: Some(distinct), ..EndpointRange::default() };
        store.endpoints(&range)?.into_iter().map(|m| (m.endpoint, m.stats)).collect()
    };
    let index = SpecIndex::new(endpoints);
    let rule = OutlierRule::default();
    Ok(requests
        .iter()
        .zip(keys)
        .map(|(request, key)| {
            let key = key?;
            let stats = usual.get(&key).cloned().unwrap_or_default();
            let baseline = stats.baseline();
            let outliers = serde_json::from_str::<Measures>(&request.json)
                .map(|m| rule.judge(&baseline, m.duration_ms, m.response_bytes).names().collect())
                .unwrap_or_default();
            Some(Annotation {
                endpoint: key.key(),
                outliers,
                endpoint_stats: EndpointFacts {
                    spec: index.status(&key.method, &key.template),
                    server: key.server,
                    requests: stats.requests,
                    attacks: stats.attacks,
                    duration_ms_p95: baseline.duration_p95,
                    response_bytes_p95: baseline.response_bytes_p95,
                },
            })
        })
        .collect())
}

/// The record's text with the annotation's fields added at its end.
pub fn annotated_json(json: &str, annotation: Option<&Annotation>) -> Option<Box<RawValue>> {
    let Some(annotation) = annotation else {
        return RawValue::from_string(json.to_owned()).ok();
    };
    let body = json.trim_end().strip_suffix('}')?;
    let fields = serde_json::to_string(annotation).ok()?;
    let fields = fields.strip_prefix('{')?;
    let separator = if body.trim_end().ends_with('{') { "" } else { "," };
    RawValue::from_string(format!("{body}{separator}{fields}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_added_to_the_record() {
        let annotation = Annotation {
            endpoint: "GET /a/{id}".into(),
            outliers: vec!["duration_ms"],
            endpoint_stats: EndpointFacts {
                server: "h".into(),
                spec: None,
                requests: 30,
                attacks: 1,
                duration_ms_p95: Some(2.0),
                response_bytes_p95: None,
            },
        };
        let json = annotated_json(r#"{"v":1,"path":"/a/1"}"#, Some(&annotation)).unwrap();
        let value: serde_json::Value = serde_json::from_str(json.get()).unwrap();
        assert_eq!(value["path"], "/a/1");
        assert_eq!(value["endpoint"], "GET /a/{id}");
        assert_eq!(value["outliers"], serde_json::json!(["duration_ms"]));
        assert_eq!(value["endpoint_stats"]["attacks"], 1);
        assert_eq!(annotated_json(r#"{"v":1}"#, None).unwrap().get(), r#"{"v":1}"#);
    }
}
