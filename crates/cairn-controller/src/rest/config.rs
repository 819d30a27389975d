//! `GET/PUT /v1/controller/config` and `GET/PUT /v1/nodes/{node}/config`:
//! LINSTOR's shapes. What Cairn can change at run time are the log levels
//! of the controller and of its satellites; anything else is refused with a
//! clear entry.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::controller::{ConfigDb, ConfigDebug, ConfigHttp, ConfigLog, ControllerConfig, SatelliteConfig, SatelliteConfigNet};
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::OpError;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::logging;
use crate::state::AppState;
use cairn_proto::{LogLevels, PATH_CONFIG};

/// How long a satellite may take to answer a config request.
const SATELLITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const OP_CTRL: i64 = rc::MASK_MOD | rc::MASK_CTRL_CONF;
const OP_NODE: i64 = rc::MASK_MOD | rc::MASK_NODE;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/controller/config", get(get_ctrl).put(put_ctrl)).route("/v1/nodes/{node}/config", get(get_node).put(put_node))
}

async fn get_ctrl(State(s): State<AppState>) -> Response {
    let (level, level_linstor) = logging::control().map(|c| c.levels()).map_or((None, None), |(a, b)| (Some(a), Some(b)));
    let cfg = s.settings();
    let bind = cfg.map(|c| c.rest_bind);
    let https = cfg.and_then(|c| c.https_bind());
    ok(&ControllerConfig {
        config: None,
        debug: Some(ConfigDebug { console_enabled: Some(false) }),
        log: Some(ConfigLog {
            print_stack_trace: Some(false),
            level,
            level_linstor,
            rest_access_mode: Some("NO_LOG".into()),
            ..Default::default()
        }),
        db: cfg.map(|_| ConfigDb { connection_url: Some(s.store().describe()), version_check_disabled: Some(false), ..Default::default() }),
        http: Some(ConfigHttp {
            enabled: Some(bind.is_some()),
            listen_address: bind.map(|b| b.ip().to_string()),
            port: bind.map(|b| i64::from(b.port())),
        }),
        https: Some(ConfigHttp {
            enabled: Some(https.is_some()),
            listen_address: https.map(|b| b.ip().to_string()),
            port: https.map(|b| i64::from(b.port())),
        }),
        ldap: Some(serde_json::json!({ "enabled": false })),
    })
}

/// The two levels a `log` section asks for: (libraries, Cairn), and
/// whether it asked for the satellites too (`_global`). As LINSTOR, the
/// plain levels win over the `_global` ones.
pub fn requested_levels(log: &ConfigLog) -> Result<(Option<&'static str>, Option<&'static str>, bool), OpError> {
    fn given(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.trim().is_empty())
    }
    let parse = |v: &str| {
        logging::parse_level(v).ok_or_else(|| {
            OpError::new(OP_CTRL, rc::FAIL_INVLD_REQUEST, format!("'{v}' is not a log level."))
                .correction(format!("Use one of {}.", logging::LEVELS.join(", ")))
        })
    };
    let lib = given(&log.level).or(given(&log.level_global)).map(parse).transpose()?;
    let own = given(&log.level_linstor).or(given(&log.level_linstor_global)).map(parse).transpose()?;
    let global = given(&log.level_global).is_some() || given(&log.level_linstor_global).is_some();
    Ok((lib, own, global))
}

/// Refuses the parts of a controller configuration Cairn cannot change
/// while it runs.
pub fn refuse_fixed(cfg: &ControllerConfig) -> Result<(), OpError> {
    let log = cfg.log.clone().unwrap_or_default();
    let fixed = set_fields(&[
        ("config", cfg.config.is_some()),
        ("debug", cfg.debug.is_some()),
        ("db", cfg.db.is_some()),
        ("http", cfg.http.is_some()),
        ("https", cfg.https.is_some()),
        ("ldap", cfg.ldap.is_some()),
        ("log.directory", log.directory.is_some()),
        ("log.print_stack_trace", log.print_stack_trace.is_some()),
        ("log.rest_access_log_path", log.rest_access_log_path.is_some()),
        ("log.rest_access_mode", log.rest_access_mode.is_some()),
    ]);
    match fixed {
        None => Ok(()),
        Some(fixed) => Err(OpError::new(OP_CTRL, rc::FAIL_INVLD_REQUEST, format!("Cairn cannot change {fixed} while it runs."))
            .cause("Only the log levels (log.level, log.level_linstor and their _global forms) can be changed at run time.")
            .correction("Change the controller's flags, environment or cairn.toml and restart it.")),
    }
}

/// The names of the fields a config request sets, joined, if any.
fn set_fields(fields: &[(&str, bool)]) -> Option<String> {
    let set: Vec<&str> = fields.iter().filter(|(_, set)| *set).map(|(n, _)| *n).collect();
    (!set.is_empty()).then(|| set.join(", "))
}

async fn put_ctrl(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let cfg: ControllerConfig = input::body(&body)?;
    refuse_fixed(&cfg)?;
    let (lib, own, global) = requested_levels(&cfg.log.unwrap_or_default())?;
    if lib.is_none() && own.is_none() {
        return Err(OpError::new(OP_CTRL, rc::FAIL_INVLD_REQUEST, "The request changes nothing.")
            .correction("Give log.level or log.level_linstor.")
            .into());
    }
    let Some(control) = logging::control() else {
        return Err(OpError::new(OP_CTRL, rc::FAIL_INVLD_REQUEST, "The log level of this controller cannot be changed at run time.")
            .cause("The controller was not started by the cairn binary's logging set-up.")
            .into());
    };
    control.set(lib, own).map_err(|e| OpError::new(OP_CTRL, rc::FAIL_UNKNOWN_ERROR, "The log level could not be changed.").cause(e))?;
    let (l, o) = control.levels();
    let mut replies =
        vec![ApiCallRc::success(OP_CTRL, rc::MODIFIED, format!("Controller log level set to {l} (libraries) and {o} (Cairn)."))];
    if global {
        // The satellites too, each as far as it can (LINSTOR's `_global`).
        let nodes: Vec<(String, String)> = {
            let c = s.read();
            c.nodes.iter().filter(|(_, n)| n.node_type.has_satellite()).map(|(k, n)| (k.clone(), n.name.clone())).collect()
        };
        let req = LogLevels { level: lib.map(String::from), level_linstor: own.map(String::from), error: None };
        for (k, name) in nodes {
            replies.push(match set_satellite_levels(&s, &k, &name, &req).await {
                Ok(e) => e,
                // The controller's own change stands: a satellite that
                // could not follow is a warning, with its reasons.
                Err(e) => {
                    let e = ApiCallRc::from(e);
                    let mut w = ApiCallRc::warning(OP_CTRL, rc::WARN_NOT_CONNECTED, e.message);
                    (w.cause, w.correction, w.obj_refs) = (e.cause, e.correction, e.obj_refs);
                    w
                }
            });
        }
    }
    Ok(Reply::new(200, replies))
}

/// Asks a satellite to change its log levels.
async fn set_satellite_levels(s: &AppState, node_key: &str, name: &str, req: &LogLevels) -> Result<ApiCallRc, OpError> {
    let body =
        serde_json::to_vec(req).map_err(|e| OpError::new(OP_NODE, rc::FAIL_IMPL_ERROR, format!("cannot encode the request: {e}")))?;
    let got: LogLevels = s.links().request(node_key, PATH_CONFIG, Some(body), SATELLITE_TIMEOUT).await.map_err(|e| {
        OpError::new(OP_NODE, rc::FAIL_NOT_CONNECTED, format!("The log level of satellite '{name}' was not changed."))
            .cause(e.to_string())
            .correction("Wait until the node's satellite is ONLINE, then retry.")
            .obj_ref("Node", name)
    })?;
    if let Some(e) = got.error {
        return Err(OpError::new(OP_NODE, rc::FAIL_INVLD_REQUEST, format!("Satellite '{name}' cannot change its log level at run time."))
            .cause(e)
            .correction("Restart the satellite without RUST_LOG, or with the RUST_LOG you want.")
            .obj_ref("Node", name));
    }
    Ok(ApiCallRc::success(
        OP_NODE,
        rc::MODIFIED,
        format!(
            "Satellite '{name}' log level set to {} (libraries) and {} (Cairn).",
            got.level.as_deref().unwrap_or("?"),
            got.level_linstor.as_deref().unwrap_or("?")
        ),
    )
    .with_ref("Node", name))
}

/// What the controller knows of a satellite's configuration (its name and
/// where it listens) and, while it is online, the log levels it reports.
async fn get_node(State(s): State<AppState>, Path(node): Path<String>) -> Result<Response, ApiError> {
    let node_key = cairn_domain::name::key(&s.read().node(&node, rc::MASK_NODE)?.name);
    let levels: Option<LogLevels> = s.links().request(&node_key, PATH_CONFIG, None, SATELLITE_TIMEOUT).await.ok();
    let c = s.read();
    let n = c.node(&node, rc::MASK_NODE)?;
    let nif = n
        .net_interfaces
        .iter()
        .find(|i| i.is_active && i.satellite_port.is_some())
        .or_else(|| n.net_interfaces.iter().find(|i| i.satellite_port.is_some()));
    Ok(ok(&SatelliteConfig {
        stlt_override_node_name: Some(n.name.clone()),
        remote_spdk: Some(false),
        ebs: Some(false),
        special_satellite: Some(false),
        net: nif.map(|i| SatelliteConfigNet {
            bind_address: Some(i.address.to_string()),
            port: i.satellite_port.map(i64::from),
            com_type: Some(i.satellite_encryption_type.clone().unwrap_or_else(|| "PLAIN".into())),
        }),
        log: levels.map(|l| ConfigLog { level: l.level, level_linstor: l.level_linstor, ..Default::default() }),
        ..Default::default()
    }))
}

/// Refuses the parts of a satellite configuration Cairn cannot change
/// while the satellite runs (all but the log levels).
pub fn refuse_fixed_satellite(cfg: &SatelliteConfig, name: &str) -> Result<(), OpError> {
    let log = cfg.log.clone().unwrap_or_default();
    let fixed = set_fields(&[
        ("config", cfg.config.is_some()),
        ("debug", cfg.debug.is_some()),
        ("stlt_override_node_name", cfg.stlt_override_node_name.is_some()),
        ("remote_spdk", cfg.remote_spdk.is_some()),
        ("ebs", cfg.ebs.is_some()),
        ("special_satellite", cfg.special_satellite.is_some()),
        ("drbd_keep_res_pattern", cfg.drbd_keep_res_pattern.is_some()),
        ("net", cfg.net.is_some()),
        ("log.directory", log.directory.is_some()),
        ("log.print_stack_trace", log.print_stack_trace.is_some()),
    ]);
    match fixed {
        None => Ok(()),
        Some(fixed) => {
            Err(OpError::new(OP_NODE, rc::FAIL_INVLD_REQUEST, format!("Cairn cannot change {fixed} of satellite '{name}' while it runs."))
                .cause("Only the log levels (log.level, log.level_linstor) can be changed at run time.")
                .correction("Change the satellite's flags, environment or cairn.toml and restart it.")
                .obj_ref("Node", name))
        }
    }
}

/// `PUT /v1/nodes/{node}/config`: the satellite's log levels, at run time.
async fn put_node(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let cfg: SatelliteConfig = input::body(&body)?;
    let name = s.read().node(&node, OP_NODE)?.name.clone();
    refuse_fixed_satellite(&cfg, &name)?;
    let (lib, own, _) = requested_levels(&cfg.log.unwrap_or_default())?;
    if lib.is_none() && own.is_none() {
        return Err(OpError::new(OP_NODE, rc::FAIL_INVLD_REQUEST, "The request changes nothing.")
            .correction("Give log.level or log.level_linstor.")
            .into());
    }
    let req = LogLevels { level: lib.map(String::from), level_linstor: own.map(String::from), error: None };
    let entry = set_satellite_levels(&s, &cairn_domain::name::key(&name), &name, &req).await?;
    Ok(Reply::new(200, vec![entry]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(level: Option<&str>, linstor: Option<&str>, global: Option<&str>) -> ConfigLog {
        ConfigLog {
            level: level.map(String::from),
            level_linstor: linstor.map(String::from),
            level_linstor_global: global.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn log_levels_are_read_as_linstor_reads_them() {
        assert_eq!(requested_levels(&log(Some("debug"), None, None)).unwrap(), (Some("DEBUG"), None, false));
        assert_eq!(requested_levels(&log(None, Some("TRACE"), None)).unwrap(), (None, Some("TRACE"), false));
        assert_eq!(requested_levels(&log(None, Some("WARN"), Some("ERROR"))).unwrap(), (None, Some("WARN"), true), "plain wins");
        assert_eq!(requested_levels(&log(None, None, Some("error"))).unwrap(), (None, Some("ERROR"), true));
        let e = requested_levels(&log(Some("loud"), None, None)).unwrap_err();
        assert_eq!(e.rc.ret_code, rc::MASK_ERROR | OP_CTRL | rc::FAIL_INVLD_REQUEST);
    }

    #[test]
    fn only_the_log_levels_can_change() {
        assert!(refuse_fixed(&ControllerConfig { log: Some(log(Some("INFO"), None, None)), ..Default::default() }).is_ok());
        let e = refuse_fixed(&ControllerConfig {
            http: Some(ConfigHttp { port: Some(1), ..Default::default() }),
            log: Some(ConfigLog { directory: Some("/tmp".into()), ..Default::default() }),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.rc.message.contains("http, log.directory"), "{}", e.rc.message);
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_REQUEST);
    }
}
