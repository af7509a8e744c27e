//! The filter form the list and the session page share.

use api_sessions_core::time::Millis;

use super::html::Html;
use crate::detect::SignalName;
use crate::params::QueryParams;
use crate::store::values::ValueKind;
use crate::store::SortKey;

/// The flow names the `api_sessions_flow` directive documents, suggested by the form; custom ones can be typed.
const KNOWN_FLOWS: [&str; 7] =
    ["auth", "account_creation", "account_management", "admin", "billing", "sms_gateway", "ai_llm"];
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Field {
    From,
    To,
    User,
    Role,
    Flow,
    Ua,
    RequestId,
    Ip,
    Method,
    Status,
    Attack,
    Q,
    Sort,
    Order,
    Endpoint,
    RiskMin,
    Signal,
}

/// Everything the sessions list filters on.
pub const GLOBAL: &[Field] = &[
    Field::From,
    Field::To,
    Field::User,
    Field::Role,
    Field::Flow,
    Field::Ua,
    Field::RequestId,
    Field::Ip,
    Field::Method,
    Field::Status,
    Field::Attack,
    Field::Q,
    Field::Sort,
    Field::Order,
    Field::Endpoint,
    Field::RiskMin,
    Field::Signal,
];
/// What selects requests inside a session.
pub const IN_SESSION: &[Field] = &[
    Field::From,
    Field::To,
    Field::RequestId,
    Field::Ip,
    Field::Method,
    Field::Status,
    Field::Attack,
    Field::Q,
    Field::Endpoint,
];
/// What describes a whole session; carried through the session page unchanged.
pub const SESSION_LEVEL: &[Field] =
    &[Field::User, Field::Role, Field::Flow, Field::Ua, Field::RiskMin, Field::Signal, Field::Sort];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::From => "from",
            Field::To => "to",
            Field::User => "user",
            Field::Role => "role",
            Field::Flow => "flow",
            Field::Ua => "ua",
            Field::RequestId => "request_id",
            Field::Ip => "ip",
            Field::Method => "method",
            Field::Status => "status",
            Field::Attack => "attack",
            Field::Q => "q",
            Field::Sort => "sort",
            Field::Order => "order",
            Field::Endpoint => "endpoint",
            Field::RiskMin => "risk_min",
            Field::Signal => "signal",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Field::From => "From",
            Field::To => "To",
            Field::User => "User",
            Field::Role => "Role",
            Field::Flow => "Business flow",
            Field::Ua => "User agent",
            Field::RequestId => "Request ID",
            Field::Ip => "IP",
            Field::Method => "Method",
            Field::Status => "Status",
            Field::Attack => "Attack",
            Field::Q => "Search",
            Field::Sort => "Sort by",
            Field::Order => "Order",
            Field::Endpoint => "Endpoint",
            Field::RiskMin => "Risk at least",
            Field::Signal => "Signal",
        }
    }

    fn value(self, params: &QueryParams) -> String {
        let raw = match self {
            Field::From => &params.from,
            Field::To => &params.to,
            Field::User => &params.user,
            Field::Role => &params.role,
            Field::Flow => &params.flow,
            Field::Ua => &params.ua,
            Field::RequestId => &params.request_id,
            Field::Ip => &params.ip,
            Field::Method => &params.method,
            Field::Status => &params.status,
            Field::Attack => &params.attack,
            Field::Q => &params.q,
            Field::Sort => &params.sort,
            Field::Order => &params.order,
            Field::Endpoint => &params.endpoint,
            Field::RiskMin => &params.risk_min,
            Field::Signal => &params.signal,
        };
        let raw = raw.as_deref().unwrap_or("").trim();
        match self {
            // A datetime-local input shows only its own format; keep what does not parse as
            // typed so it can be corrected.
            Field::From | Field::To => Millis::parse(raw).map_or(raw.to_owned(), datetime_local),
            Field::Method => raw.to_ascii_uppercase(),
            _ => raw.to_owned(),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, what `<input type="datetime-local" step="1">` takes: to the second,
/// so that the picker does not ask for milliseconds.
fn datetime_local(ts: Millis) -> String {
    let mut text = ts.to_rfc3339();
    text.truncate("YYYY-MM-DDTHH:MM:SS".len());
    text
}

/// A GET form of filters.
pub struct FilterForm<'a> {
    /// Where the form goes.
    pub action: &'a str,
    /// The filters it shows.
    pub fields: &'a [Field],
    /// Filters it carries unchanged.
    pub hidden: &'a [Field],
    /// Other pairs it carries unchanged (the list a session was opened from).
    pub carry: &'a [(&'static str, &'a str)],
    /// The address without these filters.
    pub reset: &'a str,
    /// What its button says.
    pub submit: &'static str,
}

pub fn filter_form(html: &mut Html, params: &QueryParams, form: &FilterForm) {
    let FilterForm { action, fields, hidden, carry, reset, submit } = *form;
    html.open("form", &[("class", "filters"), ("method", "get"), ("action", action)]);
    for &field in hidden {
        let value = field.value(params);
        if !value.is_empty() {
            html.open("input", &[("type", "hidden"), ("name", field.name()), ("value", &value)]);
        }
    }
    for &(name, value) in carry {
        html.open("input", &[("type", "hidden"), ("name", name), ("value", value)]);
    }
    for &field in fields {
        let value = field.value(params);
        let id = format!("f-{}", field.name());
        html.open("div", &[("class", "field")]);
        html.open("label", &[("for", &id)]).text(field.label());
        if matches!(field, Field::From | Field::To) {
            // The script says "local time" here when the reader chose it.
            html.text(" (").element("span", &[("class", "tz-name")], "UTC").text(")");
        }
        html.close("label");
        if field == Field::Method {
            method_select(html, &id, &value);
        } else if field == Field::Signal {
            let mut names = vec![("", "any")];
            names.extend(SignalName::ALL.iter().map(|name| (name.as_str(), name.as_str())));
            select(html, &id, field, &value, &names);
        } else if field == Field::Sort {
            let keys = SortKey::ALL.map(|key| (key.name(), sort_label(key)));
            select(html, &id, field, &value, &keys);
        } else if field == Field::Order {
            select(html, &id, field, &value, &[("desc", "descending"), ("asc", "ascending")]);
        } else {
            let mut attributes =
                vec![("id", id.as_str()), ("name", field.name()), ("value", &value)];
            attributes.extend_from_slice(match field {
                Field::From | Field::To => &[("type", "datetime-local"), ("step", "1")],
                Field::User => &[("list", "values-user")],
                Field::Role => &[("list", "values-role")],
                Field::Flow => &[("list", "values-flow")],
                Field::Ua => &[("list", "values-ua"), ("placeholder", "part of it: curl")],
                Field::Status => &[("placeholder", "404 or 4xx")],
                Field::Attack => &[("list", "values-attack"), ("placeholder", "any, or a type")],
                Field::Q => &[("type", "search"), ("placeholder", "path, parameter, user")],
                Field::Endpoint => &[("placeholder", "GET /orders/{id}")],
                Field::RiskMin => {
                    &[("type", "number"), ("min", "0"), ("max", "100"), ("placeholder", "0-100")]
                }
                _ => &[],
            });
            html.open("input", &attributes);
        }
        html.close("div");
    }
    html.open("div", &[("class", "buttons")])
        .element("button", &[("type", "submit")], submit)
        .element("a", &[("class", "button secondary"), ("href", reset)], "Reset")
        .close("div")
        .close("form");
}

/// Suggestions for the inputs of values the data holds (user, role, flow, attack, User-Agent):
/// the values seen in the sessions, and for flows the documented names too.
pub fn value_lists(html: &mut Html, seen: &[(ValueKind, Vec<String>)]) {
    for (kind, values) in seen {
        html.open("datalist", &[("id", &format!("values-{}", kind.name()))]);
        let known: &[&str] = match kind {
            ValueKind::Flow => &KNOWN_FLOWS,
            ValueKind::Attack => &["any"],
            _ => &[],
        };
        let mut listed = std::collections::BTreeSet::new();
        for value in known.iter().copied().chain(values.iter().map(String::as_str)) {
            if listed.insert(value) {
                html.open("option", &[("value", value)]);
            }
        }
        html.close("datalist");
    }
}

/// What the sort picker calls a sort key.
fn sort_label(key: SortKey) -> &'static str {
    match key {
        SortKey::Last => "last request",
        SortKey::First => "first request",
        SortKey::Requests => "requests",
        SortKey::Duration => "duration",
        SortKey::Attacks => "attacks",
        SortKey::Risk => "risk",
    }
}

/// A picker of `(value, label)` options, the first one the default.
fn select(html: &mut Html, id: &str, field: Field, value: &str, options: &[(&str, &str)]) {
    html.open("select", &[("id", id), ("name", field.name())]);
    for &(option, label) in options {
        if option == value {
            html.element("option", &[("value", option), ("selected", "selected")], label);
        } else {
            html.element("option", &[("value", option)], label);
        }
    }
    html.close("select");
}

/// The method picker; a method outside the usual ones stays selectable when it is filtered on.
fn method_select(html: &mut Html, id: &str, value: &str) {
    html.open("select", &[("id", id), ("name", Field::Method.name())]);
    html.element("option", &[("value", "")], "any");
    let custom = (!value.is_empty() && !METHODS.contains(&value)).then_some(value);
    for method in METHODS.into_iter().chain(custom) {
        if method == value {
            html.element("option", &[("value", method), ("selected", "selected")], method);
        } else {
            html.element("option", &[("value", method)], method);
        }
    }
    html.close("select");
}

/// The relative time ranges offered beside the form: label and length.
pub const PRESETS: [(&str, i64); 4] =
    [("15 min", 15 * 60_000), ("1 h", 3_600_000), ("24 h", 86_400_000), ("7 d", 7 * 86_400_000)];

/// "Last 15 min · 1 h · 24 h · 7 d": links that set `from` that long before now and clear `to`;
/// `href` makes the address of a view from its `from`.
pub fn presets(html: &mut Html, now: Millis, href: impl Fn(Millis) -> String) {
    html.open("nav", &[("class", "presets"), ("aria-label", "Time range")]);
    html.element("span", &[("class", "muted")], "Last");
    for (label, length) in PRESETS {
        let from = Millis((now.0 - length).div_euclid(1000) * 1000);
        html.element(
            "a",
            &[("class", "preset"), ("href", &href(from)), ("data-length", &length.to_string())],
            label,
        );
    }
    html.close("nav");
}
