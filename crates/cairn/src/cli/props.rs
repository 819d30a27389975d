//! The property verbs every object kind shares: `list-properties`,
//! `set-property`, and `drbd-options` / `drbd-peer-options` (DRBD options
//! as `--name value` flags, stored as `DrbdOptions/<Section>/<name>`).

use std::collections::BTreeMap;

use cairn_api::rc;

use super::table::Table;
use super::{Ctx, prop_body};

/// A Key/Value table of `props` (the JSON map with `-m`).
pub fn show(ctx: &Ctx, props: &BTreeMap<String, String>) -> i32 {
    let mut t = Table::new(&["Key", "Value"]);
    for (k, v) in props {
        t.row(vec![k.clone().into(), v.clone().into()]);
    }
    ctx.show(props, t)
}

/// `list-properties`: the `props` of the object a GET of `path` answers
/// (an object, or a list whose first element is the object).
pub fn list(ctx: &Ctx, path: &str) -> i32 {
    let v: serde_json::Value = match ctx.get(path) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let obj = match v {
        serde_json::Value::Array(a) => a.into_iter().next().unwrap_or_default(),
        other => other,
    };
    let props: BTreeMap<String, String> = obj.get("props").and_then(|p| serde_json::from_value(p.clone()).ok()).unwrap_or_default();
    show(ctx, &props)
}

/// `set-property KEY [VALUE]` on the object at `path` (PUT with LINSTOR's
/// modify body); without a value the key is deleted.
pub fn set(ctx: &Ctx, path: &str, key: &str, value: Option<&str>) -> i32 {
    ctx.send("PUT", path, Some(&prop_body(key, value)))
}

/// The arguments of `drbd-options` and `drbd-peer-options`, as upstream's
/// client takes them: options and the object's names in any order.
#[derive(clap::Args, Debug)]
pub struct DrbdOptionArgs {
    /// DRBD options as `--name value` (e.g. `--protocol C`, `--max-buffers
    /// 8000`) or `--unset-name`, and the object's names.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1.., required = true, value_name = "OPTIONS_AND_NAMES")]
    pub args: Vec<String>,
}

/// `drbd-options` arguments: `--name value` sets, `--unset-name` deletes,
/// anything else is a positional (the object's names).
#[derive(Debug, Default, PartialEq)]
pub struct DrbdArgs {
    pub positionals: Vec<String>,
    pub set: Vec<(String, String)>,
    pub unset: Vec<String>,
}

pub fn parse_drbd_args(tokens: &[String]) -> Result<DrbdArgs, String> {
    let mut out = DrbdArgs::default();
    let mut it = tokens.iter();
    while let Some(t) = it.next() {
        let Some(flag) = t.strip_prefix("--") else {
            out.positionals.push(t.clone());
            continue;
        };
        if let Some(name) = flag.strip_prefix("unset-") {
            out.unset.push(name.to_string());
            continue;
        }
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (flag.to_string(), it.next().ok_or_else(|| format!("option --{flag} needs a value"))?.clone()),
        };
        out.set.push((name, value));
    }
    Ok(out)
}

/// The property key of DRBD option `name` among `keys`: the one whose last
/// path element is `name` under `DrbdOptions/`.
fn drbd_key<'a>(keys: impl Iterator<Item = &'a String>, name: &str) -> Result<String, String> {
    let found: Vec<&String> =
        keys.filter(|k| k.strip_prefix("DrbdOptions/").is_some_and(|rest| rest.rsplit('/').next() == Some(name))).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("'--{name}' is not a DRBD option of this object")),
        many => Err(format!("'--{name}' is ambiguous: {}", many.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))),
    }
}

/// `drbd-options` / `drbd-peer-options`: the options in `tokens` become
/// properties of LINSTOR's object kind `kind` (`RSC_DFN`, `CTRL`,
/// `RSC_CONN`, ...), checked against the controller's property table, sent
/// with `method` to `path(positionals)`. `names` says how many positionals
/// the object needs.
pub fn drbd_options(ctx: &Ctx, kind: &str, names: usize, tokens: &[String], target: impl Fn(&[String]) -> (&'static str, String)) -> i32 {
    let args = match parse_drbd_args(tokens) {
        Ok(a) => a,
        Err(e) => return ctx.problem(rc::FAIL_INVLD_REQUEST, e),
    };
    if args.positionals.len() != names {
        return ctx.problem(
            rc::FAIL_INVLD_REQUEST,
            format!("expected {names} name(s) besides the options, got {}: {:?}", args.positionals.len(), args.positionals),
        );
    }
    if args.set.is_empty() && args.unset.is_empty() {
        return ctx.problem(rc::FAIL_INVLD_REQUEST, "no DRBD option given (e.g. --protocol C, --unset-protocol)");
    }
    let table: BTreeMap<String, BTreeMap<String, serde_json::Value>> = match ctx.get("/v1/controller/properties/info/all") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let keys = table.get(kind).cloned().unwrap_or_default();
    let mut override_props = BTreeMap::new();
    let mut delete_props = Vec::new();
    for (name, value) in &args.set {
        match drbd_key(keys.keys(), name) {
            Ok(k) => override_props.insert(k, value.clone()),
            Err(e) => return ctx.problem(rc::FAIL_INVLD_PROP, e),
        };
    }
    for name in &args.unset {
        match drbd_key(keys.keys(), name) {
            Ok(k) => delete_props.push(k),
            Err(e) => return ctx.problem(rc::FAIL_INVLD_PROP, e),
        }
    }
    let (method, path) = target(&args.positionals);
    ctx.send(method, &path, Some(&serde_json::json!({ "override_props": override_props, "delete_props": delete_props })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn drbd_args_as_the_upstream_client_takes_them() {
        let a = parse_drbd_args(&s(&["--protocol", "C", "web", "--unset-verify-alg", "--max-buffers=8000"])).unwrap();
        assert_eq!(a.positionals, ["web"]);
        assert_eq!(a.set, [("protocol".to_string(), "C".to_string()), ("max-buffers".to_string(), "8000".to_string())]);
        assert_eq!(a.unset, ["verify-alg"]);
        assert!(parse_drbd_args(&s(&["web", "--protocol"])).is_err());
    }

    #[test]
    fn option_names_find_their_section() {
        let keys = s(&["DrbdOptions/Net/protocol", "DrbdOptions/Resource/quorum", "DrbdOptions/auto-quorum", "Aux/protocol"]);
        assert_eq!(drbd_key(keys.iter(), "protocol").unwrap(), "DrbdOptions/Net/protocol");
        assert_eq!(drbd_key(keys.iter(), "auto-quorum").unwrap(), "DrbdOptions/auto-quorum");
        assert!(drbd_key(keys.iter(), "nope").is_err());
    }
}
