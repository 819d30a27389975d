//! Placement operations: autoplace, resource-group spawn, make-available,
//! and the size queries. The choice itself is [`crate::placement`].

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::placement::{
    AutoPlaceRequest, Candidate as WireCandidate, MaxVolumeSizes, QueryAllSizeInfoResponse, QuerySizeInfoResponse,
    QuerySizeInfoSpawnResult, ResourceGroupAdjust, ResourceGroupSpawn, ResourceMakeAvailable, SpaceInfo,
};
use cairn_api::rc::{self, ApiCallRc};
use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
use cairn_api::resource_definition::{
    ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate,
};
use cairn_api::resource_group::AutoSelectFilter;

use crate::cluster::{Cluster, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::numbers::Taken;
use crate::placement::{Candidate, DEFAULT_THIN_RATIO, Observer, Placer, Rejections, Weights};
use crate::resource::{PROP_STOR_POOL_NAME, created_reply};
use crate::resource_definition::{
    ResourceDefinition, VolumeDefinition, build_vlm_dfn, check_layer_stack, rd_created_reply, vd_created_reply,
};
use crate::resource_group::{merge_filter, normalize_filter};
use crate::toggle_disk::{ToggleDisk, ToggleOp};
use crate::{Ctx, DEFAULT_DISKLESS_STOR_POOL, Props};

/// LINSTOR's default replica count.
pub const DEFAULT_PLACE_COUNT: i64 = 2;

/// The layer stack replicas get: the request's, the filter's, the
/// definition's, else DRBD over STORAGE.
fn layers(c: &Cluster, req: Option<&Vec<String>>, filter: &AutoSelectFilter, d: &ResourceDefinition, op: i64) -> OpResult<Vec<String>> {
    match req.filter(|l| !l.is_empty()) {
        Some(l) => check_layer_stack(l, op),
        None => Ok(filter
            .layer_stack
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| Some(d.layer_stack.clone()).filter(|l| !l.is_empty()))
            .unwrap_or_else(|| c.default_stack_for(d))),
    }
}

/// LINSTOR's answer when make-available finds no pool on the node
/// (`CtrlRscMakeAvailableApiCallHandler.failNoStorPoolFound`); clients
/// match its text (OpenNebula's add-on falls back to a diskless replica).
/// The placer's own explanation goes into the cause.
fn no_stor_pool_found(rd: &str, node: &str, diskless: bool, why: OpError) -> OpError {
    const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
    let kind = if diskless { "diskless" } else { "diskful" };
    let mut e = OpError::new(
        OP,
        rc::FAIL_NOT_FOUND_STOR_POOL,
        format!("Autoplacer could not find {kind} stor pool on node {node} matching resource-groups autoplace-settings"),
    )
    .obj_ref("Node", node)
    .obj_ref("RscDfn", rd);
    e.rc.cause = why.rc.cause.clone();
    e
}

fn not_enough(op: i64, need: usize, size_kib: i64, cands: &[Candidate], rej: &Rejections, filter: &AutoSelectFilter) -> OpError {
    let qualified: Vec<String> = cands.iter().map(|c| format!("{}/{}", c.node, c.pool)).collect();
    OpError::new(op, rc::FAIL_NOT_ENOUGH_NODES, "Not enough available nodes")
        .cause(format!(
            "{need} more replica(s) of {size_kib} KiB were needed; {} storage pool(s) qualified{}{}. Excluded: {}.",
            qualified.len(),
            if qualified.is_empty() { String::new() } else { format!(" ({})", qualified.join(", ")) },
            if qualified.len() >= need {
                ", but no combination of them satisfies one replica per node and per shared space, provider mixing and replicas-on-same/different"
            } else {
                ""
            },
            rej.describe()
        ))
        .details(format!("Effective filter: {}", serde_json::to_string(filter).unwrap_or_default()))
        .correction("Add nodes or storage pools, free space, or relax the resource group's select filter.")
}

impl Cluster {
    fn placer<'a>(
        &'a self,
        obs: &'a dyn Observer,
        filter: &'a AutoSelectFilter,
        rd_key: Option<String>,
        size_kib: i64,
        layers: Vec<String>,
    ) -> Placer<'a> {
        Placer { c: self, obs, filter, rd_key, size_kib, weights: Weights::from_props(&self.ctrl_props), layers }
    }

    /// Chooses pools for the missing replicas of `d` and builds the
    /// resources (plus diskless ones on the remaining nodes if asked).
    #[expect(clippy::too_many_arguments, reason = "one placement needs all of them; a struct would only rename them")]
    fn place(
        &self,
        d: &ResourceDefinition,
        vds: &[&VolumeDefinition],
        filter: &AutoSelectFilter,
        stack: Vec<String>,
        diskless_on_remaining: bool,
        obs: &dyn Observer,
        ctx: &mut Ctx,
        op: i64,
    ) -> OpResult<Outcome> {
        let size = vds.iter().try_fold(0i64, |acc, v| acc.checked_add(v.size_kib)).ok_or_else(|| {
            OpError::new(op, rc::FAIL_INVLD_VLM_SIZES, format!("The volumes of '{}' add up to more than a pool can hold.", d.name))
        })?;
        let rd_key = key(&d.name);
        let placer = self.placer(obs, filter, Some(rd_key.clone()), size, stack.clone());
        let existing = placer.existing().len() as i64;
        let additional = match filter.additional_place_count {
            Some(a) => a,
            None => filter.place_count.unwrap_or(DEFAULT_PLACE_COUNT) - existing,
        };
        let mut out = Outcome::default();
        let mut chosen: Vec<Candidate> = Vec::new();
        if additional <= 0 {
            out.reply(ApiCallRc::warning(
                rc::MASK_RSC_DFN,
                rc::WARN_RSC_ALREADY_DEPLOYED,
                format!("Resource definition '{}' is already deployed on {existing} node(s). Skipping.", d.name),
            ));
        } else {
            let mut rej = Rejections::default();
            let cands = placer.candidates(&mut rej)?;
            chosen = placer
                .select(&cands, additional as usize)
                .ok_or_else(|| not_enough(op, additional as usize, size, &cands, &rej, filter))?;
        }
        let mut placed_nodes: BTreeSet<String> = self.resources_of(&rd_key).map(|r| key(&r.node)).collect();
        let mut taken = Taken::default();
        let takeover = placer.takeover_nodes();
        for cand in &chosen {
            if takeover.contains(&cand.node_key) {
                // As LINSTOR's createResourceDb: the diskless replica there
                // (a tiebreaker loses its flag) gets its disk in the chosen
                // pool, by toggle-disk.
                let toggle = ToggleDisk {
                    op: Some(ToggleOp::Diskful),
                    storage_pool: Some(cand.pool.clone()),
                    layer_list: Some(stack.clone()),
                    diskful_by: Some("auto-placer"),
                    ..Default::default()
                };
                let toggled = self.toggle_disk(&d.name, &cand.node, &toggle, obs, &|_| false, ctx)?;
                out.changes.extend(toggled.changes);
                out.replies.extend(toggled.replies);
                continue;
            }
            let mut props = Props::new();
            props.insert(PROP_STOR_POOL_NAME.into(), cand.pool.clone());
            let req =
                ResourceCreate { resource: WireRsc { props, ..Default::default() }, layer_list: Some(stack.clone()), ..Default::default() };
            let r = self.build_resource(d, vds, &cand.node, &req, &mut taken, op, ctx)?;
            placed_nodes.insert(key(&r.node));
            out.reply(created_reply(&r));
            out.put(Object::Rsc(r));
        }
        if diskless_on_remaining {
            let pool = filter
                .storage_pool_diskless_list
                .as_ref()
                .and_then(|l| l.first().cloned())
                .unwrap_or_else(|| DEFAULT_DISKLESS_STOR_POOL.to_string());
            for (nk, n) in &self.nodes {
                if !n.node_type.has_satellite() || placed_nodes.contains(nk) || !self.stor_pools.contains_key(&(nk.clone(), key(&pool))) {
                    continue;
                }
                let mut props = Props::new();
                props.insert(PROP_STOR_POOL_NAME.into(), pool.clone());
                let req = ResourceCreate {
                    resource: WireRsc { props, flags: vec!["DRBD_DISKLESS".into()], ..Default::default() },
                    layer_list: Some(stack.clone()),
                    ..Default::default()
                };
                let r = self.build_resource(d, vds, &n.name, &req, &mut taken, op, ctx)?;
                out.reply(created_reply(&r));
                out.put(Object::Rsc(r));
            }
        }
        if !chosen.is_empty() {
            out.reply(
                ApiCallRc::info(rc::MASK_RSC_DFN, 0, format!("Resource '{}' successfully autoplaced on {} node(s).", d.name, chosen.len()))
                    .with_details(chosen.iter().map(|c| format!("{} ({})", c.node, c.pool)).collect::<Vec<_>>().join(", "))
                    .with_ref("RscDfn", &d.name),
            );
        }
        Ok(out)
    }

    /// `count` more diskful replicas of `rd` by its group's rules, on the
    /// nodes of `nodes` when given (evacuation and auto-evict replacements).
    pub(crate) fn place_more(
        &self,
        rd: &str,
        count: i64,
        nodes: Option<Vec<String>>,
        obs: &dyn Observer,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
        let d = self.rsc_dfn(rd, OP)?;
        let rg = self.rsc_grp(&d.resource_group, OP)?;
        let mut filter = rg.select_filter.clone();
        filter.place_count = None;
        filter.additional_place_count = Some(count);
        if nodes.is_some() {
            filter.node_name_list = nodes;
        }
        let filter = normalize_filter(&filter, OP)?;
        let stack = layers(self, None, &filter, d, OP)?;
        let vds: Vec<&VolumeDefinition> = self.vlm_dfns_of(&key(&d.name)).collect();
        self.place(d, &vds, &filter, stack, false, obs, ctx, OP)
    }

    /// `POST /v1/resource-groups/{rg}/adjust` (`rg` given) and
    /// `…/adjustall` (None): autoplaces every definition of the group(s)
    /// back to the group's placement (its `place_count` and filter, the
    /// request's filter over it), as LINSTOR does. Each definition is placed
    /// on top of the ones before it; one that cannot be placed is reported
    /// and the others still are. Replicas beyond the count stay.
    pub fn adjust_rsc_grps(&self, rg: Option<&str>, req: &ResourceGroupAdjust, obs: &dyn Observer, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC_GRP;
        if req.copy_all_snaps == Some(true) || !req.snap_names.is_empty() {
            return Err(OpError::new(OP, rc::FAIL_INVLD_REQUEST, "Copying snapshots while adjusting is not supported by Cairn.")
                .correction("Adjust without copy_all_snaps and snap_names."));
        }
        let groups: Vec<String> = match rg {
            Some(name) => vec![key(&self.rsc_grp(name, OP)?.name)],
            None => self.rsc_grps.keys().cloned().collect(),
        };
        let mut scratch = self.clone();
        let mut out = Outcome::default();
        for g in groups {
            let rds: Vec<String> = self.rsc_dfns.values().filter(|d| key(&d.resource_group) == g).map(|d| d.name.clone()).collect();
            for rd in rds {
                let areq = AutoPlaceRequest { select_filter: req.select_filter.clone(), ..Default::default() };
                match scratch.autoplace(&rd, &areq, obs, ctx) {
                    Ok(o) => {
                        scratch.apply(o.changes.clone());
                        out.changes.extend(o.changes);
                        out.replies.extend(o.replies);
                    }
                    Err(e) => out.reply(ApiCallRc::from(e).with_ref("RscDfn", &rd)),
                }
            }
        }
        Ok(out)
    }

    /// `POST /v1/resource-definitions/{rd}/autoplace`: idempotent; the
    /// request's filter over the resource group's.
    pub fn autoplace(&self, rd: &str, req: &AutoPlaceRequest, obs: &dyn Observer, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
        let d = self.rsc_dfn(rd, OP)?;
        let rg = self.rsc_grp(&d.resource_group, OP)?;
        let filter = normalize_filter(&merge_filter(&rg.select_filter, &req.select_filter), OP)?;
        let stack = layers(self, req.layer_list.as_ref(), &filter, d, OP)?;
        let vds: Vec<&VolumeDefinition> = self.vlm_dfns_of(&key(&d.name)).collect();
        let dor = req.diskless_on_remaining.or(filter.diskless_on_remaining).unwrap_or(false);
        self.place(d, &vds, &filter, stack, dor, obs, ctx, OP)
    }

    /// `POST /v1/resource-groups/{rg}/spawn`: a resource definition and its
    /// volume definitions from the group's volume groups, then placement,
    /// all in one transaction.
    pub fn spawn(&self, rg: &str, req: &ResourceGroupSpawn, obs: &dyn Observer, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC_GRP;
        let g = self.rsc_grp(rg, OP)?;
        let rd_req = ResourceDefinitionCreate {
            drbd_peer_slots: req.peer_slots,
            resource_definition: WireRd {
                name: req.resource_definition_name.clone(),
                external_name: req.resource_definition_external_name.clone(),
                resource_group_name: Some(g.name.clone()),
                props: crate::props::checked(crate::whitelist::PropsObj::RscDfn, &req.resource_definition_props, OP)?,
                ..Default::default()
            },
            ..Default::default()
        };
        let d = self.build_rsc_dfn(&rd_req, ctx)?;
        let vgs: Vec<_> = self.vlm_grps_of(&key(&g.name)).collect();
        if !req.partial && !vgs.is_empty() && req.volume_sizes.len() != vgs.len() {
            return Err(OpError::new(
                OP,
                rc::FAIL_INVLD_VLM_SIZES,
                format!(
                    "Resource group '{}' has {} volume group(s) but {} volume size(s) were given.",
                    g.name,
                    vgs.len(),
                    req.volume_sizes.len()
                ),
            )
            .correction("Give one size per volume group, or set partial."));
        }
        let mut vds: Vec<VolumeDefinition> = Vec::new();
        let mut taken = BTreeSet::new();
        let mut minors = Taken::default();
        for (i, size) in req.volume_sizes.iter().enumerate() {
            let vg = vgs.get(i);
            let vreq = VolumeDefinitionCreate {
                volume_definition: WireVd {
                    volume_number: vg.map(|v| i64::from(v.volume_number)),
                    size_kib: Some(*size),
                    props: vg.map(|v| v.props.clone()).unwrap_or_default(),
                    flags: vg.map(|v| v.flags.iter().cloned().collect()).unwrap_or_default(),
                    ..Default::default()
                },
                ..Default::default()
            };
            let minor = if self.uses_drbd(&d) { Some(self.alloc_minor(None, &mut minors, OP)?) } else { None };
            let vd = build_vlm_dfn(&d, &taken, &vreq, minor, ctx)?;
            taken.insert(vd.volume_number);
            vds.push(vd);
        }
        let mut out = Outcome::default();
        out.reply(rd_created_reply(&d));
        for vd in &vds {
            out.reply(vd_created_reply(vd));
        }
        if !req.definitions_only {
            let filter = normalize_filter(&merge_filter(&g.select_filter, &req.select_filter), OP)?;
            let stack = layers(self, None, &filter, &d, OP)?;
            let refs: Vec<&VolumeDefinition> = vds.iter().collect();
            let dor = filter.diskless_on_remaining.unwrap_or(false);
            let placed = self.place(&d, &refs, &filter, stack, dor, obs, ctx, OP)?;
            out.changes.extend(placed.changes);
            out.replies.extend(placed.replies);
        }
        out.changes.insert(0, Object::RscDfn(d).into_put());
        for (i, vd) in vds.into_iter().enumerate() {
            out.changes.insert(1 + i, Object::VlmDfn(vd).into_put());
        }
        Ok(out)
    }

    /// `POST …/resources/{node}/make-available`: nothing if the resource is
    /// there; otherwise a diskless resource, or a diskful one in the best
    /// pool of that node.
    pub fn make_available(
        &self,
        rd: &str,
        node: &str,
        req: &ResourceMakeAvailable,
        obs: &dyn Observer,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
        let d = self.rsc_dfn(rd, OP)?;
        let n = self.node(node, OP)?;
        let mut out = Outcome::default();
        if let Some(r) = self.resources.get(&(key(&d.name), key(&n.name))) {
            // As CtrlRscMakeAvailableApiCallHandler: a deactivated replica
            // is activated.
            if r.flags.contains(crate::resource::FLAG_INACTIVE) {
                return self.set_resource_active(&d.name, &n.name, true, false);
            }
            if req.diskful && r.is_diskless() {
                // As LINSTOR: the diskless replica gets its disk (toggle-disk).
                let toggle = ToggleDisk {
                    op: Some(ToggleOp::Diskful),
                    layer_list: req.layer_list.clone(),
                    diskful_by: Some("make-available"),
                    ..Default::default()
                };
                return self.toggle_disk(&d.name, &n.name, &toggle, obs, &|_| false, ctx);
            } else {
                // The tiebreaker becomes a diskless replica the user wants
                // (golinstor's Attach, linstor-csi's ControllerPublish, the
                // Proxmox plugin's activate rely on it): the flag goes, the
                // replica stays DRBD_DISKLESS. The follow-up sees a diskless
                // replica and places no new tiebreaker.
                if r.flags.contains(crate::drbd_auto::FLAG_TIE_BREAKER) {
                    let mut wanted = r.clone();
                    wanted.flags.remove(crate::drbd_auto::FLAG_TIE_BREAKER);
                    out.put(Object::Rsc(wanted));
                }
                // LINSTOR's entry: MASK_SUCCESS (0) and no object bits.
                out.reply(
                    ApiCallRc::success(0, 0, "Resource already deployed as requested")
                        .with_ref("RscDfn", &d.name)
                        .with_ref("Node", &n.name),
                );
            }
            return Ok(out);
        }
        let rg = self.rsc_grp(&d.resource_group, OP)?;
        let vds: Vec<&VolumeDefinition> = self.vlm_dfns_of(&key(&d.name)).collect();
        // As LINSTOR's CtrlRscMakeAvailableApiCallHandler: a diskless (DRBD
        // client) replica only where DRBD is in the stack and a diskful peer
        // exists to reach the data through; otherwise "make available" means
        // a diskful replica, whatever `diskful` says.
        let stack = layers(self, req.layer_list.as_ref(), &rg.select_filter, d, OP)?;
        let diskful_peer = self.resources_of(&key(&d.name)).any(|r| !r.is_diskless());
        if !req.diskful && stack.iter().any(|l| l == "DRBD") && diskful_peer {
            let creq = ResourceCreate {
                resource: WireRsc { flags: vec!["DRBD_DISKLESS".into()], ..Default::default() },
                layer_list: Some(stack),
                ..Default::default()
            };
            // The group's diskless pools first; without one on the node,
            // LINSTOR tries again without the group's restrictions.
            let r = match self.build_resource(d, &vds, &n.name, &creq, &mut Taken::default(), OP, ctx) {
                Err(e) if e.rc.code() == rc::FAIL_NOT_FOUND_STOR_POOL => {
                    let mut any = creq.clone();
                    any.resource.props.insert(crate::resource::PROP_STOR_POOL_NAME.into(), crate::DEFAULT_DISKLESS_STOR_POOL.into());
                    self.build_resource(d, &vds, &n.name, &any, &mut Taken::default(), OP, ctx).map_err(|e| {
                        if e.rc.code() == rc::FAIL_NOT_FOUND_STOR_POOL { no_stor_pool_found(&d.name, &n.name, true, e) } else { e }
                    })?
                }
                other => other?,
            };
            out.reply(created_reply(&r));
            out.put(Object::Rsc(r));
            return Ok(out);
        }
        let mut filter = rg.select_filter.clone();
        filter.node_name_list = Some(vec![n.name.clone()]);
        filter.place_count = None;
        filter.additional_place_count = Some(1);
        let filter = normalize_filter(&filter, OP)?;
        let stack = layers(self, req.layer_list.as_ref(), &filter, d, OP)?;
        self.place(d, &vds, &filter, stack, false, obs, ctx, OP)
            .map_err(|e| if e.rc.code() == rc::FAIL_NOT_ENOUGH_NODES { no_stor_pool_found(&d.name, &n.name, false, e) } else { e })
    }

    /// The best `place_count` pools for the largest volume, and their
    /// smallest free space: how big a volume can be spawned now.
    fn max_size(placer: &Placer, cands: &[Candidate], place_count: usize) -> Option<(i64, Vec<Candidate>)> {
        let mut by_free: Vec<Candidate> = cands.to_vec();
        let top = by_free.iter().map(|c| c.free_kib).max().unwrap_or(0).max(1) as f64;
        for c in by_free.iter_mut() {
            c.score = c.free_kib as f64 / top;
        }
        by_free.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.node_key.cmp(&b.node_key)));
        let chosen = placer.select(&by_free, place_count)?;
        chosen.iter().map(|c| c.free_kib).min().map(|m| (m, chosen))
    }

    /// `POST /v1/resource-groups/{rg}/query-size-info`.
    pub fn query_size_info(&self, rg: &str, filter: &AutoSelectFilter, obs: &dyn Observer) -> OpResult<QuerySizeInfoResponse> {
        const OP: i64 = rc::MASK_RSC_GRP;
        let g = self.rsc_grp(rg, OP)?;
        let filter = normalize_filter(&merge_filter(&g.select_filter, filter), OP)?;
        let place_count = filter.place_count.unwrap_or(DEFAULT_PLACE_COUNT).max(1) as usize;
        let stack = filter.layer_stack.clone().filter(|l| !l.is_empty()).unwrap_or_else(|| self.default_stack());
        let placer = self.placer(obs, &filter, None, 0, stack);
        let mut rej = Rejections::default();
        let cands = placer.candidates(&mut rej)?;
        let mut reports = Vec::new();
        let max = Self::max_size(&placer, &cands, place_count);
        if max.is_none() {
            reports.push(
                ApiCallRc::warning(
                    OP,
                    rc::WARN_NOT_ENOUGH_NODES_FOR_TIE_BREAKER,
                    format!("Not enough nodes for {place_count} replica(s) of resource group '{}'.", g.name),
                )
                .with_cause(rej.describe()),
            );
        }
        let next = placer.select(&cands, place_count).unwrap_or_default();
        let available: i64 = cands.iter().map(|c| c.free_kib).sum::<i64>() / place_count as i64;
        let capacity: i64 = cands.iter().map(|c| (c.total_kib as f64 * c.ratio) as i64).sum::<i64>() / place_count as i64;
        Ok(QuerySizeInfoResponse {
            space_info: Some(SpaceInfo {
                max_vlm_size_in_kib: max.map(|(m, _)| m).unwrap_or(0),
                available_size_in_kib: Some(available),
                capacity_in_kib: Some(capacity),
                default_max_oversubscription_ratio: Some(DEFAULT_THIN_RATIO),
                next_spawn_result: next
                    .iter()
                    .map(|c| QuerySizeInfoSpawnResult {
                        node_name: c.node.clone(),
                        stor_pool_name: c.pool.clone(),
                        stor_pool_oversubscription_ratio: Some(c.ratio),
                    })
                    .collect(),
            }),
            reports,
        })
    }

    /// `POST /v1/queries/resource-groups/query-all-size-info`.
    pub fn query_all_size_info(&self, filter: &AutoSelectFilter, obs: &dyn Observer) -> QueryAllSizeInfoResponse {
        let mut out = QueryAllSizeInfoResponse::default();
        for g in self.rsc_grps.values() {
            match self.query_size_info(&g.name, filter, obs) {
                Ok(r) => {
                    out.result.insert(g.name.clone(), r);
                }
                Err(e) => out.reports.push(*e.rc),
            }
        }
        out
    }

    /// `OPTIONS /v1/query-max-volume-size`: per storage pool name, the
    /// largest volume `place_count` replicas in pools of that name can hold.
    pub fn query_max_volume_size(&self, filter: &AutoSelectFilter, obs: &dyn Observer) -> OpResult<MaxVolumeSizes> {
        let filter = normalize_filter(filter, rc::MASK_STOR_POOL)?;
        let place_count = filter.place_count.unwrap_or(DEFAULT_PLACE_COUNT).max(1) as usize;
        let stack = filter.layer_stack.clone().filter(|l| !l.is_empty()).unwrap_or_else(|| self.default_stack());
        let placer = self.placer(obs, &filter, None, 0, stack);
        let cands = placer.candidates(&mut Rejections::default())?;
        let mut by_pool: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for c in cands {
            by_pool.entry(c.pool.clone()).or_default().push(c);
        }
        let mut out = MaxVolumeSizes { candidates: Vec::new(), default_max_oversubscription_ratio: DEFAULT_THIN_RATIO };
        for (pool, cs) in by_pool {
            if let Some((max, chosen)) = Self::max_size(&placer, &cs, place_count) {
                out.candidates.push(WireCandidate {
                    storage_pool: pool,
                    max_volume_size_kib: max,
                    node_names: chosen.iter().map(|c| c.node.clone()).collect(),
                    all_thin: chosen.iter().all(|c| c.provider.is_thin()),
                });
            }
        }
        Ok(out)
    }
}
