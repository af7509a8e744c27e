//! Which endpoint a request called and which object it named: `GET /orders/17` is the
//! endpoint `GET /orders/{id}` on object `17`.
//!
//! This is the detector's own small templating, behind [`endpoint_of`]; the explorer's endpoint
//! catalogue will provide the one templating of the project and replace it here.

/// The longest template kept, in bytes; longer paths are cut at a segment boundary.
const MAX_TEMPLATE: usize = 200;

/// The segments of a path looked at; the rest is left out of the template.
const MAX_SEGMENTS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `METHOD /path/{placeholder}`.
    pub template: String,
    /// The values the placeholders stood for, joined by `/`, when there are any.
    pub object: Option<String>,
}

/// The endpoint of a request: path segments that are numbers become `{id}`, UUIDs `{uuid}`,
/// e-mail addresses `{email}`, and long hex or token-like strings `{token}`.
pub fn endpoint_of(method: &str, path: &str) -> Endpoint {
    let mut template = String::with_capacity(method.len() + path.len().min(MAX_TEMPLATE) + 1);
    template.push_str(method);
    template.push(' ');
    let mut object: Option<String> = None;
    let path = path.strip_prefix('/').unwrap_or(path);
    for segment in path.split('/').take(MAX_SEGMENTS) {
        let placeholder = placeholder_of(segment);
        let piece = placeholder.unwrap_or(segment);
        if template.len() + piece.len() + 1 > MAX_TEMPLATE {
            break;
        }
        template.push('/');
        template.push_str(piece);
        if placeholder.is_some() {
            let object = object.get_or_insert_with(String::new);
            if !object.is_empty() {
                object.push('/');
            }
            object.push_str(segment);
        }
    }
    Endpoint { template, object }
}

fn placeholder_of(segment: &str) -> Option<&'static str> {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return Some("{id}");
    }
    if is_uuid(bytes) {
        return Some("{uuid}");
    }
    if is_email(segment) {
        return Some("{email}");
    }
    if is_token(bytes) {
        return Some("{token}");
    }
    None
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_email(segment: &str) -> bool {
    // Most segments have no `@`: they are told apart without a copy.
    if !segment.contains('@') && !segment.contains("%40") {
        return false;
    }
    let segment = segment.replace("%40", "@");
    match segment.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    }
}

/// Hex of 16 digits or more (hashes, object ids), or 24 characters or more of the URL-safe
/// base64 alphabet mixing upper case, lower case and digits (API keys, signed tokens): words
/// and slugs have no such mix.
fn is_token(bytes: &[u8]) -> bool {
    if bytes.len() >= 16 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return bytes.iter().any(u8::is_ascii_digit);
    }
    bytes.len() >= 24
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes.iter().any(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(method: &str, path: &str) -> (String, Option<String>) {
        let endpoint = endpoint_of(method, path);
        (endpoint.template, endpoint.object)
    }

    #[test]
    fn placeholders() {
        assert_eq!(template("GET", "/orders/17"), ("GET /orders/{id}".into(), Some("17".into())));
        assert_eq!(
            template("PATCH", "/users/5/orders/9"),
            ("PATCH /users/{id}/orders/{id}".into(), Some("5/9".into()))
        );
        assert_eq!(
            template("GET", "/files/3f2a6c1e-9b7d-4e2a-8c1f-0a1b2c3d4e5f"),
            ("GET /files/{uuid}".into(), Some("3f2a6c1e-9b7d-4e2a-8c1f-0a1b2c3d4e5f".into()))
        );
        assert_eq!(template("GET", "/u/bob%40example.com").0, "GET /u/{email}");
        assert_eq!(template("GET", "/k/9f86d081884c7d65").0, "GET /k/{token}");
        assert_eq!(template("GET", "/k/aZ3kQ9xV2mN7pL4tR8sW1yB6").0, "GET /k/{token}");
    }

    #[test]
    fn words_stay() {
        assert_eq!(template("GET", "/api/products"), ("GET /api/products".into(), None));
        assert_eq!(template("GET", "/"), ("GET /".into(), None));
        assert_eq!(template("GET", "/static/app.3f2a.js").0, "GET /static/app.3f2a.js");
        assert_eq!(
            template("GET", "/blog/summer-sale-announcement-2026").0,
            "GET /blog/summer-sale-announcement-2026"
        );
        assert_eq!(template("GET", "/deadbeefcafebabe").0, "GET /deadbeefcafebabe");
    }

    #[test]
    fn bounded() {
        let long = "/a".repeat(10_000);
        let endpoint = endpoint_of("GET", &long);
        assert!(endpoint.template.len() <= MAX_TEMPLATE);
        let ids = "/1".repeat(10_000);
        let endpoint = endpoint_of("GET", &ids);
        assert_eq!(endpoint.object.unwrap().len(), 2 * MAX_SEGMENTS - 1);
    }
}
