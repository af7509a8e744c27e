//! Business flows suggested by an endpoint's own words: `POST /auth/login` is likely `auth`,
//! `POST /v1/chat/completions` `ai_llm`. Shown apart from the flows configured with
//! `api_sessions_flow`, with the word that suggested each, so an analyst can tell a guess
//! from a fact.
//!
//! Words are taken from the template's literal segments and parameter names, and from the
//! names of the operation's parameters when an OpenAPI document defines it; placeholders the
//! explorer wrote (`{id}`, `{token}`, …) say nothing about the endpoint and are skipped. Each
//! piece is split into words at punctuation, camelCase humps and letter-to-digit changes
//! (`resetPassword`, `reset_password`, `reset-password` and `oauth2` give `reset`,
//! `password`, `oauth`), lowercased, and a word matches a rule whole, in its singular
//! (`payments`) or joined to the next word (`sign-in`, `check_out`). A word is never searched
//! for inside another, so random strings do not suggest anything.

use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::template::{EMAIL, ID, REST, TOKEN, UUID};

/// Flows and the words that suggest them, in the order suggestions are listed.
pub const RULES: &[(&str, &[&str])] = &[
    (
        "auth",
        &[
            "login",
            "logon",
            "logout",
            "logoff",
            "signin",
            "signout",
            "signon",
            "sso",
            "auth",
            "authn",
            "authenticate",
            "authentication",
            "authorize",
            "oauth",
            "oidc",
            "saml",
            "token",
            "jwt",
            "mfa",
            "2fa",
        ],
    ),
    (
        "account_creation",
        &["signup", "register", "registration", "enroll", "enrollment", "onboarding"],
    ),
    ("account_management", &["password", "passwd", "profile", "account", "recovery"]),
    ("admin", &["admin", "administrator", "administration", "superuser", "backoffice"]),
    (
        "billing",
        &[
            "payment",
            "pay",
            "checkout",
            "invoice",
            "billing",
            "subscription",
            "refund",
            "charge",
            "purchase",
        ],
    ),
    ("sms_gateway", &["sms", "otp", "mms"]),
    ("ai_llm", &["chat", "completion", "llm", "gpt", "openai", "embedding", "prompt", "inference"]),
];

/// Where a suggesting word was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Path,
    Parameter,
}

/// A suggested flow and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AutoFlow {
    pub flow: &'static str,
    /// The rule's word that matched.
    pub word: &'static str,
    #[serde(rename = "in")]
    pub source: Source,
}

/// The flows an endpoint's template and parameter names suggest, one entry per flow, in the
/// order of [`RULES`].
pub fn suggest(template: &str, parameters: &[String]) -> Vec<AutoFlow> {
    let mut path_words = Vec::new();
    let mut parameter_words = Vec::new();
    for segment in template.split('/') {
        let mut rest = segment;
        while let Some(open) = rest.find('{') {
            literal_words(&rest[..open], &mut path_words);
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            let name = &rest[open..=close];
            if ![ID, UUID, TOKEN, EMAIL, REST].contains(&name) {
                words(&name[1..name.len() - 1], &mut parameter_words);
            }
            rest = &rest[close + 1..];
        }
        literal_words(rest, &mut path_words);
    }
    for parameter in parameters {
        words(parameter, &mut parameter_words);
    }

    let mut out = Vec::new();
    for &(flow, rule_words) in RULES {
        let found = [(Source::Path, &path_words), (Source::Parameter, &parameter_words)]
            .into_iter()
            .find_map(|(source, list)| matching(rule_words, list).map(|word| (source, word)));
        if let Some((source, word)) = found {
            out.push(AutoFlow { flow, word, source });
        }
    }
    out
}

/// The first rule word that one of `list` (a sequence of words, in order) matches.
fn matching(rule_words: &[&'static str], list: &[String]) -> Option<&'static str> {
    for (i, word) in list.iter().enumerate() {
        let singular = word.strip_suffix('s').filter(|s| s.len() >= 3 && !s.ends_with('s'));
        let joined = list.get(i + 1).map(|next| format!("{word}{next}"));
        for candidate in [Some(word.as_str()), singular, joined.as_deref()].into_iter().flatten() {
            if let Some(hit) = rule_words.iter().find(|w| **w == candidate) {
                return Some(hit);
            }
        }
    }
    None
}

/// Splits a template's literal text into lowercase words, appending them to `out`.
fn literal_words(text: &str, out: &mut Vec<String>) {
    words(&percent_decode_str(text).decode_utf8_lossy(), out);
}

/// Splits text into lowercase words, appending them to `out`.
fn words(text: &str, out: &mut Vec<String>) {
    let mut word = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            flush(&mut word, out);
            continue;
        }
        if let Some(&previous) = i.checked_sub(1).and_then(|p| chars.get(p)) {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let hump = (previous.is_lowercase() && c.is_uppercase())
                || (previous.is_uppercase() && c.is_uppercase() && next_lower)
                || (previous.is_alphabetic() && c.is_ascii_digit())
                || (previous.is_ascii_digit() && c.is_uppercase());
            if hump && previous.is_alphanumeric() {
                flush(&mut word, out);
            }
        }
        word.extend(c.to_lowercase());
    }
    flush(&mut word, out);
}

fn flush(word: &mut String, out: &mut Vec<String>) {
    if !word.is_empty() {
        out.push(std::mem::take(word));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(template: &str, parameters: &[&str]) -> Vec<(&'static str, &'static str)> {
        let parameters: Vec<String> = parameters.iter().map(|p| p.to_string()).collect();
        suggest(template, &parameters).into_iter().map(|f| (f.flow, f.word)).collect()
    }

    #[test]
    fn words_split_the_usual_ways() {
        let mut out = Vec::new();
        words("resetPassword reset_password reset-password HTMLParser oauth2 2fa v1", &mut out);
        assert_eq!(
            out,
            [
                "reset", "password", "reset", "password", "reset", "password", "html", "parser",
                "oauth", "2", "2fa", "v", "1"
            ]
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(flows("/auth/login", &[]), [("auth", "auth")]);
        assert_eq!(flows("/api/v1/sign-in", &[]), [("auth", "signin")]);
        assert_eq!(flows("/users/signUp", &[]), [("account_creation", "signup")]);
        assert_eq!(flows("/users/{id}/resetPassword", &[]), [("account_management", "password")]);
        assert_eq!(flows("/admin/users/{id}", &[]), [("admin", "admin")]);
        assert_eq!(flows("/v2/payments/{uuid}", &[]), [("billing", "payment")]);
        assert_eq!(flows("/cart/check_out", &[]), [("billing", "checkout")]);
        assert_eq!(flows("/notify/sms", &[]), [("sms_gateway", "sms")]);
        assert_eq!(flows("/v1/chat/completions", &[]), [("ai_llm", "chat")]);
        assert_eq!(flows("/oauth2/token", &[]), [("auth", "oauth")]);
        assert_eq!(
            flows("/admin/billing/invoices", &[]),
            [("admin", "admin"), ("billing", "billing")]
        );
    }

    #[test]
    fn parameters_count_and_placeholders_do_not() {
        assert_eq!(flows("/verify", &["otp_code"]), [("sms_gateway", "otp")]);
        assert_eq!(flows("/reset/{resetToken}", &[]), [("auth", "token")]);
        let auth = suggest("/reset/{resetToken}", &[]);
        assert_eq!(auth[0].source, Source::Parameter);
        assert!(flows("/files/{token}", &[]).is_empty());
        assert!(flows("/users/{email}/{id}.json", &[]).is_empty());
    }

    #[test]
    fn no_substrings() {
        for template in ["/catalog/display", "/paybacks/xadminx", "/tokenizer", "/status"] {
            assert!(flows(template, &[]).is_empty(), "{template}");
        }
        // Words are whole after splitting: a camelCase hump after digits is a boundary.
        assert_eq!(flows("/k9LoginQz", &[]), [("auth", "login")]);
        // Literal text is decoded first: encoded braces are not a parameter.
        assert_eq!(flows("/%7Bsms%7D", &[]), [("sms_gateway", "sms")]);
    }
}
