//! ZFS and ZFS_THIN pools: one zvol per volume (`<zpool>/<rsc>_<NNNNN>`,
//! sparse with `-s` for ZFS_THIN), with LINSTOR's command lines. Sizes are
//! KiB with the `KB` suffix (ZFS reads it as KiB). Like the LVM tag, the
//! user property `cairn:vid` records the volume's identity.

use std::sync::Arc;
use std::time::Duration;

use cairn_exec::{Cmd, CommandRunner, ExecError};
use cairn_proto::VolumeObserved;

use crate::{Kib, StorageError, safe_name, split_volume_name, volume_number};

/// A ZFS pool: a zpool or a dataset in one (`tank` or `tank/linstor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsPool {
    pub name: String,
    pub dataset: String,
    pub thin: bool,
}

impl ZfsPool {
    pub fn new(name: &str, dataset: &str, thin: bool) -> Result<ZfsPool, StorageError> {
        let ok = !dataset.is_empty()
            && !dataset.starts_with(['-', '/'])
            && !dataset.ends_with('/')
            && !dataset.contains("//")
            && dataset.chars().all(|c| c.is_ascii_alphanumeric() || "_.-:/".contains(c));
        if !ok {
            return Err(StorageError::BadBacking(format!("'{dataset}' is not a ZFS dataset name")));
        }
        Ok(ZfsPool { name: name.to_string(), dataset: dataset.to_string(), thin })
    }

    /// The zpool the dataset lives in.
    pub fn zpool(&self) -> &str {
        self.dataset.split('/').next().unwrap_or(&self.dataset)
    }
}

/// One line of `zfs list -H -p -o name,refer,volsize,type,volblocksize,
/// origin,clones,cairn:vid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zvol {
    pub name: String,
    pub refer: u64,
    pub volsize: Option<u64>,
    pub kind: String,
    pub vid: Option<String>,
}

impl Zvol {
    /// KiB the zvol references (`refer`).
    pub fn allocated_kib(&self) -> i64 {
        i64::try_from(self.refer / 1024).unwrap_or(i64::MAX)
    }
}

fn num(v: &str) -> Option<u64> {
    if v == "-" { None } else { v.parse().ok() }
}

/// Parses the tab-separated `zfs list -H -p` output.
pub fn parse_list(out: &str) -> Result<Vec<Zvol>, StorageError> {
    let mut v = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 8 {
            return Err(StorageError::Output { program: "zfs", detail: format!("expected 8 fields: {line}") });
        }
        v.push(Zvol {
            name: f[0].to_string(),
            refer: num(f[1]).unwrap_or(0),
            volsize: num(f[2]),
            kind: f[3].to_string(),
            vid: Some(f[7].to_string()).filter(|s| s != "-"),
        });
    }
    Ok(v)
}

/// The value column of `zfs get -H -p -o value …` / `zpool get -H -p …`.
pub fn parse_value(out: &str, program: &'static str) -> Result<u64, StorageError> {
    let line = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    // `zpool get size -Hp pool` prints `pool size 123 -`; `-o value` just `123`.
    let fields: Vec<&str> = line.split('\t').collect();
    let v = if fields.len() >= 3 { fields[2] } else { fields[0] };
    v.trim().parse().map_err(|_| StorageError::Output { program, detail: format!("not a number: {line}") })
}

/// A full copy takes as long as the data: an hour before it is killed.
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct Zfs {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
    /// How long to wait for udev's `/dev/zvol/…` link after a create.
    settle: Duration,
}

fn zvol_name(pool: &ZfsPool, rsc: &str, nr: u32) -> Result<String, StorageError> {
    Ok(format!("{}/{}_{nr:05}", pool.dataset, safe_name(rsc)?))
}

impl Zfs {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Zfs {
        Zfs { runner, timeout, settle: Duration::from_secs(5) }
    }

    pub fn with_settle(mut self, settle: Duration) -> Zfs {
        self.settle = settle;
        self
    }

    fn zfs(&self) -> Cmd {
        Cmd::new("zfs").timeout(self.timeout)
    }

    /// Volumes and snapshots under the pool's dataset.
    pub async fn list(&self, pool: &ZfsPool) -> Result<Vec<Zvol>, StorageError> {
        let c = self.zfs().args([
            "list",
            "-r",
            "-H",
            "-p",
            "-o",
            "name,refer,volsize,type,volblocksize,origin,clones,cairn:vid",
            "-t",
            "volume,snapshot",
            &pool.dataset,
        ]);
        match self.runner.run(&c).await {
            Ok(o) => parse_list(&o.stdout),
            // Exit 1 with nothing listed: no volumes yet (LINSTOR tolerates it).
            Err(ExecError::NonZero { code: 1, stderr, .. }) if !stderr.contains("does not exist") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn ensure(&self, pool: &ZfsPool, rsc: &str, nr: u32, id: &str, size: Kib) -> Result<VolumeObserved, StorageError> {
        let size_kib = size.get();
        let name = zvol_name(pool, rsc, nr)?;
        let vid: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let all = self.list(pool).await?;
        let existing = all.iter().find(|z| z.name == name && z.kind == "volume");
        if let Some(old) = existing.filter(|z| z.vid.as_deref() != Some(vid.as_str())) {
            tracing::warn!(zvol = %old.name, "removing a zvol of an earlier resource of the same name");
            self.destroy(&all, &old.name).await?;
        }
        let want_bytes = size.bytes();
        match existing.filter(|z| z.vid.as_deref() == Some(vid.as_str())) {
            Some(z) if z.volsize.unwrap_or(0) < want_bytes => {
                self.runner.run(&self.zfs().args(["set", &format!("volsize={size_kib}KB"), &name])).await?;
            }
            Some(_) => {}
            None => {
                let mut c = self.zfs().arg("create");
                if pool.thin {
                    c = c.arg("-s");
                }
                c = c.args(["-V", &format!("{size_kib}KB"), "-o", &format!("cairn:vid={vid}"), &name]);
                self.runner.run(&c).await?;
            }
        }
        let now = self.list(pool).await?.into_iter().find(|z| z.name == name);
        let dev = format!("/dev/zvol/{name}");
        // udev makes the zvol link a moment after `zfs create`.
        let deadline = tokio::time::Instant::now() + self.settle;
        while !std::path::Path::new(&dev).exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(VolumeObserved {
            number: nr,
            device_path: Some(dev),
            allocated_kib: now.as_ref().map(Zvol::allocated_kib),
            usable_kib: now.as_ref().and_then(|z| z.volsize).map(|b| (b / 1024) as i64),
            disk_state: "UpToDate".into(),
            luks_device_path: None,
        })
    }

    /// A clone of volume `nr` of `src_rsc` in the same pool, as LINSTOR
    /// makes it: a snapshot of the source (`<src>@cairn_clone_<rsc>`), then
    /// `zfs clone` of it (`zfs_clone`: fast, but the snapshot stays as long
    /// as the clone) or `zfs send --embed --large-block | zfs receive -F`
    /// (a full copy; both snapshots go afterwards). The identity is set as
    /// the copy is made (`-o cairn:vid=…`), so a copy cut short is found
    /// without it and made again. An existing clone is only grown.
    #[allow(clippy::too_many_arguments)]
    pub async fn ensure_clone(
        &self,
        pool: &ZfsPool,
        rsc: &str,
        nr: u32,
        id: &str,
        size: Kib,
        src_rsc: &str,
        zfs_clone: bool,
    ) -> Result<VolumeObserved, StorageError> {
        let name = zvol_name(pool, rsc, nr)?;
        let src = zvol_name(pool, src_rsc, nr)?;
        let vid: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let all = self.list(pool).await?;
        let existing = all.iter().find(|z| z.name == name && z.kind == "volume");
        if existing.is_some_and(|z| z.vid.as_deref() == Some(vid.as_str())) {
            return self.ensure(pool, rsc, nr, id, size).await;
        }
        if let Some(old) = existing {
            tracing::warn!(zvol = %old.name, "removing a zvol that is no complete clone");
            self.destroy(&all, &old.name).await?;
        }
        let tag = format!("cairn_clone_{}", safe_name(rsc)?);
        let snap = format!("{src}@{tag}");
        if !all.iter().any(|z| z.name == snap) {
            if !all.iter().any(|z| z.name == src && z.kind == "volume") {
                return Err(StorageError::BadBacking(format!("the clone source {src} does not exist")));
            }
            self.runner.run(&self.zfs().args(["snapshot", &snap])).await?;
        }
        let with_vid = format!("cairn:vid={vid}");
        if zfs_clone {
            self.runner.run(&self.zfs().args(["clone", "-o", &with_vid, &snap, &name])).await?;
        } else {
            let send = Cmd::new("zfs").args(["send", "--embed", "--large-block", &snap]).timeout(COPY_TIMEOUT);
            let receive = Cmd::new("zfs").args(["receive", "-F", "-o", &with_vid, &name]);
            self.runner.run(&send.pipe(receive)).await?;
            // The copy arrives with the snapshot it was sent from.
            self.runner.run(&self.zfs().args(["destroy", &format!("{name}@{tag}")])).await?;
            self.runner.run(&self.zfs().args(["destroy", &snap])).await?;
        }
        self.ensure(pool, rsc, nr, id, size).await
    }

    /// `zfs destroy`, or — while snapshots of it remain — a rename out of
    /// the way (`_deleted_<name>`), as LINSTOR's dynamic delete strategy.
    async fn destroy(&self, all: &[Zvol], name: &str) -> Result<(), StorageError> {
        let has_snapshots = all.iter().any(|z| z.name.starts_with(&format!("{name}@")));
        if has_snapshots {
            let (parent, leaf) = name.rsplit_once('/').unwrap_or(("", name));
            let target = format!("{parent}/_deleted_{leaf}");
            self.runner.run(&self.zfs().args(["rename", name, &target])).await?;
        } else {
            self.runner.run(&self.zfs().args(["destroy", name])).await?;
        }
        Ok(())
    }

    /// Removes volumes of `rsc` whose number is not in `keep` (all with an
    /// empty `keep`).
    pub async fn remove_others(&self, pool: &ZfsPool, rsc: &str, keep: &[u32]) -> Result<(), StorageError> {
        let prefix = format!("{}/{}_", pool.dataset, safe_name(rsc)?);
        let all = self.list(pool).await?;
        for z in all.iter().filter(|z| z.kind == "volume") {
            let nr = z.name.strip_prefix(&prefix).and_then(volume_number);
            if nr.is_some_and(|nr| !keep.contains(&nr)) {
                self.destroy(&all, &z.name).await?;
            }
        }
        Ok(())
    }

    /// What each zvol of the pool references now, KiB, by resource and
    /// volume number (one `zfs list`).
    pub async fn allocated(&self, pool: &ZfsPool) -> Result<std::collections::BTreeMap<(String, u32), i64>, StorageError> {
        let prefix = format!("{}/", pool.dataset);
        Ok(self
            .list(pool)
            .await?
            .iter()
            .filter(|z| z.kind == "volume")
            .filter_map(|z| {
                z.name.strip_prefix(&prefix).and_then(split_volume_name).map(|(rsc, nr)| ((rsc.to_string(), nr), z.allocated_kib()))
            })
            .collect())
    }

    /// Resources with volumes in the pool (made by Cairn).
    pub async fn resources(&self, pool: &ZfsPool) -> Result<Vec<String>, StorageError> {
        let prefix = format!("{}/", pool.dataset);
        Ok(self
            .list(pool)
            .await?
            .into_iter()
            .filter(|z| z.kind == "volume" && z.vid.is_some())
            .filter_map(|z| z.name.strip_prefix(&prefix).and_then(split_volume_name).map(|(r, _)| r.to_string()))
            .filter(|r| !r.contains('/') && !r.starts_with("_deleted_"))
            .collect())
    }

    /// (total, free) KiB: the zpool's size and the dataset's available space.
    pub async fn capacity(&self, pool: &ZfsPool) -> Result<(i64, i64), StorageError> {
        let size = self.runner.run(&Cmd::new("zpool").args(["get", "size", "-Hp", pool.zpool()]).timeout(self.timeout)).await?;
        let avail = self.runner.run(&self.zfs().args(["get", "available", "-o", "value", "-Hp", &pool.dataset])).await?;
        let total = parse_value(&size.stdout, "zpool")? / 1024;
        let free = parse_value(&avail.stdout, "zfs")? / 1024;
        Ok((total as i64, free as i64))
    }
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;

    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/testdata/zfs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const LIST: [&str; 9] =
        ["zfs", "list", "-r", "-H", "-p", "-o", "name,refer,volsize,type,volblocksize,origin,clones,cairn:vid", "-t", "volume,snapshot"];

    fn list_cmd(ds: &str) -> Vec<&str> {
        LIST.iter().copied().chain([ds]).collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn list_and_capacity_output_parses() {
        let v = parse_list(&fixture("list.txt")).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            Zvol {
                name: "tank/web_00000".into(),
                refer: 57344,
                volsize: Some(67_108_864),
                kind: "volume".into(),
                vid: Some("0a1b2c3d4e5f".into())
            }
        );
        assert_eq!(v[2].kind, "snapshot");
        assert_eq!(v[2].volsize, None);
        assert_eq!(parse_value(&fixture("zpool-get-size.txt"), "zpool").unwrap(), 10_200_547_328);
        assert_eq!(parse_value(&fixture("zfs-get-available.txt"), "zfs").unwrap(), 9_663_676_416);
        assert!(parse_list("tank/x\t1\n").is_err());
        assert!(ZfsPool::new("p", "tank/linstor", false).is_ok());
        for bad in ["", "-o", "/tank", "tank/", "ta nk", "tank//x"] {
            assert!(ZfsPool::new("p", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocated_sizes_come_from_one_zfs_list() {
        let f = Arc::new(FakeRunner::new());
        let z = Zfs::new(f.clone(), Duration::from_secs(5));
        let pool = ZfsPool::new("zt", "tank", true).unwrap();
        f.expect(&list_cmd("tank"), &fixture("list.txt"));
        let a = rt().block_on(z.allocated(&pool)).unwrap();
        // The snapshot is not a volume; refer in bytes becomes KiB.
        assert_eq!(a, [(("db".to_string(), 0), 4944), (("web".to_string(), 0), 56)].into());
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn create_grow_and_delete_command_lines() {
        let f = Arc::new(FakeRunner::new());
        let z = Zfs::new(f.clone(), Duration::from_secs(5)).with_settle(Duration::ZERO);
        let thin = ZfsPool::new("zt", "tank", true).unwrap();
        let l = list_cmd("tank");
        f.expect(&l, "")
            .expect(&["zfs", "create", "-s", "-V", "65536KB", "-o", "cairn:vid=abc", "tank/db_00000"], "")
            .expect(&l, "tank/db_00000\t12288\t67108864\tvolume\t16384\t-\t-\tabc\n");
        let o = rt().block_on(z.ensure(&thin, "db", 0, "abc", Kib::new(65536).unwrap())).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/zvol/tank/db_00000"));
        assert_eq!((o.usable_kib, o.allocated_kib), (Some(65536), Some(12)));
        assert!(f.is_done(), "{:?}", f.calls());
        // Thick, and a grow.
        let thick = ZfsPool::new("z", "tank", false).unwrap();
        f.expect(&l, "tank/db_00000\t12288\t67108864\tvolume\t16384\t-\t-\tabc\n")
            .expect(&["zfs", "set", "volsize=131072KB", "tank/db_00000"], "")
            .expect(&l, "tank/db_00000\t12288\t134217728\tvolume\t16384\t-\t-\tabc\n");
        rt().block_on(z.ensure(&thick, "db", 0, "abc", Kib::new(131072).unwrap())).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        f.expect(&l, "").expect(&["zfs", "create", "-V", "4096KB", "-o", "cairn:vid=new", "tank/web_00000"], "").expect(&l, "");
        rt().block_on(z.ensure(&thick, "web", 0, "new", Kib::new(4096).unwrap())).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // Delete: destroy; with a snapshot left, rename out of the way.
        f.expect(&l, &fixture("list.txt")).expect(&["zfs", "rename", "tank/web_00000", "tank/_deleted_web_00000"], "");
        rt().block_on(z.remove_others(&thick, "web", &[])).unwrap();
        f.expect(&l, "tank/db_00000\t1\t2\tvolume\t8192\t-\t-\tabc\n").expect(&["zfs", "destroy", "tank/db_00000"], "");
        rt().block_on(z.remove_others(&thick, "db", &[])).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
    }

    #[test]
    fn capacity_reads_zpool_and_zfs() {
        let f = Arc::new(FakeRunner::new());
        let z = Zfs::new(f.clone(), Duration::from_secs(5)).with_settle(Duration::ZERO);
        let p = ZfsPool::new("z", "tank/linstor", true).unwrap();
        f.expect(&["zpool", "get", "size", "-Hp", "tank"], &fixture("zpool-get-size.txt"))
            .expect(&["zfs", "get", "available", "-o", "value", "-Hp", "tank/linstor"], &fixture("zfs-get-available.txt"));
        assert_eq!(rt().block_on(z.capacity(&p)).unwrap(), (9_961_472, 9_437_184));
    }

    #[test]
    fn clones_are_zfs_clones_or_send_receive_from_a_snapshot_of_the_source() {
        let f = Arc::new(FakeRunner::new());
        let z = Zfs::new(f.clone(), Duration::from_secs(5)).with_settle(Duration::ZERO);
        let pool = ZfsPool::new("zt", "tank", true).unwrap();
        let l = list_cmd("tank");
        let src = "tank/web_00000\t57344\t67108864\tvolume\t16384\t-\t-\ta1\n";
        let done = "tank/cl_00000\t1024\t67108864\tvolume\t16384\t-\t-\tc9\n";
        let size = Kib::new(65536).unwrap();
        // use_zfs_clone: snapshot, clone with the identity; the snapshot stays.
        f.expect(&l, src)
            .expect(&["zfs", "snapshot", "tank/web_00000@cairn_clone_cl"], "")
            .expect(&["zfs", "clone", "-o", "cairn:vid=c9", "tank/web_00000@cairn_clone_cl", "tank/cl_00000"], "")
            .expect(&l, &format!("{src}{done}"))
            .expect(&l, &format!("{src}{done}"));
        let o = rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", true)).unwrap();
        assert_eq!(o.device_path.as_deref(), Some("/dev/zvol/tank/cl_00000"));
        assert!(f.is_done(), "{:?}", f.calls());
        // send/receive, as LINSTOR pipes it (no shell here); both snapshots go.
        f.expect(&l, src)
            .expect(&["zfs", "snapshot", "tank/web_00000@cairn_clone_cl"], "")
            .expect(
                &[
                    "zfs",
                    "send",
                    "--embed",
                    "--large-block",
                    "tank/web_00000@cairn_clone_cl",
                    "|",
                    "zfs",
                    "receive",
                    "-F",
                    "-o",
                    "cairn:vid=c9",
                    "tank/cl_00000",
                ],
                "",
            )
            .expect(&["zfs", "destroy", "tank/cl_00000@cairn_clone_cl"], "")
            .expect(&["zfs", "destroy", "tank/web_00000@cairn_clone_cl"], "")
            .expect(&l, &format!("{src}{done}"))
            .expect(&l, &format!("{src}{done}"));
        rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // A finished clone is only ensured (no copy); a zvol without the
        // identity (a copy cut short) is destroyed and copied again, from
        // the snapshot already there.
        f.expect(&l, &format!("{src}{done}")).expect(&l, &format!("{src}{done}")).expect(&l, &format!("{src}{done}"));
        rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", false)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        let partial = "tank/cl_00000\t1024\t67108864\tvolume\t16384\t-\t-\t-\n";
        let snap = "tank/web_00000@cairn_clone_cl\t0\t-\tsnapshot\t-\t-\t-\t-\n";
        f.expect(&l, &format!("{src}{snap}{partial}"))
            .expect(&["zfs", "destroy", "tank/cl_00000"], "")
            .expect(&["zfs", "clone", "-o", "cairn:vid=c9", "tank/web_00000@cairn_clone_cl", "tank/cl_00000"], "")
            .expect(&l, &format!("{src}{done}"))
            .expect(&l, &format!("{src}{done}"));
        rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", true)).unwrap();
        assert!(f.is_done(), "{:?}", f.calls());
        // No source: an error, nothing made.
        f.expect(&l, "");
        assert!(rt().block_on(z.ensure_clone(&pool, "cl", 0, "c9", size, "web", true)).is_err());
        assert!(f.is_done(), "{:?}", f.calls());
    }
}
