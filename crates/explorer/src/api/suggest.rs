//! `GET /api/suggest`: values seen in the sessions for a filter input (users, roles, flows,
//! attack types, User-Agents), so that people type what the data holds.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::error::{Error, ErrorBody};
use crate::store::values::{ValueKind, SUGGESTIONS_MAX};

/// Suggestions when `limit` does not say.
const DEFAULT_LIMIT: usize = 20;

/// The query string of `GET /api/suggest`; any other parameter is refused.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuggestParams {
    /// The filter to suggest values for: `user`, `role`, `flow`, `attack` or `ua`.
    #[param(required = true, value_type = String, pattern = "^(user|role|flow|attack|ua)$")]
    pub field: Option<String>,
    /// What the values start with (for `ua`: contain), case-insensitively; empty or absent for
    /// any.
    pub prefix: Option<String>,
    /// Values at most, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

impl SuggestParams {
    /// The kind of value, the text and the number asked for.
    pub fn parse(&self) -> Result<(ValueKind, String, usize), String> {
        let kinds = || ValueKind::ALL.map(ValueKind::name).join(", ");
        let field = match self.field.as_deref().map(str::trim) {
            None | Some("") => return Err(format!("missing \"field\": one of {}", kinds())),
            Some(text) => ValueKind::parse(text).ok_or_else(|| {
                format!("invalid \"field\" \"{text}\": expected one of {}", kinds())
            })?,
        };
        let limit = match self.limit.as_deref().map(str::trim).filter(|text| !text.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=SUGGESTIONS_MAX).contains(&limit) => limit,
                _ => {
                    return Err(format!(
                        "invalid \"limit\" \"{text}\": expected 1 to {SUGGESTIONS_MAX}"
                    ))
                }
            },
        };
        Ok((field, self.prefix.clone().unwrap_or_default(), limit))
    }
}

/// Values seen in the retained sessions.
#[derive(Serialize, ToSchema)]
pub struct Suggestions {
    /// The `field` asked for.
    pub field: String,
    /// One value per spelling that differs only in case, in alphabetical order of their
    /// lowercase forms.
    pub values: Vec<String>,
}

/// Values seen in the sessions for a filter, starting with `prefix` (for `ua`: containing it).
#[utoipa::path(
    get,
    path = "/api/suggest",
    operation_id = "suggest",
    tag = "sessions",
    params(SuggestParams),
    responses(
        (status = 200, description = "The values, at most `limit`.", body = Suggestions),
        (status = 400, description = "A parameter is invalid or missing; the message names it.",
         body = ErrorBody),
        (status = 401, description = "A UI token is set and the request has neither it nor a login.",
         body = ErrorBody),
        (status = 503, description = "The store failed.", body = ErrorBody),
    ),
    security(("ui_token" = []), ("login_cookie" = []), ())
)]
pub async fn suggest(
    State(app): State<Arc<AppState>>,
    params: Result<Query<SuggestParams>, QueryRejection>,
) -> Result<Json<Suggestions>, Error> {
    let Query(params) = params.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let (kind, prefix, limit) = params.parse().map_err(Error::BadRequest)?;
    let values = app.with_store(move |store| store.suggest(kind, &prefix, limit)).await?;
    Ok(Json(Suggestions { field: kind.name().to_owned(), values }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> SuggestParams {
        serde_urlencoded::from_str(query).unwrap()
    }

    #[test]
    fn fields_and_limits_are_checked() {
        assert_eq!(
            params("field=ua&prefix=Cu").parse(),
            Ok((ValueKind::UserAgent, "Cu".into(), 20))
        );
        assert_eq!(
            params("field=flow&limit=100").parse(),
            Ok((ValueKind::Flow, String::new(), 100))
        );
        let err = params("prefix=a").parse().unwrap_err();
        assert!(err.starts_with("missing \"field\""), "{err}");
        let err = params("field=users").parse().unwrap_err();
        assert!(
            err.starts_with("invalid \"field\" \"users\": expected one of user, role"),
            "{err}"
        );
        for bad in ["0", "101", "x"] {
            let err = params(&format!("field=user&limit={bad}")).parse().unwrap_err();
            assert!(err.starts_with("invalid \"limit\""), "{err}");
        }
        assert!(serde_urlencoded::from_str::<SuggestParams>("field=user&q=a").is_err());
    }
}
