//! The endpoints a store keeps, capped: a content scanner requesting 100,000 made-up paths
//! must not make 100,000 endpoints.
//!
//! The registry admits endpoints per server in the order the store ingests them: the first
//! [`Limits::per_server`] templates that no OpenAPI document defines are kept, and later new
//! ones fold into the server's `* {other}` endpoint, which counts their requests. Templates
//! from a document are always admitted (the document bounds them) and do not count. Servers
//! come from the `Host` header, so they are capped too: past [`Limits::servers`], new servers
//! fold into the server `{other}`, which keeps endpoints under the same per-server cap.
//!
//! The store persists what was admitted (server, method, template, and whether it counts) and
//! hands it back with [`Registry::restore`] when it opens, so decisions survive restarts, and
//! two stores fed the same records in the same order admit the same endpoints. When retention
//! removes the last hour of an endpoint, [`Registry::forget`] frees its place.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The template and server that folded endpoints and servers are counted under. Neither can
/// be a real template (templates start with `/`) nor a method (`*` is not one).
pub const OTHER: &str = "{other}";
pub const OTHER_METHOD: &str = "*";

/// How many endpoints and servers are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Templates per server not defined by an OpenAPI document.
    pub per_server: usize,
    pub servers: usize,
}

impl Default for Limits {
    /// A real API has tens to a few hundred endpoints per host: 2,000 leaves room for
    /// undocumented ones and templates the rules could not generalise, and 100 hosts cover
    /// virtual hosting. At most 200,000 endpoints, some 30 MB.
    fn default() -> Self {
        Limits { per_server: 2000, servers: 100 }
    }
}

/// Whether an endpoint was seen before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Known,
    /// Admitted now: the store records it.
    New,
    /// Past the cap: counted under [`OTHER`]. New the first time a server folds.
    Folded {
        new: bool,
    },
}

/// The endpoint a request is counted under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted<'a> {
    pub server: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub template: Cow<'a, str>,
    pub admission: Admission,
}

#[derive(Debug, Default)]
struct Server {
    endpoints: HashSet<(Box<str>, Box<str>)>,
    /// Endpoints counted against the cap.
    counted: usize,
}

/// The endpoints admitted so far, per server.
#[derive(Debug, Default)]
pub struct Registry {
    limits: Limits,
    servers: HashMap<Box<str>, Server>,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Registry { limits, servers: HashMap::new() }
    }

    /// Puts back an endpoint the store holds, whatever the limits: `counted` is whether it was
    /// counted against the cap when admitted.
    pub fn restore(&mut self, server: &str, method: &str, template: &str, counted: bool) {
        let entry = self.servers.entry(server.into()).or_default();
        if entry.endpoints.insert((method.into(), template.into())) && counted {
            entry.counted += 1;
        }
    }

    /// Removes an endpoint the store no longer holds.
    pub fn forget(&mut self, server: &str, method: &str, template: &str, counted: bool) {
        if let Some(entry) = self.servers.get_mut(server) {
            if entry.endpoints.remove(&(method.into(), template.into())) && counted {
                entry.counted -= 1;
            }
            if entry.endpoints.is_empty() {
                self.servers.remove(server);
            }
        }
    }

    /// The endpoint a request of `server` with this method and template is counted under;
    /// `documented` when the template comes from an OpenAPI document.
    pub fn admit<'a>(
        &mut self,
        server: &'a str,
        method: &'a str,
        template: &'a str,
        documented: bool,
    ) -> Admitted<'a> {
        let server_name: Cow<'a, str> = if self.servers.contains_key(server)
            || self.servers.len() < self.limits.servers
            || server == OTHER
        {
            Cow::Borrowed(server)
        } else {
            Cow::Borrowed(OTHER)
        };
        let entry = self.servers.entry(server_name.as_ref().into()).or_default();
        let key = (Box::<str>::from(method), Box::<str>::from(template));
        let admission = if entry.endpoints.contains(&key) {
            Admission::Known
        } else if documented || entry.counted < self.limits.per_server {
            entry.endpoints.insert(key);
            entry.counted += usize::from(!documented);
            Admission::New
        } else {
            let other = (Box::<str>::from(OTHER_METHOD), Box::<str>::from(OTHER));
            let new = entry.endpoints.insert(other);
            return Admitted {
                server: server_name,
                method: Cow::Borrowed(OTHER_METHOD),
                template: Cow::Borrowed(OTHER),
                admission: Admission::Folded { new },
            };
        };
        Admitted {
            server: server_name,
            method: Cow::Borrowed(method),
            template: Cow::Borrowed(template),
            admission,
        }
    }

    /// Endpoints kept, over all servers.
    pub fn len(&self) -> usize {
        self.servers.values().map(|s| s.endpoints.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &Admitted<'_>) -> String {
        format!("{} {} {}", a.server, a.method, a.template)
    }

    #[test]
    fn folds_past_the_cap_and_keeps_documented_templates() {
        let mut r = Registry::new(Limits { per_server: 2, servers: 10 });
        assert_eq!(r.admit("h", "GET", "/a", false).admission, Admission::New);
        assert_eq!(r.admit("h", "GET", "/a", false).admission, Admission::Known);
        assert_eq!(r.admit("h", "POST", "/a", false).admission, Admission::New);
        let folded = r.admit("h", "GET", "/c", false);
        assert_eq!(key(&folded), "h * {other}");
        assert_eq!(folded.admission, Admission::Folded { new: true });
        assert_eq!(r.admit("h", "GET", "/d", false).admission, Admission::Folded { new: false });
        // Documented templates are kept past the cap and do not count.
        assert_eq!(r.admit("h", "GET", "/spec/{id}", true).admission, Admission::New);
        assert_eq!(r.admit("h", "GET", "/spec/{id}", true).admission, Admission::Known);
        // Known templates stay known.
        assert_eq!(r.admit("h", "GET", "/a", false).admission, Admission::Known);
        // Another server has its own cap.
        assert_eq!(r.admit("g", "GET", "/c", false).admission, Admission::New);
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn servers_are_capped() {
        let mut r = Registry::new(Limits { per_server: 1, servers: 2 });
        r.admit("a", "GET", "/", false);
        r.admit("b", "GET", "/", false);
        let c = r.admit("c", "GET", "/x", false);
        assert_eq!((key(&c), c.admission), ("{other} GET /x".into(), Admission::New));
        let d = r.admit("d", "GET", "/y", false);
        assert_eq!(key(&d), "{other} * {other}");
        assert_eq!(r.admit("a", "GET", "/", false).admission, Admission::Known);
    }

    #[test]
    fn restored_and_forgotten() {
        let mut r = Registry::new(Limits { per_server: 2, servers: 10 });
        r.restore("h", "GET", "/a", true);
        r.restore("h", "GET", "/spec", false);
        r.restore("h", "GET", "/b", true);
        assert_eq!(r.admit("h", "GET", "/c", false).admission, Admission::Folded { new: true });
        r.forget("h", "GET", "/a", true);
        assert_eq!(r.admit("h", "GET", "/c", false).admission, Admission::New);
        r.forget("h", "GET", "/spec", false);
        r.forget("h", "GET", "/b", true);
        r.forget("h", "GET", "/c", true);
        r.forget("h", OTHER_METHOD, OTHER, false);
        assert!(r.is_empty());
    }

    #[test]
    fn the_same_order_gives_the_same_endpoints() {
        let requests: Vec<(String, String)> = (0..5000u32)
            .map(|i| (format!("h{}", i % 7), format!("/p{}", i.wrapping_mul(2_654_435_761) % 900)))
            .collect();
        let run = || {
            let mut r = Registry::new(Limits { per_server: 50, servers: 5 });
            requests.iter().map(|(h, p)| key(&r.admit(h, "GET", p, false))).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|k| k.ends_with("* {other}")));
        assert!(first.iter().any(|k| k.starts_with("{other} ")));
    }
}
