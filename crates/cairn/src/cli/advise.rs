//! `cairn advise`: what the upstream client's `advise` points out, from the
//! same lists. `advise resource` checks every (or the named) resource
//! definition against its group's place count: too few or too many
//! replicas, two replicas without a tiebreaker, a diskless replica in use
//! on a node that has a usable storage pool. `advise maintenance NODE`
//! says which resources the node going down would leave with no replica,
//! or with one of two and nothing to break the tie.
//!
//! The fixes are printed as `cairn` commands.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use super::Ctx;
use super::table::{Cell, Table};

#[derive(Subcommand, Debug)]
pub enum AdviseCmd {
    /// Point out potential issues with the deployed resources.
    #[command(visible_alias = "r")]
    Resource(AdviseArgs),
    /// Point out what would go wrong if a node went down for maintenance.
    #[command(visible_alias = "m")]
    Maintenance {
        #[command(flatten)]
        args: AdviseArgs,
        /// The node to check.
        node: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct AdviseArgs {
    /// Only these kinds of issue.
    #[arg(short = 'f', long = "filter", num_args = 1..)]
    filter: Vec<IssueKind>,
    /// Only these resources.
    #[arg(short = 'r', long = "resources", num_args = 1..)]
    resources: Vec<String>,
    /// Accepted for compatibility (tables are always pastable text).
    #[arg(short = 'p', long = "pastable")]
    pastable: bool,
}

/// The upstream client's issue types, with its names.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueKind {
    #[value(name = "single-replica")]
    SingleReplica,
    #[value(name = "pot-split-brain")]
    PotentialSplitBrain,
    #[value(name = "diskless-in-use")]
    DisklessInUse,
    #[value(name = "too-few-replicas")]
    TooFewReplicas,
    #[value(name = "too-many-replicas")]
    TooManyReplicas,
    #[value(name = "no-tiebreaker")]
    NoTiebreaker,
}

/// One finding, as `-m` prints it (the upstream client's fields).
#[derive(Serialize, Debug, PartialEq)]
pub struct Issue {
    resource: String,
    what: String,
    fix: String,
    #[serde(skip)]
    kind: IssueKind,
}

fn tiebreaker_fix(rsc: &str) -> String {
    format!("cairn rd set-property {rsc} DrbdOptions/auto-add-quorum-tiebreaker true")
}

/// What the checks read: the lists the upstream client reads.
#[derive(Default)]
pub struct World {
    /// Definition name -> its group's (place count, storage pool list).
    pub groups: BTreeMap<String, (Option<i64>, Vec<String>)>,
    /// Resource name -> node name -> the resource (view form).
    pub resources: BTreeMap<String, BTreeMap<String, Value>>,
    /// Node name -> names of its pools that have disks.
    pub disk_pools: BTreeMap<String, BTreeSet<String>>,
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn flags(r: &Value) -> Vec<&str> {
    r.get("flags").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn diskless(r: &Value) -> bool {
    flags(r).contains(&"DISKLESS")
}

fn in_use(r: &Value) -> bool {
    r.pointer("/state/in_use").and_then(Value::as_bool).unwrap_or(false)
}

fn up_to_date(r: &Value) -> bool {
    r.get("volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().all(|v| v.pointer("/state/disk_state") == Some(&"UpToDate".into())))
}

impl World {
    fn read(ctx: &Ctx) -> Result<World, i32> {
        let rgs: Vec<Value> = ctx.get("/v1/resource-groups")?;
        let rds: Vec<Value> = ctx.get("/v1/resource-definitions")?;
        let rscs: Vec<Value> = ctx.get("/v1/view/resources")?;
        let pools: Vec<Value> = ctx.get("/v1/view/storage-pools")?;
        let rg_of: BTreeMap<String, (Option<i64>, Vec<String>)> = rgs
            .iter()
            .map(|g| {
                let place = g.pointer("/select_filter/place_count").and_then(Value::as_i64);
                let list = g
                    .pointer("/select_filter/storage_pool_list")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                (str_of(g, "name").to_ascii_uppercase(), (place, list))
            })
            .collect();
        let mut w = World::default();
        for d in &rds {
            let rg = match str_of(d, "resource_group_name") {
                "" => "DFLTRSCGRP".to_string(),
                g => g.to_ascii_uppercase(),
            };
            w.groups.insert(str_of(d, "name").to_string(), rg_of.get(&rg).cloned().unwrap_or((None, vec![])));
        }
        for r in rscs {
            w.resources.entry(str_of(&r, "name").to_string()).or_default().insert(str_of(&r, "node_name").to_string(), r);
        }
        for p in &pools {
            if str_of(p, "provider_kind") != "DISKLESS" {
                w.disk_pools.entry(str_of(p, "node_name").to_string()).or_default().insert(str_of(p, "storage_pool_name").to_string());
            }
        }
        Ok(w)
    }

    /// `advise resource`: per definition, the diskless-in-use check, then
    /// the replica-count checks (the first that applies).
    pub fn resource_issues(&self, only: &[String]) -> Vec<Issue> {
        let mut out = Vec::new();
        let nodes_with_pools = self.disk_pools.len();
        for (rsc, (place, pool_list)) in
            self.groups.iter().filter(|(n, _)| only.is_empty() || only.iter().any(|o| o.eq_ignore_ascii_case(n)))
        {
            let empty = BTreeMap::new();
            let deployed = self.resources.get(rsc).unwrap_or(&empty);
            let needless = deployed.iter().find(|(node, r)| {
                let pools = self.disk_pools.get(*node);
                diskless(r)
                    && in_use(r)
                    && pools.is_some_and(|p| !p.is_empty() && (pool_list.is_empty() || pool_list.iter().any(|l| p.contains(l))))
            });
            if let Some((node, _)) = needless {
                out.push(Issue {
                    resource: rsc.clone(),
                    what: "Resource is diskless and in-use, but a matching storage pool exists.".into(),
                    fix: format!("cairn r td --dflt {node} {rsc}"),
                    kind: IssueKind::DisklessInUse,
                });
            }
            let expected = place.filter(|p| *p > 0).unwrap_or(2) as usize;
            let diskful = deployed.values().filter(|r| !diskless(r)).count();
            if deployed.len() < expected {
                out.push(Issue {
                    resource: rsc.clone(),
                    what: format!("Resource expected to have {expected} replicas, got only {}.", deployed.len()),
                    fix: format!("cairn rd ap --place-count {expected} {rsc}"),
                    kind: IssueKind::TooFewReplicas,
                });
            } else if diskful > expected {
                let removable: Vec<&str> = deployed
                    .iter()
                    .filter(|(_, r)| !in_use(r) && up_to_date(r))
                    .map(|(n, _)| n.as_str())
                    .take(diskful - expected)
                    .collect();
                out.push(Issue {
                    resource: rsc.clone(),
                    what: format!("Resource should only have {expected} replicas, but has {diskful}."),
                    fix: format!("cairn r d {} {rsc}", removable.join(" ")),
                    kind: IssueKind::TooManyReplicas,
                });
            } else if expected == 2 && deployed.len() == 2 && nodes_with_pools > 2 {
                out.push(Issue {
                    resource: rsc.clone(),
                    what: "Resource has 2 replicas but no tie-breaker, could lead to split brain.".into(),
                    fix: tiebreaker_fix(rsc),
                    kind: IssueKind::NoTiebreaker,
                });
            }
        }
        out
    }

    /// `advise maintenance NODE`: the resources on the node that would
    /// lose their only disk, or one of two replicas with no third.
    pub fn maintenance_issues(&self, node: &str, only: &[String]) -> Vec<Issue> {
        let mut out = Vec::new();
        for (rsc, deployed) in &self.resources {
            if !only.is_empty() && !only.iter().any(|o| o.eq_ignore_ascii_case(rsc)) {
                continue;
            }
            let Some(here) = deployed.keys().find(|n| n.eq_ignore_ascii_case(node)) else { continue };
            let diskful: Vec<&String> = deployed.iter().filter(|(_, r)| !diskless(r)).map(|(n, _)| n).collect();
            if diskful == [here] {
                out.push(Issue {
                    resource: rsc.clone(),
                    what: "Node hosts only replica of resource, would become unavailable.".into(),
                    fix: format!("cairn rd ap --place-count 2 {rsc}"),
                    kind: IssueKind::SingleReplica,
                });
            } else if deployed.len() < 3 {
                out.push(Issue {
                    resource: rsc.clone(),
                    what: "Node hosts one of 2 replicas with no tiebreaker, may lead to split-brain.".into(),
                    fix: tiebreaker_fix(rsc),
                    kind: IssueKind::PotentialSplitBrain,
                });
            }
        }
        out
    }
}

pub fn run(ctx: &Ctx, cmd: AdviseCmd) -> i32 {
    let world = match World::read(ctx) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let (issues, args) = match &cmd {
        AdviseCmd::Resource(args) => (world.resource_issues(&args.resources), args),
        AdviseCmd::Maintenance { args, node } => (world.maintenance_issues(node, &args.resources), args),
    };
    let _ = args.pastable;
    let issues: Vec<Issue> = issues.into_iter().filter(|i| args.filter.is_empty() || args.filter.contains(&i.kind)).collect();
    let mut table = Table::new(&["Resource", "Issue", "Possible fix"]);
    for i in &issues {
        table.row(vec![Cell::from(i.resource.as_str()), Cell::from(i.what.as_str()), Cell::from(i.fix.as_str())]);
    }
    ctx.show(&issues, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsc(node: &str, flags: &[&str], in_use: bool) -> (String, Value) {
        (
            node.to_string(),
            json!({"node_name": node, "flags": flags, "state": {"in_use": in_use},
            "volumes": [{"state": {"disk_state": if flags.contains(&"DISKLESS") { "Diskless" } else { "UpToDate" }}}]}),
        )
    }

    fn world() -> World {
        let mut w = World::default();
        for n in ["n1", "n2", "n3"] {
            w.disk_pools.insert(n.into(), ["pool".to_string()].into());
        }
        w.groups.insert("few".into(), (Some(3), vec![]));
        w.resources.insert("few".into(), [rsc("n1", &[], false), rsc("n2", &[], false)].into());
        w.groups.insert("many".into(), (Some(2), vec![]));
        w.resources.insert("many".into(), [rsc("n1", &[], true), rsc("n2", &[], false), rsc("n3", &[], false)].into());
        w.groups.insert("pair".into(), (None, vec![]));
        w.resources.insert("pair".into(), [rsc("n1", &[], false), rsc("n2", &[], false)].into());
        w.groups.insert("dl".into(), (Some(2), vec!["pool".into()]));
        w.resources.insert("dl".into(), [rsc("n1", &[], false), rsc("n2", &[], false), rsc("n3", &["DISKLESS"], true)].into());
        w.groups.insert("single".into(), (Some(1), vec![]));
        w.resources.insert("single".into(), [rsc("n1", &[], false)].into());
        w
    }

    #[test]
    fn resource_advice_finds_what_the_upstream_client_finds() {
        let got: Vec<(String, IssueKind, String)> = world().resource_issues(&[]).into_iter().map(|i| (i.resource, i.kind, i.fix)).collect();
        assert_eq!(
            got,
            vec![
                ("dl".into(), IssueKind::DisklessInUse, "cairn r td --dflt n3 dl".into()),
                ("few".into(), IssueKind::TooFewReplicas, "cairn rd ap --place-count 3 few".into()),
                ("many".into(), IssueKind::TooManyReplicas, "cairn r d n2 many".into()),
                ("pair".into(), IssueKind::NoTiebreaker, tiebreaker_fix("pair")),
            ]
        );
        assert_eq!(world().resource_issues(&["PAIR".into()]).len(), 1, "names match case-insensitively");
    }

    #[test]
    fn maintenance_advice_names_lone_replicas_and_pairs_without_a_third() {
        let got: Vec<(String, IssueKind)> = world().maintenance_issues("n1", &[]).into_iter().map(|i| (i.resource, i.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("few".into(), IssueKind::PotentialSplitBrain),
                ("pair".into(), IssueKind::PotentialSplitBrain),
                ("single".into(), IssueKind::SingleReplica),
            ]
        );
        assert!(world().maintenance_issues("n3", &[]).is_empty(), "n3 holds a third replica or a tiebreaker of each");
    }
}
