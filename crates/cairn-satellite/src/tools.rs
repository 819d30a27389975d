//! Which providers this satellite can serve: tools present, privileges
//! held. Checked once at start-up and reported in `Hello`, so a missing
//! tool is a readable state instead of a half-created device.

use std::path::Path;

use cairn_exec::{Cmd, CommandRunner};
use cairn_proto::{ProviderKind, ProviderSupport};

/// Whether this process runs as root (effective user id 0).
pub fn is_root() -> bool {
    euid() == Some(0)
}

/// The effective user id, from /proc/self/status.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

async fn have(runner: &dyn CommandRunner, program: &str) -> bool {
    runner.run(&Cmd::new(program).arg("--version").timeout(std::time::Duration::from_secs(10)).quiet()).await.is_ok()
}

/// Probes the tools and privileges each provider needs.
pub async fn probe(runner: &dyn CommandRunner) -> Vec<ProviderSupport> {
    let mut missing_common = Vec::new();
    for tool in ["losetup", "wipefs", "df"] {
        if !have(runner, tool).await {
            missing_common.push(format!("{tool} (util-linux/coreutils) not found"));
        }
    }
    if !is_root() {
        missing_common.push("root privileges (loop devices need CAP_SYS_ADMIN)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        missing_common.push("/dev/loop-control (the loop driver)".into());
    }
    let mut out = vec![ProviderSupport { kind: ProviderKind::Diskless, supported: true, missing: vec![] }];
    // FILE_THIN sizes its sparse files itself; FILE runs fallocate.
    for (kind, tool) in [(ProviderKind::File, Some("fallocate")), (ProviderKind::FileThin, None)] {
        let mut missing = missing_common.clone();
        if let Some(tool) = tool
            && !have(runner, tool).await
        {
            missing.push(format!("{tool} not found"));
        }
        out.push(ProviderSupport { kind, supported: missing.is_empty(), missing });
    }
    // LVM: the tools, root, and device-mapper in the kernel.
    let mut lvm_missing = Vec::new();
    if runner.run(&Cmd::new("lvm").arg("version").timeout(std::time::Duration::from_secs(10)).quiet()).await.is_err() {
        lvm_missing.push("lvm (lvm2) not found".to_string());
    }
    if !have(runner, "wipefs").await {
        lvm_missing.push("wipefs (util-linux) not found".into());
    }
    if !is_root() {
        lvm_missing.push("root privileges".into());
    }
    if let Err(why) = device_mapper(runner).await {
        lvm_missing.push(why);
    }
    out.push(ProviderSupport { kind: ProviderKind::Lvm, supported: lvm_missing.is_empty(), missing: lvm_missing.clone() });
    let mut thin_missing = lvm_missing;
    if runner.run(&Cmd::new("thin_check").arg("-V").timeout(std::time::Duration::from_secs(10)).quiet()).await.is_err() {
        thin_missing.push("thin_check (thin-provisioning-tools) not found".into());
    }
    out.push(ProviderSupport { kind: ProviderKind::LvmThin, supported: thin_missing.is_empty(), missing: thin_missing });
    // ZFS: the tools and the kernel module.
    let mut zfs_missing = Vec::new();
    for tool in ["zfs", "zpool"] {
        if runner.run(&Cmd::new(tool).arg("version").timeout(std::time::Duration::from_secs(10)).quiet()).await.is_err() {
            zfs_missing.push(format!("{tool} (zfsutils-linux) not found"));
        }
    }
    if !Path::new("/dev/zfs").exists() {
        zfs_missing.push("the ZFS kernel module (/dev/zfs)".into());
    }
    if !is_root() {
        zfs_missing.push("root privileges".into());
    }
    for kind in [ProviderKind::Zfs, ProviderKind::ZfsThin] {
        out.push(ProviderSupport { kind, supported: zfs_missing.is_empty(), missing: zfs_missing.clone() });
    }
    // Kinds LINSTOR knows that Cairn does not implement.
    let not_yet: Vec<ProviderKind> = ProviderKind::ALL.into_iter().filter(|k| !out.iter().any(|p| p.kind == *k)).collect();
    for kind in not_yet {
        out.push(ProviderSupport { kind, supported: false, missing: vec!["not implemented by this Cairn version".into()] });
    }
    out
}

/// Whether the LUKS layer can run: cryptsetup, root and device-mapper.
pub async fn luks_support(runner: &dyn CommandRunner) -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    if !have(runner, "cryptsetup").await {
        missing.push("cryptsetup (cryptsetup-bin) not found".to_string());
    }
    if !is_root() {
        missing.push("root privileges".into());
    }
    if let Err(why) = device_mapper(runner).await {
        missing.push(why);
    }
    if missing.is_empty() { Ok(()) } else { Err(missing) }
}

/// Whether the kernel's device-mapper answers (`dmsetup version` talks to
/// it; a /dev/mapper/control node alone proves nothing).
async fn device_mapper(runner: &dyn CommandRunner) -> Result<(), String> {
    match runner.run(&Cmd::new("dmsetup").arg("version").timeout(std::time::Duration::from_secs(10)).quiet()).await {
        Ok(_) => Ok(()),
        Err(cairn_exec::ExecError::Spawn { not_found: true, .. }) => Err("dmsetup (dmsetup package) not found".into()),
        Err(_) => Err("device-mapper in the kernel (dmsetup version cannot reach the driver; load dm-mod)".into()),
    }
}
