//! `api_sessions_key` and `api_sessions_param`: a SOURCE and its compiled complex value.

use core::ptr::NonNull;

use api_sessions_core::profile::{KeySpec, ParamSpec, Source, SourceError};
use api_sessions_core::record::ParamKind;
use nginx_sys::{ngx_conf_t, ngx_http_complex_value_t, ngx_str_t};

use super::compile_complex_value;
use crate::util::conf_str;

/// A compiled complex value in the cycle pool.
#[derive(Clone, Copy, Debug)]
pub struct ComplexValue(NonNull<ngx_http_complex_value_t>);

impl ComplexValue {
    pub fn as_ptr(&self) -> *mut ngx_http_complex_value_t {
        self.0.as_ptr()
    }
}

/// Why a source was refused.
pub enum CompileError {
    Invalid(SourceError),
    /// nginx has already logged why the complex value does not compile.
    Logged,
}

/// Compiles the variable part of a source; body sources have none.
fn compile(
    cf: &mut ngx_conf_t,
    text: ngx_str_t,
) -> Result<(Source, Option<ComplexValue>), CompileError> {
    let source = Source::parse(&conf_str(text.as_bytes())).map_err(CompileError::Invalid)?;
    let cv = match source {
        Source::Variable(_) => {
            Some(ComplexValue(compile_complex_value(cf, text).ok_or(CompileError::Logged)?))
        }
        _ => None,
    };
    Ok((source, cv))
}

/// One `api_sessions_key`.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub spec: KeySpec,
    pub value: Option<ComplexValue>,
}

impl KeyEntry {
    pub fn compile(
        cf: &mut ngx_conf_t,
        text: ngx_str_t,
        label: Option<String>,
    ) -> Result<KeyEntry, CompileError> {
        let (source, value) = compile(cf, text)?;
        let label = label.unwrap_or_else(|| source.text());
        Ok(KeyEntry { spec: KeySpec { source, label }, value })
    }
}

/// `name=`, `type=` and `hash` of `api_sessions_param`.
#[derive(Default)]
pub struct ParamOptions {
    name: Option<String>,
    kind: Option<ParamKind>,
    pub hashed: bool,
}

impl ParamOptions {
    /// Applies one option argument; the error is the start of an nginx message.
    pub fn apply(&mut self, arg: &[u8]) -> Result<(), &'static str> {
        if let Some(name) = arg.strip_prefix(b"name=") {
            if name.is_empty() || self.name.is_some() {
                return Err("invalid parameter");
            }
            self.name = Some(conf_str(name));
        } else if let Some(kind) = arg.strip_prefix(b"type=") {
            let kind = std::str::from_utf8(kind).ok().and_then(ParamKind::parse);
            match (kind, self.kind) {
                (Some(kind), None) => self.kind = Some(kind),
                _ => return Err("invalid parameter"),
            }
        } else if arg == b"hash" && !self.hashed {
            self.hashed = true;
        } else {
            return Err("invalid parameter");
        }
        Ok(())
    }
}

/// One `api_sessions_param`.
#[derive(Clone, Debug)]
pub struct ParamEntry {
    pub spec: ParamSpec,
    pub value: Option<ComplexValue>,
}

impl ParamEntry {
    pub fn compile(
        cf: &mut ngx_conf_t,
        text: ngx_str_t,
        options: ParamOptions,
    ) -> Result<ParamEntry, CompileError> {
        let (source, value) = compile(cf, text)?;
        let source_text = source.text();
        Ok(ParamEntry {
            spec: ParamSpec {
                name: options.name.unwrap_or_else(|| source_text.clone()),
                source_text,
                source,
                kind: options.kind.unwrap_or_default(),
                hashed: options.hashed,
            },
            value,
        })
    }
}
