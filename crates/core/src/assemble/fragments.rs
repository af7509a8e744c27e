//! The parts of a location's records that depend only on its settings: each parameter's
//! `{"name":...,"source":...,"type":...,"value":` and the `flows` array. They are written once
//! per location, on the first record, instead of escaped anew for every record.

use std::sync::OnceLock;

use super::json;
use crate::profile::Profile;

/// Lazily built from the profile holding it.
#[derive(Clone, Debug, Default)]
pub struct Fragments(OnceLock<Built>);

#[derive(Clone, Debug)]
pub struct Built {
    /// Per parameter, everything before its value.
    pub params: Vec<Vec<u8>>,
    /// The whole `flows` array.
    pub flows: Vec<u8>,
}

// Derived data: two profiles with the same settings are equal whatever was built.
impl PartialEq for Fragments {
    fn eq(&self, _: &Fragments) -> bool {
        true
    }
}

impl Eq for Fragments {}

impl Fragments {
    /// The fragments of `profile`, which must be the profile holding them.
    pub fn get(&self, profile: &Profile) -> &Built {
        self.0.get_or_init(|| {
            let params = profile
                .params
                .iter()
                .map(|spec| {
                    let mut out = b"{\"name\":".to_vec();
                    json::string(&mut out, spec.name.as_bytes());
                    out.extend_from_slice(b",\"source\":");
                    json::string(&mut out, spec.source_text.as_bytes());
                    out.extend_from_slice(b",\"type\":\"");
                    out.extend_from_slice(spec.kind.as_str().as_bytes());
                    out.extend_from_slice(b"\",\"value\":");
                    out
                })
                .collect();
            let mut flows = b"[".to_vec();
            for (i, flow) in profile.flows.iter().enumerate() {
                if i > 0 {
                    flows.push(b',');
                }
                json::string(&mut flows, flow.as_bytes());
            }
            flows.push(b']');
            Built { params, flows }
        })
    }
}
