//! Endpoints: what the requests of a session called, grouped as `METHOD TEMPLATE`
//! (`GET /orders/{id}`), whether the API's OpenAPI documents know them, and what is usual for
//! each, so that a request can be judged against it.
//!
//! - [`template`] turns a request path into a template by rules;
//! - [`openapi`] reads the documents given with `--openapi`; a path template of theirs wins
//!   over the rules wherever one matches;
//! - [`registry`] caps the number of endpoints per server;
//! - [`auto_flows`] suggests business flows from an endpoint's words;
//! - [`stats`] adds up an endpoint's requests per hour, with [`histogram`] for the quantiles
//!   of durations and sizes and [`distinct`] for the sessions, and tells outliers.
//!
//! Nothing here touches a store: both stores call the same functions at ingest and read
//! through the same types, which is what makes their answers the same.

pub mod annotate;
pub mod auto_flows;
pub mod distinct;
pub mod histogram;
pub mod list;
pub mod openapi;
pub mod registry;
pub mod stats;
pub mod template;

use std::borrow::Cow;

use serde::Serialize;

use auto_flows::AutoFlow;
use openapi::{Lookup, OpenApi, Operation};

/// How an endpoint stands against the OpenAPI documents. `None` where no document was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpecStatus {
    /// Called, and defined by a document.
    Documented,
    /// Called, and not defined for its method by any document.
    Shadow,
    /// Called, and marked `deprecated: true`.
    Zombie,
    /// Defined by a document, and never called.
    Unused,
}

impl SpecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecStatus::Documented => "documented",
            SpecStatus::Shadow => "shadow",
            SpecStatus::Zombie => "zombie",
            SpecStatus::Unused => "unused",
        }
    }

    pub fn parse(text: &str) -> Option<SpecStatus> {
        [SpecStatus::Documented, SpecStatus::Shadow, SpecStatus::Zombie, SpecStatus::Unused]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// The endpoint of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned<'a> {
    pub method: &'a str,
    pub template: Cow<'a, str>,
    pub spec: Option<SpecStatus>,
    /// The template comes from a document, and so does not count against the cap on endpoints
    /// per server.
    pub from_document: bool,
    /// The operation matched, when a document defines one for the method.
    pub operation: Option<&'a Operation>,
}

impl Assigned<'_> {
    /// `METHOD TEMPLATE`, as the API and the `endpoint=` filter write an endpoint.
    pub fn key(&self) -> String {
        key(self.method, &self.template)
    }
}

/// `METHOD TEMPLATE`.
pub fn key(method: &str, template: &str) -> String {
    format!("{method} {template}")
}

/// Splits `METHOD TEMPLATE` (an `endpoint=` filter) into its parts. Methods hold no spaces;
/// templates may.
pub fn parse_key(text: &str) -> Option<(&str, &str)> {
    let (method, template) = text.trim().split_once(' ')?;
    let template = template.trim_start();
    (!method.is_empty() && !template.is_empty()).then_some((method, template))
}

/// Assigns endpoints to requests: the OpenAPI documents where they match, the templating rules
/// elsewhere.
#[derive(Debug, Default)]
pub struct Endpoints {
    openapi: Option<OpenApi>,
}

impl Endpoints {
    /// `openapi` is what `--openapi` loaded, if anything.
    pub fn new(openapi: Option<OpenApi>) -> Self {
        Endpoints { openapi }
    }

    pub fn openapi(&self) -> Option<&OpenApi> {
        self.openapi.as_ref()
    }

    /// The endpoint of a request of `server` (the record's host).
    pub fn assign<'a>(&'a self, server: &str, method: &'a str, path: &str) -> Assigned<'a> {
        let method = template::method(method);
        let segments = template::segments(path);
        let Some(openapi) = &self.openapi else {
            return Assigned {
                method,
                template: Cow::Owned(template::from_segments(&segments)),
                spec: None,
                from_document: false,
                operation: None,
            };
        };
        match openapi.lookup(server, method, &segments) {
            Some(Lookup::Operation(operation)) => Assigned {
                method,
                template: Cow::Borrowed(&operation.template),
                spec: Some(if operation.deprecated {
                    SpecStatus::Zombie
                } else {
                    SpecStatus::Documented
                }),
                from_document: true,
                operation: Some(operation),
            },
            Some(Lookup::Path(template)) => Assigned {
                method,
                template: Cow::Borrowed(template),
                spec: Some(SpecStatus::Shadow),
                from_document: true,
                operation: None,
            },
            None => Assigned {
                method,
                template: Cow::Owned(template::from_segments(&segments)),
                spec: Some(SpecStatus::Shadow),
                from_document: false,
                operation: None,
            },
        }
    }

    /// The flows an endpoint's words suggest. `operation` is the one its template matched,
    /// whose parameter names count too.
    pub fn auto_flows(&self, assigned: &Assigned<'_>) -> Vec<AutoFlow> {
        let parameters = assigned.operation.map_or(&[][..], |op| op.parameters.as_slice());
        auto_flows::suggest(&assigned.template, parameters)
    }

    /// The documented operations no request called: `called(method, template)` says whether
    /// the store holds that endpoint.
    pub fn unused<'a>(
        &'a self,
        mut called: impl FnMut(&str, &str) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Operation> + 'a {
        self.openapi
            .iter()
            .flat_map(|api| api.operations())
            .filter(move |op| !called(&op.method, &op.template))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SPEC: &str = "openapi: 3.0.0
servers: [{url: /api}]
paths:
  /orders/{orderId}:
    get: {parameters: [{name: orderId, in: path}]}
    delete: {deprecated: true}
  /auth/login:
    post: {}
  /reports:
    get: {}
";

    fn endpoints() -> Endpoints {
        Endpoints::new(Some(OpenApi::from_texts([("spec.yaml", SPEC)]).unwrap()))
    }

    #[test]
    fn documents_win_over_rules() {
        let e = endpoints();
        let cases = [
            ("GET", "/api/orders/1001", "GET /api/orders/{orderId}", SpecStatus::Documented),
            ("DELETE", "/api/orders/1001", "DELETE /api/orders/{orderId}", SpecStatus::Zombie),
            ("PUT", "/api/orders/1001", "PUT /api/orders/{orderId}", SpecStatus::Shadow),
            ("GET", "/api/users/42", "GET /api/users/{id}", SpecStatus::Shadow),
            ("G E T", "/api/reports", "OTHER /api/reports", SpecStatus::Shadow),
        ];
        for (method, path, key, spec) in cases {
            let a = e.assign("shop", method, path);
            assert_eq!((a.key().as_str(), a.spec), (key, Some(spec)), "{method} {path}");
        }
        assert!(e.assign("shop", "GET", "/api/orders/7").from_document);
        assert!(e.assign("shop", "PUT", "/api/orders/7").from_document);
        assert!(!e.assign("shop", "GET", "/api/users/7").from_document);

        let none = Endpoints::new(None);
        let a = none.assign("shop", "GET", "/api/orders/1001/");
        assert_eq!((a.key().as_str(), a.spec), ("GET /api/orders/{id}", None));
        assert!(none.unused(|_, _| false).next().is_none());
    }

    #[test]
    fn unused_operations() {
        let e = endpoints();
        let called: HashSet<String> = ["GET /api/orders/1", "POST /api/auth/login"]
            .iter()
            .map(|k| {
                let (m, p) = parse_key(k).unwrap();
                e.assign("shop", m, p).key()
            })
            .collect();
        let unused: Vec<String> = e
            .unused(|m, t| called.contains(&key(m, t)))
            .map(|op| key(&op.method, &op.template))
            .collect();
        assert_eq!(unused, ["DELETE /api/orders/{orderId}", "GET /api/reports"]);
    }

    #[test]
    fn auto_flows_use_the_operation() {
        let e = endpoints();
        let login = e.assign("shop", "POST", "/api/auth/login");
        let flows: Vec<&str> = e.auto_flows(&login).iter().map(|f| f.flow).collect();
        assert_eq!(flows, ["auth"]);
        assert!(e.auto_flows(&e.assign("shop", "GET", "/api/orders/1")).is_empty());
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("GET /orders/{id}"), Some(("GET", "/orders/{id}")));
        assert_eq!(parse_key(" POST  /a b "), Some(("POST", "/a b")));
        assert_eq!(parse_key("GET"), None);
        assert_eq!(parse_key(" /a"), None);
        assert_eq!(SpecStatus::parse("zombie"), Some(SpecStatus::Zombie));
        assert_eq!(SpecStatus::parse("Zombie"), None);
        assert_eq!(serde_json::to_string(&SpecStatus::Unused).unwrap(), "\"unused\"");
    }
}
