//! Backup schedules (`/v1/schedules`, `…/backups/schedule/…`,
//! `/v1/view/schedules-by-resource`): the shapes of LINSTOR's `Schedule`,
//! `ScheduleModify`, `BackupSchedule`, `ScheduledRscs` and
//! `ScheduleDetails`. LINSTOR leaves unset fields and empty lists out
//! (`NON_EMPTY`), so an empty `ScheduleList` is `{}`.

use serde::{Deserialize, Serialize};

/// `GET /v1/schedules` and the lists of the view: `{"data": [...]}`,
/// `{}` when empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataList<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<T>,
}

/// A schedule as created and listed (`POST /v1/schedules`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Schedule {
    pub schedule_name: String,
    pub full_cron: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inc_cron: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_local: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_remote: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
}

/// `PUT /v1/schedules/{name}`: every field optional; an empty `inc_cron`
/// removes it, a negative count unsets the count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleModify {
    pub full_cron: Option<String>,
    pub inc_cron: Option<String>,
    pub keep_local: Option<i32>,
    pub keep_remote: Option<i32>,
    pub on_failure: Option<String>,
    pub max_retries: Option<i32>,
}

/// The body of `…/backups/schedule/{schedule}/enable|disable`: where the
/// schedule is switched (definition, group, or the controller when
/// neither is named) and where a restore of it would go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupSchedule {
    pub rsc_name: Option<String>,
    pub grp_name: Option<String>,
    pub node_name: Option<String>,
    pub dst_stor_pool: Option<String>,
    pub stor_pool_rename: std::collections::BTreeMap<String, String>,
    pub force_restore: bool,
    pub dst_rsc_grp: Option<String>,
    pub dst_rsc_name: Option<String>,
    pub force_mv_rsc_grp: bool,
}

/// One row of `GET /v1/view/schedules-by-resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduledRscs {
    pub rsc_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub last_snap_time: i64,
    pub last_snap_inc: bool,
    pub next_exec_time: i64,
    pub next_exec_inc: bool,
    pub next_planned_full: i64,
    pub next_planned_inc: i64,
}

/// One row of `GET /v1/view/schedules-by-resource/{rsc}`: where the
/// schedule is switched on (true), off (false) or not set (left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleDetails {
    pub remote_name: String,
    pub schedule_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsc_grp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsc_dfn: Option<bool>,
}
