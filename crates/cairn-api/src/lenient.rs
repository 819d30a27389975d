//! Lenient deserializers for request bodies (wire rule W7).
//!
//! Real clients send `"place_count": "2"` (the CLI), numbers as property
//! values (Proxmox), `null` for unset fields (python-linstor) and booleans as
//! `"True"`. These helpers accept all of that and still reject what cannot be
//! meant (a word where a number belongs), so the caller gets a clear 400.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::Props;

/// A JSON scalar as a client may send it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Bool(b) => {
                if b {
                    "true".into()
                } else {
                    "false".into()
                }
            }
            Scalar::Int(i) => i.to_string(),
            Scalar::UInt(u) => u.to_string(),
            Scalar::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    format!("{}", f as i64)
                } else {
                    f.to_string()
                }
            }
            Scalar::Str(s) => s,
        }
    }
}

/// Parses a boolean the way LINSTOR clients write it: `true`, `True`,
/// `FALSE`, `yes`, `1`...
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Some(true),
        "false" | "no" | "0" | "off" => Some(false),
        _ => None,
    }
}

fn scalar_to_i64<E: de::Error>(s: Scalar) -> Result<i64, E> {
    match s {
        Scalar::Int(i) => Ok(i),
        Scalar::UInt(u) => i64::try_from(u).map_err(|_| E::custom(format!("number {u} is too large"))),
        Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        Scalar::Float(f) => Err(E::custom(format!("expected an integer, got {f}"))),
        Scalar::Str(s) => s.trim().parse::<i64>().map_err(|_| E::custom(format!("expected an integer, got \"{s}\""))),
        Scalar::Bool(b) => Err(E::custom(format!("expected an integer, got {b}"))),
    }
}

/// `Option<i64>` from a number, a numeric string or `null`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(s) => scalar_to_i64(s).map(Some),
    }
}

/// `Option<f64>` from a number, a numeric string or `null`.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Int(i)) => Ok(Some(i as f64)),
        Some(Scalar::UInt(u)) => Ok(Some(u as f64)),
        Some(Scalar::Float(f)) => Ok(Some(f)),
        Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Scalar::Str(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| de::Error::custom(format!("expected a number, got \"{s}\""))),
        Some(Scalar::Bool(b)) => Err(de::Error::custom(format!("expected a number, got {b}"))),
    }
}

/// `Option<bool>` from a boolean, a boolean-like string, 0/1 or `null`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Bool(b)) => Ok(Some(b)),
        Some(Scalar::Int(0)) | Some(Scalar::UInt(0)) => Ok(Some(false)),
        Some(Scalar::Int(1)) | Some(Scalar::UInt(1)) => Ok(Some(true)),
        Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Scalar::Str(s)) => parse_bool(&s).map(Some).ok_or_else(|| de::Error::custom(format!("expected a boolean, got \"{s}\""))),
        Some(other) => Err(de::Error::custom(format!("expected a boolean, got {other:?}"))),
    }
}

/// `bool` where `null` or absence means `false`.
pub fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    opt_bool(d).map(|b| b.unwrap_or(false))
}

/// `Option<String>` from a string, a number, a boolean or `null`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_string))
}

/// `String` where `null` or absence means empty.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    opt_string(d).map(Option::unwrap_or_default)
}

/// A list of strings; `null` is empty, a lone scalar is a one-element list.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<Option<Scalar>>()? {
                if let Some(s) = item {
                    out.push(s.into_string());
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// `Option<Vec<String>>`: absent or `null` is `None` ("no change"), a list is
/// `Some` (possibly empty, meaning "clear").
pub fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    string_list(v).map(Some).map_err(de::Error::custom)
}

/// A property map whose values may be any JSON scalar; `null` values are
/// dropped, a `null` map is empty.
pub fn props<'de, D: Deserializer<'de>>(d: D) -> Result<Props, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Props;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of property keys and values")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Props::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Props::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, Option<Scalar>>()? {
                if let Some(v) = v {
                    out.insert(k, v.into_string());
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// A map of string to integer (`x_replicas_on_different_map`), lenient on values.
pub fn int_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, i64>, D::Error> {
    let raw = Option::<BTreeMap<String, Option<Scalar>>>::deserialize(d)?.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        if let Some(v) = v {
            out.insert(k, scalar_to_i64(v)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct T {
        #[serde(deserialize_with = "opt_i64")]
        n: Option<i64>,
        #[serde(deserialize_with = "props")]
        p: Props,
        #[serde(deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(deserialize_with = "string_list")]
        l: Vec<String>,
        #[serde(deserialize_with = "opt_string_list")]
        ol: Option<Vec<String>>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn numeric_string_becomes_integer() {
        assert_eq!(parse(r#"{"n":"2"}"#).unwrap().n, Some(2));
        assert_eq!(parse(r#"{"n":3}"#).unwrap().n, Some(3));
        assert_eq!(parse(r#"{"n":4.0}"#).unwrap().n, Some(4));
        assert_eq!(parse(r#"{"n":null}"#).unwrap().n, None);
    }

    #[test]
    fn non_numeric_string_is_rejected() {
        let err = parse(r#"{"n":"two"}"#).unwrap_err().to_string();
        assert!(err.contains("expected an integer"), "{err}");
        assert!(parse(r#"{"n":1.5}"#).is_err());
    }

    #[test]
    fn property_values_of_any_scalar_become_strings() {
        let t = parse(r#"{"p":{"Aux/pm/vmid":100,"a":"x","b":true,"c":null}}"#).unwrap();
        assert_eq!(t.p.get("Aux/pm/vmid").map(String::as_str), Some("100"));
        assert_eq!(t.p.get("b").map(String::as_str), Some("true"));
        assert!(!t.p.contains_key("c"));
        assert!(parse(r#"{"p":null}"#).unwrap().p.is_empty());
    }

    #[test]
    fn booleans_are_case_insensitive() {
        assert_eq!(parse(r#"{"b":"True"}"#).unwrap().b, Some(true));
        assert_eq!(parse(r#"{"b":"FALSE"}"#).unwrap().b, Some(false));
        assert_eq!(parse(r#"{"b":null}"#).unwrap().b, None);
        assert!(parse(r#"{"b":"maybe"}"#).is_err());
    }

    #[test]
    fn lists_accept_null_and_scalars() {
        assert!(parse(r#"{"l":null}"#).unwrap().l.is_empty());
        assert_eq!(parse(r#"{"l":"x"}"#).unwrap().l, vec!["x"]);
        assert_eq!(parse(r#"{"l":["a",1]}"#).unwrap().l, vec!["a", "1"]);
        assert_eq!(parse(r#"{}"#).unwrap().ol, None);
        assert_eq!(parse(r#"{"ol":[]}"#).unwrap().ol, Some(vec![]));
        assert_eq!(parse(r#"{"ol":null}"#).unwrap().ol, None);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(parse(r#"{"whatever":{"deep":[1,2]}}"#).is_ok());
    }
}
