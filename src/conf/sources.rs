//! `api_sessions_key` and `api_sessions_param`: a SOURCE and its compiled complex value.

use core::ptr::NonNull;

use api_sessions_core::profile::{KeySpec, ParamSpec, Source, SourceError};
use api_sessions_core::record::ParamKind;
use nginx_sys::{ngx_conf_t, ngx_http_complex_value_t, ngx_str_t, ngx_uint_t};

use super::compile_complex_value;
use crate::util::conf_str;

/// How the value of a variable source is read at the log phase.
#[derive(Clone, Copy, Debug)]
pub enum SourceValue {
    /// The source is one variable, `$name` or `${name}`: read from its slot, flushed, as
    /// the complex value would, but without running a script, allocating and copying.
    /// Sources are mostly this, several per request.
    Variable(ngx_uint_t),
    /// Anything else (`$a:$b`, text around variables): a complex value in the cycle pool.
    Complex(NonNull<ngx_http_complex_value_t>),
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
) -> Result<(Source, Option<SourceValue>), CompileError> {
    let source = Source::parse(&conf_str(text.as_bytes())).map_err(CompileError::Invalid)?;
    let Source::Variable(_) = source else { return Ok((source, None)) };
    let value = match source.single_variable() {
        Some(name) => {
            let mut name = ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() };
            // SAFETY: cf is the configuration being parsed; nginx copies the name when it
            // adds the variable. It reports unknown variables itself at the end of the
            // configuration, as it does for a complex value.
            let index = unsafe { nginx_sys::ngx_http_get_variable_index(cf, &mut name) };
            let index = ngx_uint_t::try_from(index).map_err(|_| CompileError::Logged)?;
            SourceValue::Variable(index)
        }
        None => SourceValue::Complex(compile_complex_value(cf, text).ok_or(CompileError::Logged)?),
    };
    Ok((source, Some(value)))
}

/// One `api_sessions_key`.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub spec: KeySpec,
    pub value: Option<SourceValue>,
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
    pub value: Option<SourceValue>,
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
