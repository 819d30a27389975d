//! The messages between controller and satellites.
//!
//! Transport: HTTP/1.1 with JSON bodies; the controller is the client. It
//! proves it knows the cluster secret by a challenge and response, and
//! every request carries a MAC under the session key that derives from
//! it ([`auth`]: the secret itself never travels), and the protocol
//! version in [`VERSION_HEADER`]. A satellite answers a request of
//! another version with 409 and its own [`Hello`], so the controller can
//! report `VERSION_MISMATCH` instead of guessing.
//!
//! Flow: on connect the controller sends [`Apply`] with `full = true` (the
//! node's whole desired state; the satellite removes what is not in it),
//! then deltas (`full = false`) after each change that touches the node.
//! Every reply is the observed state of what the request touched, plus the
//! capacity of every pool. Between changes the controller asks for the
//! whole observed state ([`ObserveSince`]); the satellite answers
//! "unchanged" when it is the one the controller already holds, so an idle
//! heartbeat costs neither side a decode. It holds such a request (long
//! poll, up to [`ObserveSince::wait_ms`]) until its state changes, so an
//! idle node costs one exchange per hold, not one per heartbeat.

use serde::{Deserialize, Serialize};

pub mod auth;
pub mod error_report;
pub mod logging;
pub mod tls;

pub use error_report::{ErrorReport, ErrorReportFilter, ErrorReportsDeleted};

/// Bumped on every incompatible change of these messages.
pub const PROTO_VERSION: u32 = 12;
/// Header carrying the sender's [`PROTO_VERSION`].
pub const VERSION_HEADER: &str = "x-cairn-proto";
/// Header carrying the leader's epoch (high availability: the lease epoch
/// of the controller that sent the request; absent from a controller
/// without a lease, on SQLite, which is not checked). A satellite refuses a
/// request whose epoch is older than the newest it has seen ([`EpochGate`]),
/// so a deposed leader that wakes up cannot change anything.
pub const EPOCH_HEADER: &str = "x-cairn-epoch";
/// Paths on the satellite.
pub const PATH_HELLO: &str = "/internal/v1/hello";
pub const PATH_APPLY: &str = "/internal/v1/apply";
/// `POST` an [`ObserveSince`], answered by an [`Observation`].
pub const PATH_OBSERVE: &str = "/internal/v1/observe";
/// `GET`: the node's unused disks; `POST` [`PhysicalCreate`]: make a pool.
pub const PATH_PHYSICAL: &str = "/internal/v1/physical-storage";
/// GET: the satellite's [`LogLevels`]; POST a [`LogLevels`] to change them.
pub const PATH_CONFIG: &str = "/internal/v1/config";
/// Where an external file is on the node and whether it is current
/// (`POST` an [`ExtFileDesired`], answered by an [`ExtFileStatus`]).
pub const PATH_EXT_FILE_STATUS: &str = "/internal/v1/ext-file-status";
/// `POST` a [`BackupSend`]: upload a snapshot's volumes to S3, answered
/// by a [`BackupSent`] once every volume is complete (or failed).
pub const PATH_BACKUP_SEND: &str = "/internal/v1/backup/send";
/// `POST` a [`BackupReceive`]: download a backup chain into a snapshot of
/// a new resource, answered by a [`BackupReceived`].
pub const PATH_BACKUP_RECEIVE: &str = "/internal/v1/backup/receive";
/// `POST` a [`BackupAbort`]: stop the running transfers of a resource.
pub const PATH_BACKUP_ABORT: &str = "/internal/v1/backup/abort";
/// `POST` a [`BackupDiscard`]: remove what a restore downloaded (its
/// registration failed, or the controller stopped waiting for it),
/// answered by a [`BackupReceived`]. A satellite older than this path
/// answers 404.
pub const PATH_BACKUP_DISCARD: &str = "/internal/v1/backup/discard";
/// `POST` a [`ShipListen`]: listen for a snapshot shipped by a satellite
/// of another cluster, answered at once by a [`ShipListening`]; the
/// transfer runs on in the background.
pub const PATH_SHIP_LISTEN: &str = "/internal/v1/backup/ship-listen";
/// `POST` a [`ShipToken`]: wait for the shipment a [`ShipListen`] started
/// (or cancel it with `cancel`), answered by a [`BackupReceived`].
pub const PATH_SHIP_RESULT: &str = "/internal/v1/backup/ship-result";
/// `POST` a [`ShipSend`]: stream a snapshot to a listening satellite of
/// another cluster, answered by a [`BackupSent`] once it acknowledged.
pub const PATH_SHIP_SEND: &str = "/internal/v1/backup/ship-send";
/// `POST` an [`ErrorReportFilter`]: the satellite's error reports that
/// match, newest first (a satellite older than this path answers 404, read
/// as "no reports").
pub const PATH_ERROR_REPORTS: &str = "/internal/v1/error-reports";
/// `POST` an [`ErrorReportFilter`]: delete the matching reports, answered
/// by an [`ErrorReportsDeleted`].
pub const PATH_ERROR_REPORTS_DELETE: &str = "/internal/v1/error-reports/delete";
/// `GET`: what the satellite tells a SOS report ([`SosInfo`]).
pub const PATH_SOS: &str = "/internal/v1/sos";

/// A satellite's part of a SOS report: cheap facts only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SosInfo {
    /// The satellite's build (`cairn 0.1.0 (…)`).
    pub version: String,
    /// `drbdsetup status` output, or why there is none.
    pub drbdsetup_status: String,
    /// `drbdadm --version` output, or why there is none.
    pub drbd_version: String,
}

/// A satellite's memory of the newest leader epoch it has seen; with a
/// file ([`EpochGate::persistent`]) the memory survives a restart of the
/// satellite, so a deposed leader cannot slip in between a satellite's
/// restart and the new leader's first request.
#[derive(Debug, Default)]
pub struct EpochGate {
    newest: std::sync::atomic::AtomicU64,
    file: Option<std::path::PathBuf>,
    write: std::sync::Mutex<()>,
}

/// A request from a controller whose epoch is older than one seen before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fenced: this request comes from a controller of epoch {epoch}, but a leader of epoch {newest} has taken over; the old leader must not change anything"
)]
pub struct Fenced {
    pub epoch: u64,
    pub newest: u64,
}

impl EpochGate {
    /// A gate that keeps the newest epoch in `file` (read now: a missing
    /// file is epoch 0; an unreadable or damaged one is an error, as
    /// starting from 0 would let any old leader in).
    pub fn persistent(file: std::path::PathBuf) -> std::io::Result<EpochGate> {
        let newest = match std::fs::read_to_string(&file) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: not an epoch ({e})", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(EpochGate { newest: newest.into(), file: Some(file), write: Default::default() })
    }

    /// The newest epoch seen.
    pub fn newest(&self) -> u64 {
        self.newest.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets the request of `epoch` through unless a newer epoch was seen;
    /// a newer one becomes the newest (and is written to the file before
    /// the request goes on).
    pub fn admit(&self, epoch: u64) -> Result<(), Fenced> {
        let newest = self.newest.fetch_max(epoch, std::sync::atomic::Ordering::SeqCst);
        if epoch < newest {
            return Err(Fenced { epoch, newest });
        }
        if epoch > newest {
            self.remember();
        }
        Ok(())
    }

    /// Writes the newest epoch to the file (a temporary file, synced,
    /// renamed over it, the directory synced). It blocks, but only when a
    /// newer leader shows up. A failure is logged: the gate in memory
    /// still holds.
    fn remember(&self) {
        let Some(file) = &self.file else { return };
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let newest = self.newest();
        let tmp = file.with_extension("tmp");
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{newest}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)?;
            // The rename itself survives a power loss once the directory
            // is synced.
            match file.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })();
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), epoch = newest, "cannot keep the leader epoch on disk: {e}");
        }
    }

    /// Checks a request by its [`EPOCH_HEADER`] value: a request without
    /// one (a controller without a lease) passes unchecked; a value that
    /// is not a number is refused as epoch 0.
    pub fn admit_header(&self, value: Option<&str>) -> Result<(), Fenced> {
        match value {
            None => Ok(()),
            Some(v) => self.admit(v.trim().parse().unwrap_or(0)),
        }
    }
}

/// How a satellite reaches the bucket of an S3 remote (keys opened by the
/// controller for this one request; never logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub path_style: bool,
}

/// The checksum of a backup's chunks, in its frames and its chunk map
/// (docs/BACKUP-FORMAT.md). The whole chain of incrementals keeps the
/// algorithm of its full backup, so chunk maps compare like with like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    /// SHA-256: every backup written before BLAKE3 came.
    #[default]
    Sha256,
    /// BLAKE3 (32 bytes): every chain started since.
    Blake3,
}

impl Checksum {
    /// The name in a backup's `.meta` (`cairn.checksum`).
    pub fn as_str(self) -> &'static str {
        match self {
            Checksum::Sha256 => "sha256",
            Checksum::Blake3 => "blake3",
        }
    }

    /// The algorithm a `.meta` names; None for one this version does not know.
    pub fn parse(name: &str) -> Option<Checksum> {
        match name {
            "sha256" => Some(Checksum::Sha256),
            "blake3" => Some(Checksum::Blake3),
            _ => None,
        }
    }
}

/// One volume of a snapshot to upload as the object `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVolumeSend {
    pub number: u32,
    pub key: String,
    /// The chunk map (one hash per chunk, hex, of the send's
    /// [`BackupSend::checksum`]; empty string for an all-zero chunk) of the
    /// backup this one is based on: only chunks whose hash differs are
    /// uploaded. None: a full backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_chunks: Option<Vec<String>>,
}

/// Upload the volumes of snapshot `snapshot` of `resource` in `pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSend {
    pub s3: S3Target,
    pub pool: PoolDesired,
    pub resource: String,
    pub snapshot: String,
    pub volumes: Vec<BackupVolumeSend>,
    /// Bytes of volume data per chunk.
    pub chunk_size: u64,
    /// The snapshot (of the same resource, on this node) the base backup
    /// of an incremental was taken from: a provider that knows what
    /// changed since (LVM_THIN's `thin_delta`) reads only that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_snapshot: Option<String>,
    /// The checksum of the frames and the chunk map: an incremental's is
    /// its base's (the chunk maps must compare), a full backup's BLAKE3.
    #[serde(default)]
    pub checksum: Checksum,
}

/// What was uploaded of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackupVolumeSent {
    pub number: u32,
    pub key: String,
    /// The volume's size in bytes.
    pub size: u64,
    /// Chunks in the object (an incremental leaves unchanged ones out).
    pub chunks_stored: u64,
    /// Bytes of the object (compressed chunks and their headers).
    pub stored_bytes: u64,
    /// The chunk map of this backup (see [`BackupVolumeSend::base_chunks`]).
    pub chunk_map: Vec<String>,
}

/// The answer to [`BackupSend`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackupSent {
    pub volumes: Vec<BackupVolumeSent>,
    /// The checksum the satellite used (its chunk maps' algorithm).
    #[serde(default)]
    pub checksum: Checksum,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
}

/// One volume to restore: the objects of the chain, full backup first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVolumeReceive {
    pub number: u32,
    pub keys: Vec<String>,
    /// The volume's size in bytes.
    pub size: u64,
}

/// Download a backup into the snapshot `snapshot` of the (new) resource
/// `resource` in `pool`, from which the controller then restores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReceive {
    pub s3: S3Target,
    pub pool: PoolDesired,
    pub resource: String,
    pub snapshot: String,
    pub volumes: Vec<BackupVolumeReceive>,
}

/// Remove what a [`BackupReceive`] of `snapshot` of `resource` made in
/// `pool` for `volumes` (stopping it first if it still runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDiscard {
    pub pool: PoolDesired,
    pub resource: String,
    pub snapshot: String,
    pub volumes: Vec<u32>,
}

/// The answer to [`BackupReceive`] (and [`BackupDiscard`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackupReceived {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
}

/// One volume of a shipped snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipVolume {
    pub number: u32,
    /// The volume's size in bytes.
    pub size: u64,
}

/// Listen on `address` (port picked by the satellite) for one connection
/// that presents `token`, and receive the snapshot `snapshot` of
/// `resource` into `pool`: a copy of `base` (a snapshot of the same
/// resource on this node) with the shipped chunks written over it, or a
/// new sparse file when `base` is None.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipListen {
    pub token: Secret,
    pub address: String,
    pub pool: PoolDesired,
    pub resource: String,
    pub snapshot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub volumes: Vec<ShipVolume>,
    /// The resource exists on this node: leave the received files where
    /// taking the snapshot adopts them (the satellite would otherwise
    /// delete a snapshot it finds before the controller registered it).
    #[serde(default)]
    pub adopt: bool,
}

/// The answer to [`ShipListen`]: where the sender connects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShipListening {
    pub port: u16,
    /// The listener speaks TLS with the satellite's own certificate, whose
    /// sha256 (hex) this is: the sender pins it. None: plain TCP (the
    /// satellite runs without `--tls-cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
}

/// Names a shipment a [`ShipListen`] started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipToken {
    pub token: Secret,
    #[serde(default)]
    pub cancel: bool,
}

/// Stream the snapshot `snapshot` of `resource` in `pool` to the
/// satellite listening at `target` (`host:port`), presenting `token`.
/// With `base`, only chunks that differ from that older snapshot (which
/// the receiver holds too) are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipSend {
    pub target: String,
    pub token: Secret,
    pub pool: PoolDesired,
    pub resource: String,
    pub snapshot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub volumes: Vec<u32>,
    pub chunk_size: u64,
    /// Connect with TLS and accept only the certificate with this sha256
    /// (hex), as the receiving satellite's controller named it; None:
    /// plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
}

/// Stop the transfers of `resource` (every snapshot when None).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackupAbort {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A daemon's log levels in LINSTOR's spelling (`ERROR` ... `TRACE`):
/// `level` for the libraries, `level_linstor` for Cairn itself. In a
/// request, None keeps a level; in an answer, None: not known (logging is
/// not under Cairn's control, e.g. `RUST_LOG` is set).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogLevels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_linstor: Option<String>,
    /// Why a change was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a satellite says about itself (`GET /internal/v1/hello`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub proto_version: u32,
    /// The name the satellite was started with (`--node-name`).
    pub node_name: String,
    /// `uname -n` of the satellite's host.
    pub hostname: String,
    pub version: String,
    /// Random per satellite process: a change means the satellite
    /// restarted and needs a full apply.
    pub instance: String,
    pub providers: Vec<ProviderSupport>,
    /// Layers the satellite can build (`STORAGE`, `DRBD`, ...).
    #[serde(default)]
    pub layers: Vec<String>,
    /// Layers it cannot build, with the reasons (missing tool, module).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unsupported_layers: std::collections::BTreeMap<String, Vec<String>>,
    /// Directories the administrator allows external files in
    /// (`--allow-ext-files`); the controller's `check` route reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext_file_dirs: Vec<String>,
    /// The host's OS (`PRETTY_NAME` of /etc/os-release), shown as the
    /// node's `os_variant` (REST API 1.28).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_variant: Option<String>,
}

/// The OS variant LINSTOR's satellite reports: `PRETTY_NAME` of an
/// os-release file's text, between its quotes; "Unknown" without one.
pub fn os_variant(os_release: Option<&str>) -> String {
    let Some(text) = os_release else {
        return "Unknown (cannot open /etc/os-release)".to_string();
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("PRETTY_NAME="))
        .next_back()
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Unknown".to_string())
}

/// An external file's path without repeated or trailing '/'.
pub fn ext_file_normalized(path: &str) -> String {
    format!("/{}", path.split('/').filter(|e| !e.is_empty()).collect::<Vec<_>>().join("/"))
}

/// Whether a satellite allowing the directories `dirs` writes the external
/// file `path`: its directory is one of them exactly (LINSTOR compares the
/// normalized path's parent with its whitelist), never a subdirectory.
pub fn ext_file_allowed(path: &str, dirs: &[String]) -> bool {
    let n = ext_file_normalized(path);
    let parent = match n.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((d, _)) => d,
    };
    dirs.iter().any(|d| ext_file_normalized(d) == parent)
}

/// The answer to [`PATH_EXT_FILE_STATUS`]: LINSTOR's `ExtFileStatusPojo`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtFileStatus {
    /// Where the file (or its alternative) is; empty when it is not there.
    pub actual_path: String,
    pub content_match: bool,
    /// Why the status could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Storage provider kinds (LINSTOR's `DeviceProviderKind`), shared by the
/// controller and the satellite: decoded once from their names, matched as
/// a type everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProviderKind {
    Diskless,
    Lvm,
    LvmThin,
    Zfs,
    ZfsThin,
    File,
    FileThin,
    Spdk,
    RemoteSpdk,
    EbsInit,
    EbsTarget,
    StorageSpaces,
    StorageSpacesThin,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 13] = [
        ProviderKind::Diskless,
        ProviderKind::Lvm,
        ProviderKind::LvmThin,
        ProviderKind::Zfs,
        ProviderKind::ZfsThin,
        ProviderKind::File,
        ProviderKind::FileThin,
        ProviderKind::Spdk,
        ProviderKind::RemoteSpdk,
        ProviderKind::EbsInit,
        ProviderKind::EbsTarget,
        ProviderKind::StorageSpaces,
        ProviderKind::StorageSpacesThin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Diskless => "DISKLESS",
            ProviderKind::Lvm => "LVM",
            ProviderKind::LvmThin => "LVM_THIN",
            ProviderKind::Zfs => "ZFS",
            ProviderKind::ZfsThin => "ZFS_THIN",
            ProviderKind::File => "FILE",
            ProviderKind::FileThin => "FILE_THIN",
            ProviderKind::Spdk => "SPDK",
            ProviderKind::RemoteSpdk => "REMOTE_SPDK",
            ProviderKind::EbsInit => "EBS_INIT",
            ProviderKind::EbsTarget => "EBS_TARGET",
            ProviderKind::StorageSpaces => "STORAGE_SPACES",
            ProviderKind::StorageSpacesThin => "STORAGE_SPACES_THIN",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        let u = s.trim().to_ascii_uppercase();
        ProviderKind::ALL.into_iter().find(|k| k.as_str() == u)
    }

    pub fn is_thin(self) -> bool {
        matches!(
            self,
            ProviderKind::LvmThin
                | ProviderKind::ZfsThin
                | ProviderKind::FileThin
                | ProviderKind::StorageSpacesThin
                | ProviderKind::Diskless
        )
    }

    pub fn is_diskless(self) -> bool {
        self == ProviderKind::Diskless
    }

    /// Whether Cairn takes snapshots in pools of this kind: LVM_THIN, ZFS,
    /// ZFS_THIN, and FILE_THIN where the file system makes reflinks (the
    /// satellite probes that).
    pub fn supports_snapshots(self) -> bool {
        matches!(self, ProviderKind::LvmThin | ProviderKind::FileThin | ProviderKind::Zfs | ProviderKind::ZfsThin)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the satellite can serve a provider kind, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSupport {
    pub kind: ProviderKind,
    pub supported: bool,
    /// Why it is unsupported (missing tool, missing privilege).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// A storage pool the satellite must serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDesired {
    pub name: String,
    pub kind: ProviderKind,
    /// The backing object (`StorDriver/StorPoolName`): a directory for FILE
    /// and FILE_THIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
}

/// A volume of a resource on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeDesired {
    pub number: u32,
    /// Identity of this volume (from its UUID): a volume created again
    /// under the same resource name and number has another id.
    #[serde(default)]
    pub id: String,
    pub size_kib: i64,
    pub pool: String,
    /// The LUKS layer between DRBD (or the top) and the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luks: Option<LuksDesired>,
    /// Created from a snapshot (restore), if it does not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSourceDesired>,
    /// Created as a copy of another resource's volume on this node (a
    /// clone), if it does not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from: Option<CloneSourceDesired>,
}

/// A secret string: serialised as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// The LUKS layer of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LuksDesired {
    /// The volume's passphrase; None while the controller is locked (the
    /// master passphrase was not entered since it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Passphrases the volume had before `key` (newest first): a device
    /// that `key` does not open gets its LUKS key changed from the one of
    /// these that does (`cryptsetup luksChangeKey`, the data stays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<Secret>,
    /// Why the controller kept the key back although it has it (the link
    /// is not encrypted and the operator did not allow keys on such
    /// links); the satellite reports it as the volume's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// `StorDriver/LuksFormatOptions`, split into words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub format_options: Vec<String>,
    /// `StorDriver/LuksOpenOptions`, split into words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_options: Vec<String>,
}

/// A resource on this node, as the satellite must make it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceDesired {
    pub name: String,
    pub diskless: bool,
    pub volumes: Vec<VolumeDesired>,
    /// The DRBD layer, when the resource's stack has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drbd: Option<DrbdDesired>,
    /// Snapshots of this resource's volumes that must exist on this node
    /// (others of it go).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// Those of `snapshots` shipped here from another cluster: only they
    /// take over what a shipment left waiting for its registration; a
    /// snapshot taken here under the same name removes it instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received_snapshots: Vec<String>,
    /// Go back to a snapshot, once (the id marks the volumes that did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackDesired>,
    /// Deactivated (LINSTOR's `INACTIVE`): the storage stays, DRBD is
    /// taken down and not brought up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inactive: bool,
    /// External files the resource's definition deploys: the satellite
    /// writes them (if their directory is allowed) while it holds the
    /// resource, and removes them when no resource wants them any more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ExtFileDesired>,
    /// The resource is gone from this node, only `snapshots` of it stay
    /// (LINSTOR keeps the snapshots of a deleted ZFS resource): its
    /// volumes go (ZFS renames them aside with their snapshots), no
    /// snapshot is taken, and the ones not listed go. `volumes` are the
    /// snapshots' (number and pool).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshots_only: bool,
}

/// One external file to write (LINSTOR's `ExternalFile`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtFileDesired {
    /// Absolute path, as the controller checked it.
    pub path: String,
    /// The content, base64.
    pub content: String,
    /// Suffixes of alternative names (`.disabled`): an existing
    /// `path + suffix` is updated instead of `path`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_suffixes: Vec<String>,
}

/// A rollback to carry out once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RollbackDesired {
    pub snapshot: String,
    pub id: String,
    /// How ZFS / ZFS_THIN volumes go back (other providers ignore it).
    #[serde(default, skip_serializing_if = "ZfsRollback::is_dynamic")]
    pub zfs: ZfsRollback,
}

/// LINSTOR's `StorDriver/Zfs/RollbackStrategy`, as the controller chose
/// it for one rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZfsRollback {
    /// `zfs rollback` when the snapshot is the zvol's newest, else as
    /// `Clone`.
    #[default]
    Dynamic,
    /// `zfs rollback` only (the controller made sure the snapshot is the
    /// newest); the volume fails when ZFS refuses.
    Rollback,
    /// The zvol renamed aside with its snapshots, a `zfs clone` of the
    /// snapshot in its place.
    Clone,
}

impl ZfsRollback {
    pub fn is_dynamic(&self) -> bool {
        *self == ZfsRollback::Dynamic
    }
}

/// A new volume that starts as a copy of another resource's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeSourceDesired {
    pub resource: String,
    pub snapshot: String,
}

/// The volume a clone copies: the same number of `resource`, whose
/// volume has identity `id`, in the same pool.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CloneSourceDesired {
    pub resource: String,
    pub id: String,
    /// ZFS: `zfs clone` of a snapshot instead of send/receive.
    #[serde(default)]
    pub zfs_clone: bool,
}

/// Everything the satellite needs to write a resource's DRBD `.res` file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DrbdDesired {
    pub node_id: u8,
    pub port: u16,
    pub peer_slots: u8,
    pub secret: String,
    /// This node's replication address (an IP literal).
    pub address: String,
    /// The host name DRBD knows this node by (`on "<host>"`).
    pub host: String,
    pub diskless: bool,
    pub volumes: Vec<DrbdVolumeDesired>,
    /// `DrbdOptions/...` properties after LINSTOR's priority resolution.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    /// The other replicas, sorted by node name.
    pub peers: Vec<DrbdPeer>,
    /// This node was chosen to make brand-new volumes UpToDate once their
    /// metadata was created fresh (LINSTOR's `InitialUptoDateOn`): with a
    /// day-0 generation id by `set-gi`, without one by `primary --force`.
    #[serde(default)]
    pub initial_sync: bool,
    /// This replica got its disk by toggle-disk and joins data that
    /// exists: its fresh metadata is never stamped with the day-0
    /// generation id (a full sync from an UpToDate peer follows).
    #[serde(default)]
    pub joining: bool,
    /// I/O is to be suspended (`drbdadm suspend-io`) while a snapshot of
    /// the resource is taken on all its nodes; resumed when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend_io: bool,
    /// Node ids of deleted peers whose bitmap slot this replica still has
    /// to free (`drbdsetup forget-peer`); the controller hands them out
    /// again once every replica reported them in
    /// [`DrbdObserved::forgotten`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget_peers: Vec<u8>,
}

/// One volume of the DRBD resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DrbdVolumeDesired {
    pub number: u32,
    pub minor: u32,
    /// The volume definition's day-0 generation id (`DrbdCurrentGi`, 16
    /// hex digits): fresh metadata is stamped with it so that thinly
    /// backed replicas skip the initial sync, as LINSTOR does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day0_gi: Option<String>,
    /// Some replica of this volume has been UpToDate (the definition's
    /// `DRBD_INITIALIZED` flag): the initial race is over, nobody declares
    /// fresh metadata UpToDate on its own any more.
    #[serde(default)]
    pub initialized: bool,
    /// Whether this replica makes the volume UpToDate first, where that
    /// differs from the resource's `initial_sync` (a volume added while
    /// another replica was in use starts on that one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_sync: Option<bool>,
}

/// A peer of a DRBD resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DrbdPeer {
    pub host: String,
    pub node_id: u8,
    pub address: String,
    pub port: u16,
    pub diskless: bool,
    /// Explicit network paths to this peer (node connection
    /// `Paths/<name>/<node>`); empty: one path over `address`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<DrbdPath>,
    /// Options of this connection (`DrbdOptions/Net/...`,
    /// `DrbdOptions/PeerDevice/...`) from the resource and node connection,
    /// after LINSTOR's priority resolution; empty: the resource's own.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
}

/// One network path of a connection: this node's and the peer's address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DrbdPath {
    pub local: String,
    pub peer: String,
}

/// An unused disk of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PhysicalDevice {
    pub device: String,
    /// Bytes.
    pub size: i64,
    pub rotational: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
}

/// Make a volume group (LVM) or thin pool (LVM_THIN) on unused disks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PhysicalCreate {
    pub provider_kind: String,
    pub device_paths: Vec<String>,
    pub pool_name: String,
    #[serde(default)]
    pub pv_create_arguments: Vec<String>,
    #[serde(default)]
    pub vg_create_arguments: Vec<String>,
    #[serde(default)]
    pub lv_create_arguments: Vec<String>,
}

/// The answer to [`PhysicalCreate`]: the new pool's backing name (for
/// `StorDriver/StorPoolName`) or why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalCreated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
}

/// Desired state for a node: everything (`full`) or a delta.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Apply {
    /// Increases with every request the controller sends to this node.
    pub generation: u64,
    /// `true`: this is the whole desired state; anything else goes.
    pub full: bool,
    /// `true`: `pools` is the complete list of pools (also in a delta).
    #[serde(default)]
    pub pools_set: bool,
    /// Pools to serve.
    pub pools: Vec<PoolDesired>,
    /// Resources to create or change (upserts).
    pub resources: Vec<ResourceDesired>,
    /// Resources to remove (delta only).
    #[serde(default)]
    pub removed: Vec<String>,
}

/// An error of one object, for the user: LINSTOR's message/cause/details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// What a satellite sees of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeObserved {
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_kib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_kib: Option<i64>,
    /// `UpToDate`, `Diskless`, `Failed`, ...
    pub disk_state: String,
    /// The opened LUKS device (`/dev/mapper/Linstor-Crypt-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luks_device_path: Option<String>,
}

/// What a satellite sees of one resource.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourceObserved {
    pub name: String,
    pub volumes: Vec<VolumeObserved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
    /// The DRBD state of the resource (from `drbdsetup events2`), when
    /// it has a DRBD layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drbd: Option<DrbdObserved>,
    /// Snapshots of the resource present on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// Desired snapshots that could not be taken on this node, by name,
    /// with the reason. They belong to the snapshot, not to the resource:
    /// `error` stays clear of them, so later changes of the resource do
    /// not report them again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub snapshot_errors: std::collections::BTreeMap<String, ObjectError>,
}

/// The kernel's view of a DRBD resource on one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DrbdObserved {
    /// `false`: the configuration is written but the DRBD 9 kernel
    /// module is not there to run it (config-only satellites).
    pub kernel: bool,
    /// `Primary`, `Secondary` or `Unknown`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_promote: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_score: Option<i64>,
    /// `no`, or why I/O is suspended (`user`, `quorum`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<String>,
    pub connections: Vec<DrbdConnectionObserved>,
    pub volumes: Vec<DrbdVolumeObserved>,
    /// Those of [`DrbdDesired::forget_peers`] this replica has forgotten
    /// (or never had a bitmap slot for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten: Vec<u8>,
}

/// A connection to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DrbdConnectionObserved {
    /// The peer's name (`conn-name`).
    pub peer: String,
    pub peer_node_id: u8,
    /// `Connected`, `Connecting`, `StandAlone`, ...
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_role: Option<String>,
    /// DRBD called its split-brain helper for this connection and has not
    /// connected since: the data diverged and waits for a person to decide.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_brain: bool,
}

/// One DRBD volume (device) and its replication to each peer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DrbdVolumeObserved {
    pub number: u32,
    pub minor: u32,
    /// `UpToDate`, `Inconsistent`, `Diskless`, ...
    pub disk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<bool>,
    /// Usable size of the DRBD device, KiB (with `--statistics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_kib: Option<i64>,
    pub peers: Vec<DrbdPeerVolumeObserved>,
}

/// Replication of one volume to one peer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DrbdPeerVolumeObserved {
    pub peer: String,
    /// `Established`, `SyncSource`, `SyncTarget`, `Off`, ...
    pub replication: String,
    pub peer_disk: String,
    /// Resync progress in percent while syncing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<f64>,
}

/// Capacity of a pool, in KiB, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolObserved {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_kib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_kib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
    /// Whether the pool can take snapshots, as probed on the node (a
    /// FILE_THIN directory: reflinks); None when not probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_snapshots: Option<bool>,
}

/// The answer to [`Apply`]; the whole of it is in an [`Observation`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observed {
    pub generation: u64,
    /// The satellite process's instance id (see [`Hello::instance`]).
    #[serde(default)]
    pub instance: String,
    /// Resources the request touched (all of them for a full apply or an
    /// observe).
    pub resources: Vec<ResourceObserved>,
    /// Removals that happened (`error: None`) or failed.
    #[serde(default)]
    pub removed: Vec<ResourceObserved>,
    pub pools: Vec<PoolObserved>,
}

/// An observation request: the digest of the observation the controller
/// holds, if it holds one as the satellite sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObserveSince {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// While the observation is still the one `since` names, the satellite
    /// may hold the answer this long (milliseconds, at most
    /// [`MAX_OBSERVE_WAIT_MS`]), answering as soon as something changes.
    /// A satellite older than this field answers at once, as it always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// The longest a satellite holds an observation request.
pub const MAX_OBSERVE_WAIT_MS: u64 = 60_000;

/// The answer to [`ObserveSince`]: everything the satellite observes
/// (`observed`, every resource and pool), or nothing when its digest is
/// the one asked with (`since`): the state is as the controller holds it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observation {
    /// [`Observed::digest`] of the satellite's current observation.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
}

impl Observation {
    /// The answer to `since` when `o` is what the satellite observes now.
    pub fn answer(o: Observed, since: Option<&str>) -> Observation {
        let digest = o.digest();
        let observed = (since != Some(digest.as_str())).then_some(o);
        Observation { digest, observed }
    }
}

impl Observed {
    /// A digest of everything in this observation (the instance and
    /// generation included): sha256 of its JSON, first 128 bits in hex.
    /// Equal digests: equal observations (the JSON of one value is always
    /// written the same way: fields in order, maps sorted).
    pub fn digest(&self) -> String {
        json_digest(self).iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl ResourceDesired {
    /// A digest of this desired resource, as [`Observed::digest`]: equal
    /// digests, equal versions. The controller keeps it instead of a copy
    /// of what a satellite acknowledged.
    pub fn digest(&self) -> [u8; 16] {
        json_digest(self)
    }
}

/// The first 128 bits of the sha256 of a value's JSON, written straight
/// into the hash (no buffer).
fn json_digest<T: Serialize>(value: &T) -> [u8; 16] {
    struct Sink(ring::digest::Context);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(ring::digest::Context::new(&ring::digest::SHA256));
    // Writing into a hash cannot fail, and these types always serialise.
    if let Err(e) = serde_json::to_writer(&mut sink, value) {
        sink.0.update(e.to_string().as_bytes());
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&sink.0.finish().as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_variant_is_pretty_name_as_linstor_reads_it() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        assert_eq!(os_variant(Some(debian)), "Debian GNU/Linux 13 (trixie)");
        assert_eq!(os_variant(Some("ID=alpine\nPRETTY_NAME=Alpine\n")), "Alpine");
        assert_eq!(os_variant(Some("ID=x\n")), "Unknown");
        assert_eq!(os_variant(None), "Unknown (cannot open /etc/os-release)");
    }

    #[test]
    fn the_gate_refuses_epochs_older_than_the_newest_seen() {
        let g = EpochGate::default();
        assert_eq!(g.admit(3), Ok(()));
        assert_eq!(g.admit(3), Ok(()), "the same leader again");
        let e = g.admit(2).err();
        assert_eq!(e, Some(Fenced { epoch: 2, newest: 3 }));
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("epoch 2"));
        assert!(g.admit(0).is_err(), "no lease after a leader is older still");
        assert_eq!(g.admit(4), Ok(()));
        assert!(g.admit(3).is_err());
        assert_eq!(g.admit_header(None), Ok(()), "a controller without a lease is not checked");
        assert_eq!(g.admit_header(Some(" 4")), Ok(()));
        assert!(g.admit_header(Some("x")).is_err());
    }

    #[test]
    fn a_persistent_gate_remembers_the_newest_epoch_across_restarts() {
        let dir = std::env::temp_dir().join(format!("cairn-epoch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("leader-epoch");
        let _ = std::fs::remove_file(&file);
        let g = EpochGate::persistent(file.clone()).unwrap();
        assert_eq!(g.newest(), 0, "no file: nothing seen yet");
        assert_eq!(g.admit(7), Ok(()));
        assert_eq!(g.admit(5).err(), Some(Fenced { epoch: 5, newest: 7 }));
        drop(g);
        // The satellite restarts: the old leader stays fenced.
        let g = EpochGate::persistent(file.clone()).unwrap();
        assert_eq!(g.newest(), 7);
        assert!(g.admit(6).is_err());
        assert_eq!(g.admit(9), Ok(()));
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "9");
        // A damaged file is refused, not read as 0.
        std::fs::write(&file, "garbage").unwrap();
        assert!(EpochGate::persistent(file.clone()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn apply_round_trips_and_tolerates_missing_optional_fields() {
        let a = Apply {
            generation: 7,
            full: true,
            pools_set: true,
            pools: vec![PoolDesired { name: "p".into(), kind: ProviderKind::FileThin, backing: Some("/srv".into()) }],
            resources: vec![ResourceDesired {
                name: "r".into(),
                diskless: false,
                volumes: vec![VolumeDesired { number: 0, id: "ab".into(), size_kib: 1024, pool: "p".into(), ..Default::default() }],
                snapshots: vec!["s1".into()],
                ..Default::default()
            }],
            removed: vec![],
        };
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Apply>(&s).unwrap(), a);
        let o: Observed = serde_json::from_str(r#"{"generation":1,"resources":[],"pools":[]}"#).unwrap();
        assert!(o.removed.is_empty());
    }

    #[test]
    fn a_desired_resource_digest_follows_every_field() {
        let r = ResourceDesired {
            name: "r".into(),
            volumes: vec![VolumeDesired { number: 0, id: "v".into(), size_kib: 1024, pool: "p".into(), ..Default::default() }],
            snapshots: vec!["s1".into()],
            ..Default::default()
        };
        assert_eq!(r.digest(), r.clone().digest());
        let mut grown = r.clone();
        grown.volumes[0].size_kib = 2048;
        let mut inactive = r.clone();
        inactive.inactive = true;
        let mut snapped = r.clone();
        snapped.snapshots.push("s2".into());
        let mut other_id = r.clone();
        other_id.volumes[0].id = "w".into();
        let digests: std::collections::BTreeSet<[u8; 16]> =
            [&r, &grown, &inactive, &snapped, &other_id].iter().map(|x| x.digest()).collect();
        assert_eq!(digests.len(), 5, "each change is another digest");
    }

    #[test]
    fn an_observation_is_answered_unchanged_only_when_the_digest_asked_with_is_current() {
        let o = Observed {
            generation: 3,
            instance: "i1".into(),
            resources: vec![ResourceObserved { name: "r".into(), ..Default::default() }],
            removed: vec![],
            pools: vec![PoolObserved { name: "p".into(), free_kib: Some(10), ..Default::default() }],
        };
        let first = Observation::answer(o.clone(), None);
        assert_eq!(first.observed.as_ref(), Some(&o));
        assert_eq!(first.digest.len(), 32);
        let same = Observation::answer(o.clone(), Some(&first.digest));
        assert_eq!(same, Observation { digest: first.digest.clone(), observed: None });
        assert_eq!(serde_json::to_string(&same).unwrap(), format!(r#"{{"digest":"{}"}}"#, first.digest));
        // Any change (capacity, instance) is another digest: the whole answer.
        let mut fuller = o.clone();
        fuller.pools[0].free_kib = Some(9);
        let mut restarted = o.clone();
        restarted.instance = "i2".into();
        for changed in [fuller, restarted] {
            let a = Observation::answer(changed.clone(), Some(&first.digest));
            assert_ne!(a.digest, first.digest);
            assert_eq!(a.observed, Some(changed));
        }
    }
}
