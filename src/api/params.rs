//! Typed access to a verb's parameters, with errors that name the parameter.
//!
//! Parameters arrive by name (an object) or by position (an array, in the
//! schema's order). Type errors and missing parameters are JSON-RPC "invalid
//! params" (-32602); well-typed but invalid values (a malformed UUID, a bad
//! size) are VDSM's InvalidParameterException (1000).

use serde_json::{Map, Value};

use super::errors::{ApiError, INVALID_PARAMETER};
use crate::types::{parse_uuid, Uuid};

pub struct Params {
    map: Map<String, Value>,
    /// What the verb declares: a handler asking for anything else has a
    /// typo that would silently ignore what the client sent.
    names: Vec<String>,
}

/// Anything parsed from a JSON value with a list of accepted values.
pub trait FromParam: Sized {
    fn from_param(v: &Value) -> Option<Self>;
    fn expected() -> String;
}

macro_rules! enum_param {
    ($($t:ty),*) => {$(
        impl FromParam for $t {
            fn from_param(v: &Value) -> Option<Self> {
                <$t>::from_json(v)
            }
            fn expected() -> String {
                <$t>::expected()
            }
        }
    )*};
}

enum_param!(
    crate::types::DomainType,
    crate::types::DomainClass,
    crate::types::VolumeFormat,
    crate::types::VolumeAllocation,
    crate::types::VolumeLegality,
    crate::types::VolumeRole,
    crate::types::DiskType,
    crate::types::ImageMoveOperation
);

impl Params {
    /// Builds the parameter map; `names` is the verb's schema order.
    pub fn new(raw: Option<&Value>, names: &[&str]) -> Result<Params, ApiError> {
        let map = match raw {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => {
                if let Some(unknown) = m.keys().find(|k| !names.contains(&k.as_str())) {
                    return Err(ApiError::invalid_params(format!(
                        "unknown parameter '{unknown}' (accepted: {})",
                        names.join(", ")
                    )));
                }
                m.clone()
            }
            Some(Value::Array(a)) => {
                if a.len() > names.len() {
                    return Err(ApiError::invalid_params(format!(
                        "{} positional parameters given, at most {} accepted ({})",
                        a.len(),
                        names.len(),
                        names.join(", ")
                    )));
                }
                names
                    .iter()
                    .zip(a)
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect()
            }
            Some(_) => {
                return Err(ApiError::new(
                    super::errors::INVALID_REQUEST,
                    "params must be an object or an array",
                ))
            }
        };
        Ok(Params {
            map,
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        debug_assert!(
            self.names.iter().any(|n| n == name),
            "a handler reads parameter {name:?}, which its verb does not declare ({:?})",
            self.names
        );
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&Value, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::invalid_params(format!("missing required parameter '{name}'")))
    }

    pub fn uuid(&self, name: &str) -> Result<Uuid, ApiError> {
        uuid_value(name, self.required(name)?)
    }

    pub fn opt_uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.get(name).map(|v| uuid_value(name, v)).transpose()
    }

    pub fn string(&self, name: &str) -> Result<String, ApiError> {
        string_value(name, self.required(name)?)
    }

    pub fn opt_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.get(name).map(|v| string_value(name, v)).transpose()
    }

    /// Booleans; older clients send "true"/"false" strings.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(type_error(name, "a boolean", v)),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        Ok(self.opt_bool(name)?.unwrap_or(default))
    }

    /// Integers, as numbers or numeric strings.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| type_error(name, "an integer", &Value::Number(n.clone()))),
            Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::new(
                    INVALID_PARAMETER,
                    format!("invalid parameter '{name}': {s:?} is not an integer"),
                )
            }),
            Some(v) => Err(type_error(name, "an integer", v)),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_int(name)?
            .ok_or_else(|| ApiError::invalid_params(format!("missing required parameter '{name}'")))
    }

    /// A non-negative integer within `u32`.
    pub fn opt_u32(&self, name: &str) -> Result<Option<u32>, ApiError> {
        self.opt_int(name)?
            .map(|n| {
                u32::try_from(n).map_err(|_| {
                    ApiError::new(
                        INVALID_PARAMETER,
                        format!("invalid parameter '{name}': {n} is out of range"),
                    )
                })
            })
            .transpose()
    }

    /// A size in bytes: a number or a decimal string, never negative.
    pub fn opt_size(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let bad = |what: String| {
            ApiError::new(
                INVALID_PARAMETER,
                format!("invalid parameter '{name}': {what}"),
            )
        };
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => Err(bad(format!(
                    "{n} is not a non-negative whole number of bytes"
                ))),
            },
            Some(Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!(
                        "{s:?} is not a non-negative whole number of bytes"
                    )));
                }
                t.parse::<u64>()
                    .map(Some)
                    .map_err(|_| bad(format!("{s:?} is too large")))
            }
            Some(v) => Err(type_error(name, "a size in bytes (string or number)", v)),
        }
    }

    pub fn size(&self, name: &str) -> Result<u64, ApiError> {
        self.opt_size(name)?
            .ok_or_else(|| ApiError::invalid_params(format!("missing required parameter '{name}'")))
    }

    pub fn opt_enum<T: FromParam>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                T::from_param(v).ok_or_else(|| {
                    ApiError::invalid_params(format!(
                        "invalid value {v} for '{name}'; expected one of: {}",
                        T::expected()
                    ))
                })
            })
            .transpose()
    }

    pub fn enumeration<T: FromParam>(&self, name: &str) -> Result<T, ApiError> {
        self.opt_enum(name)?
            .ok_or_else(|| ApiError::invalid_params(format!("missing required parameter '{name}'")))
    }

    pub fn list(&self, name: &str) -> Result<&Vec<Value>, ApiError> {
        match self.required(name)? {
            Value::Array(a) => Ok(a),
            v => Err(type_error(name, "a list", v)),
        }
    }

    pub fn opt_value(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

pub fn uuid_value(name: &str, v: &Value) -> Result<Uuid, ApiError> {
    match v {
        Value::String(s) => parse_uuid(s).ok_or_else(|| {
            ApiError::new(
                INVALID_PARAMETER,
                format!("invalid parameter '{name}': {s:?} is not a UUID (lower-case, 8-4-4-4-12 hex digits)"),
            )
        }),
        v => Err(type_error(name, "a UUID string", v)),
    }
}

fn string_value(name: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        v => Err(type_error(name, "a string", v)),
    }
}

fn type_error(name: &str, expected: &str, got: &Value) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    ApiError::invalid_params(format!("parameter '{name}' must be {expected}, got {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positional_and_named() {
        let names = ["a", "b"];
        let p = Params::new(Some(&json!(["x", 2])), &names).unwrap();
        assert_eq!(p.string("a").unwrap(), "x");
        assert_eq!(p.int("b").unwrap(), 2);
        assert!(Params::new(Some(&json!(["x", 2, 3])), &names).is_err());
        let e = Params::new(Some(&json!({"c": 1})), &names).err().unwrap();
        assert_eq!(e.code, -32602);
        assert!(e.message.contains("'c'"));
    }

    #[test]
    fn sizes() {
        let names = ["size"];
        let ok = |v: Value| {
            Params::new(Some(&json!({ "size": v })), &names)
                .unwrap()
                .size("size")
        };
        assert_eq!(ok(json!("1024")).unwrap(), 1024);
        assert_eq!(ok(json!(1024)).unwrap(), 1024);
        assert_eq!(ok(json!("-1")).unwrap_err().code, 1000);
        assert_eq!(ok(json!(-1)).unwrap_err().code, 1000);
        assert_eq!(ok(json!(1.5)).unwrap_err().code, 1000);
        assert_eq!(ok(json!("1e3")).unwrap_err().code, 1000);
        assert_eq!(ok(json!(true)).unwrap_err().code, -32602);
    }

    #[test]
    fn uuids_and_enums() {
        let names = ["id", "fmt"];
        let p = Params::new(Some(&json!({"id": "nope", "fmt": "QED"})), &names).unwrap();
        assert_eq!(p.uuid("id").unwrap_err().code, 1000);
        let e = p
            .enumeration::<crate::types::VolumeFormat>("fmt")
            .unwrap_err();
        assert_eq!(e.code, -32602);
        assert!(e.message.contains("COW (4)"));
    }
}
