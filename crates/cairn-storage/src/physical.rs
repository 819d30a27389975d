//! Physical storage: the empty disks of a node, and turning some of them
//! into an LVM volume group or thin pool (LINSTOR's physical-storage API).

use std::sync::Arc;
use std::time::Duration;

use cairn_exec::{Cmd, CommandRunner, ExecError};
use cairn_proto::{PhysicalCreate, PhysicalDevice};
use serde::Deserialize;

use crate::StorageError;

/// Disks smaller than this are not offered (LINSTOR's lower bound).
pub const MIN_SIZE_BYTES: i64 = 1 << 30;

#[derive(Deserialize)]
struct Lsblk {
    blockdevices: Vec<BlockDevice>,
}

#[derive(Deserialize)]
struct BlockDevice {
    name: String,
    size: Option<i64>,
    rota: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    wwn: Option<String>,
    fstype: Option<String>,
    mountpoint: Option<String>,
    ro: Option<bool>,
    #[serde(default)]
    children: Vec<serde_json::Value>,
}

/// Candidates from `lsblk -J -b -o NAME,SIZE,ROTA,TYPE,MODEL,SERIAL,WWN,
/// FSTYPE,MOUNTPOINT,RO,PKNAME`: whole disks, writable, at least 1 GiB,
/// without partitions, holders, file systems or mounts.
pub fn parse_lsblk(json: &str) -> Result<Vec<PhysicalDevice>, StorageError> {
    let l: Lsblk = serde_json::from_str(json).map_err(|e| StorageError::Output { program: "lsblk", detail: e.to_string() })?;
    Ok(l.blockdevices
        .into_iter()
        .filter(|d| d.kind.as_deref() == Some("disk"))
        .filter(|d| d.children.is_empty() && d.fstype.is_none() && d.mountpoint.is_none() && d.ro != Some(true))
        .filter(|d| d.size.unwrap_or(0) >= MIN_SIZE_BYTES)
        .map(|d| PhysicalDevice {
            device: format!("/dev/{}", d.name),
            size: d.size.unwrap_or(0),
            rotational: d.rota.unwrap_or(false),
            model: d.model.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            serial: d.serial.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            wwn: d.wwn.filter(|s| !s.is_empty()),
        })
        .collect())
}

/// What a created pool is called: the backing name of its storage pool.
pub fn backing_name(req: &PhysicalCreate) -> Result<String, StorageError> {
    if !crate::lvm::lvm_name_ok(&req.pool_name) {
        return Err(StorageError::BadBacking(format!("'{}' cannot name a volume group", req.pool_name)));
    }
    match req.provider_kind.as_str() {
        "LVM" => Ok(req.pool_name.clone()),
        // LINSTOR's layout: volume group linstor_<pool>, thin pool <pool>.
        "LVM_THIN" => Ok(format!("linstor_{0}/{0}", req.pool_name)),
        other => Err(StorageError::BadBacking(format!("physical storage for {other} is not supported (LVM, LVM_THIN)"))),
    }
}

pub struct Physical {
    runner: Arc<dyn CommandRunner>,
    timeout: Duration,
}

impl Physical {
    pub fn new(runner: Arc<dyn CommandRunner>, timeout: Duration) -> Physical {
        Physical { runner, timeout }
    }

    async fn run(&self, c: Cmd) -> Result<String, StorageError> {
        Ok(self.runner.run(&c.timeout(self.timeout)).await?.stdout)
    }

    /// Whether a device carries any signature (`blkid -p`: exit 2 = none).
    async fn has_signature(&self, dev: &str) -> Result<bool, StorageError> {
        match self.runner.run(&Cmd::new("blkid").args(["-p", "-o", "value", "-s", "TYPE", dev]).timeout(self.timeout).quiet()).await {
            Ok(o) => Ok(!o.stdout.trim().is_empty()),
            Err(ExecError::NonZero { code: 2, .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The node's unused disks.
    pub async fn devices(&self) -> Result<Vec<PhysicalDevice>, StorageError> {
        let out = self
            .run(Cmd::new("lsblk").args(["-J", "-b", "-o", "NAME,SIZE,ROTA,TYPE,MODEL,SERIAL,WWN,FSTYPE,MOUNTPOINT,RO,PKNAME"]))
            .await?;
        let mut free = Vec::new();
        // Without udev lsblk may not know a disk's signature: ask blkid.
        for d in parse_lsblk(&out)? {
            if !self.has_signature(&d.device).await? {
                free.push(d);
            }
        }
        Ok(free)
    }

    /// `pvcreate`, `vgcreate` and for LVM_THIN `lvcreate -l 100%FREE -T`;
    /// only on devices that are unused now. Returns the backing name.
    pub async fn create(&self, req: &PhysicalCreate) -> Result<String, StorageError> {
        let backing = backing_name(req)?;
        if req.device_paths.is_empty() {
            return Err(StorageError::BadBacking("no device_paths given".into()));
        }
        let free: Vec<String> = self.devices().await?.into_iter().map(|d| d.device).collect();
        if let Some(busy) = req.device_paths.iter().find(|d| !free.contains(d)) {
            return Err(StorageError::BadBacking(format!(
                "{busy} is not an unused disk of at least 1 GiB on this node (unused: {})",
                if free.is_empty() { "none".to_string() } else { free.join(", ") }
            )));
        }
        let vg = backing.split('/').next().unwrap_or(&backing).to_string();
        self.run(Cmd::new("pvcreate").args(&req.pv_create_arguments).args(&req.device_paths)).await?;
        self.run(Cmd::new("vgcreate").args(&req.vg_create_arguments).arg(&vg).args(&req.device_paths)).await?;
        if req.provider_kind == "LVM_THIN" {
            self.run(Cmd::new("lvcreate").args(["-l", "100%FREE", "-T", "-n", &backing]).args(&req.lv_create_arguments)).await?;
        }
        Ok(backing)
    }
}

#[cfg(test)]
mod tests {
    use cairn_exec::FakeRunner;

    use super::*;

    #[test]
    fn only_empty_whole_disks_are_offered() {
        let json = std::fs::read_to_string(format!("{}/testdata/lsblk-vm.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let d = parse_lsblk(&json).unwrap();
        // vda holds vg0's volumes (children); vdb holds vgt.
        assert!(d.is_empty(), "{d:?}");
        let fresh = r#"{"blockdevices":[
            {"name":"vdc","size":2147483648,"rota":true,"type":"disk","model":null,"serial":" S1 ","wwn":null,"fstype":null,"mountpoint":null,"ro":false,"pkname":null},
            {"name":"vdd","size":1048576,"rota":true,"type":"disk","fstype":null,"mountpoint":null,"ro":false},
            {"name":"vde","size":2147483648,"rota":false,"type":"disk","fstype":"ext4","mountpoint":null,"ro":false},
            {"name":"sr0","size":2147483648,"rota":true,"type":"rom","fstype":null,"mountpoint":null,"ro":true},
            {"name":"loop0","size":2147483648,"rota":false,"type":"loop","fstype":null,"mountpoint":null,"ro":false}]}"#;
        let d = parse_lsblk(fresh).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].device.as_str(), d[0].size, d[0].rotational, d[0].serial.as_deref()), ("/dev/vdc", 2147483648, true, Some("S1")));
        assert!(parse_lsblk("not json").is_err());
    }

    fn req(kind: &str, pool: &str, devs: &[&str]) -> PhysicalCreate {
        PhysicalCreate {
            provider_kind: kind.into(),
            device_paths: devs.iter().map(|s| s.to_string()).collect(),
            pool_name: pool.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_thin_pool_is_made_on_free_disks_only() {
        let f = Arc::new(FakeRunner::new());
        let p = Physical::new(f.clone(), Duration::from_secs(5));
        let lsblk =
            r#"{"blockdevices":[{"name":"vdc","size":2147483648,"rota":true,"type":"disk","fstype":null,"mountpoint":null,"ro":false}]}"#;
        let list = ["lsblk", "-J", "-b", "-o", "NAME,SIZE,ROTA,TYPE,MODEL,SERIAL,WWN,FSTYPE,MOUNTPOINT,RO,PKNAME"];
        f.expect(&list, lsblk)
            .expect_failure(&["blkid", "-p", "-o", "value", "-s", "TYPE", "/dev/vdc"], 2, "")
            .expect(&["pvcreate", "/dev/vdc"], "")
            .expect(&["vgcreate", "linstor_tp", "/dev/vdc"], "")
            .expect(&["lvcreate", "-l", "100%FREE", "-T", "-n", "linstor_tp/tp"], "");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(rt.block_on(p.create(&req("LVM_THIN", "tp", &["/dev/vdc"]))).unwrap(), "linstor_tp/tp");
        assert!(f.is_done(), "{:?}", f.calls());
        // A disk with a signature is refused before anything is written.
        f.expect(&list, lsblk).expect(&["blkid", "-p", "-o", "value", "-s", "TYPE", "/dev/vdc"], "LVM2_member\n");
        let e = rt.block_on(p.create(&req("LVM", "vg1", &["/dev/vdc"]))).unwrap_err();
        assert!(e.to_string().contains("not an unused disk"), "{e}");
        assert!(f.is_done());
        assert!(backing_name(&req("ZFS", "z", &[])).is_err());
        assert!(backing_name(&req("LVM", "-x", &[])).is_err());
    }
}
