//! The keys of encrypted (LUKS) volumes in backups, as LINSTOR carries
//! them: a backup's metadata holds each volume's LUKS passphrase sealed
//! with the source cluster's master key, and the source's master key
//! sealed with its master passphrase (`luksInfo`: the values of the
//! controller properties `encrypted/masterkey`, `encrypted/masterhash`,
//! `encrypted/passphrasesalt`, under LINSTOR's names `masterPassword`,
//! `masterCryptHash`, `masterCryptSalt`). A restore opens the volume keys
//! with the source's master key (this cluster's own when the hashes match,
//! else the one the source's passphrase opens) and seals them again with
//! this cluster's master key.

use std::collections::BTreeMap;

use cairn_api::rc;
use cairn_domain::OpError;
use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoError, MasterKey, PROP_HASH, PROP_MASTER_KEY, PROP_SALT};

/// LINSTOR's `LuksLayerMetaPojo`: the source cluster's master key, sealed
/// with its master passphrase (Cairn's sealing, see [`crate::crypto`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LuksInfo {
    pub master_password: String,
    pub master_crypt_hash: String,
    pub master_crypt_salt: String,
}

impl LuksInfo {
    /// The stored master key of a cluster (its controller properties);
    /// None when no master passphrase was created.
    pub fn from_props(get: &dyn Fn(&str) -> Option<String>) -> Option<LuksInfo> {
        Some(LuksInfo { master_password: get(PROP_MASTER_KEY)?, master_crypt_hash: get(PROP_HASH)?, master_crypt_salt: get(PROP_SALT)? })
    }

    fn prop(&self, k: &str) -> Option<String> {
        match k {
            PROP_MASTER_KEY => Some(self.master_password.clone()),
            PROP_HASH => Some(self.master_crypt_hash.clone()),
            PROP_SALT => Some(self.master_crypt_salt.clone()),
            _ => None,
        }
    }
}

/// The encrypted volumes' keys of a backup of `rsc`, sealed again with
/// `local` (this cluster's unlocked master key): `sealed` holds each
/// volume's key as the backup has it (None: the backup has none),
/// `passphrase` the source cluster's master passphrase when given.
/// Nothing is written before this answers, so every refusal comes first.
pub fn reseal(
    op: i64,
    rsc: &str,
    info: Option<&LuksInfo>,
    sealed: &BTreeMap<u32, Option<String>>,
    passphrase: Option<&str>,
    local: Option<&MasterKey>,
) -> Result<BTreeMap<u32, String>, OpError> {
    let Some(local) = local else {
        return Err(OpError::new(
            op,
            rc::FAIL_NOT_FOUND_CRYPT_KEY,
            format!("Restoring the encrypted volumes of '{rsc}' needs this cluster's master key."),
        )
        .cause("The restored volumes' keys are sealed with the master key, which is not set or not unlocked.")
        .correction("Create or enter the master passphrase"));
    };
    let missing = sealed.iter().filter(|(_, s)| s.is_none()).map(|(nr, _)| nr.to_string()).collect::<Vec<_>>();
    let Some(info) = info.filter(|_| missing.is_empty()) else {
        return Err(OpError::new(
            op,
            rc::FAIL_INVLD_BACKUP_CONFIG,
            format!("The backup of '{rsc}' holds encrypted volumes without their keys."),
        )
        .cause(if missing.is_empty() {
            "Its metadata has no luksInfo (the source's sealed master key).".to_string()
        } else {
            format!("Its metadata has no key of volume(s) {}; it was written before Cairn kept keys in backups.", missing.join(", "))
        }));
    };
    let opened;
    let source = match passphrase.filter(|p| !p.is_empty()) {
        Some(p) => {
            opened = MasterKey::unlock(p, &|k| info.prop(k)).map_err(|e| {
                OpError::new(op, rc::FAIL_UNKNOWN_ERROR, "Decrypting the master password failed.")
                    .cause(match e {
                        CryptoError::WrongPassphrase => "The passphrase does not open the source cluster's master key.".to_string(),
                        other => format!("The backup's luksInfo: {other}."),
                    })
                    .correction("Give the master passphrase of the cluster that made the backup.")
            })?;
            &opened
        }
        None if info.master_crypt_hash == local.hash_hex() => local,
        None => {
            return Err(OpError::new(
                op,
                rc::FAIL_NOT_FOUND_CRYPT_KEY,
                format!("The resource {rsc} to be restored seems to have luks configured, but no passphrase was given."),
            )
            .cause("The backup was made by a cluster with another master key.")
            .correction("Give the master passphrase of the cluster that made the backup (passphrase)."));
        }
    };
    let mut out = BTreeMap::new();
    for (nr, s) in sealed {
        let Some(s) = s else { continue };
        let plain = source.open(s).map_err(|e| {
            OpError::new(op, rc::FAIL_UNKNOWN_ERROR, "De- or encrypting the volume passwords failed.")
                .cause(format!("The key of volume {nr} does not open with the source's master key: {e}."))
        })?;
        let again = local
            .seal(&plain)
            .map_err(|e| OpError::new(op, rc::FAIL_UNKNOWN_ERROR, "De- or encrypting the volume passwords failed.").cause(e.to_string()))?;
        out.insert(*nr, again);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(pass: &str) -> (MasterKey, LuksInfo) {
        let (key, props) = MasterKey::create(pass).unwrap();
        let props: BTreeMap<String, String> = props.into_iter().collect();
        let info = LuksInfo::from_props(&|k| props.get(k).cloned()).unwrap();
        (key, info)
    }

    const OP: i64 = rc::MASK_CRT | rc::MASK_BACKUP;

    fn code(e: &OpError) -> i64 {
        e.rc.ret_code & !rc::MASK_CRT & !rc::MASK_BACKUP & !rc::MASK_ERROR
    }

    #[test]
    fn the_same_cluster_opens_with_its_own_key_another_with_the_sources_passphrase() {
        let (src, info) = cluster("source-pw");
        let vol_key = src.new_volume_secret().unwrap();
        let plain = src.open(&vol_key).unwrap();
        let sealed: BTreeMap<u32, Option<String>> = [(0, Some(vol_key.clone()))].into();

        // Same master key, no passphrase: sealed again with it.
        let got = reseal(OP, "r", Some(&info), &sealed, None, Some(&src)).unwrap();
        assert_eq!(src.open(&got[&0]).unwrap(), plain);

        // Another cluster: the source's passphrase, the key re-sealed with
        // the target's master key (not openable with the source's).
        let (dst, _) = cluster("target-pw");
        let got = reseal(OP, "r", Some(&info), &sealed, Some("source-pw"), Some(&dst)).unwrap();
        assert_eq!(dst.open(&got[&0]).unwrap(), plain);
        assert!(src.open(&got[&0]).is_err());

        // Without it, or with a wrong one: refused.
        let e = reseal(OP, "r", Some(&info), &sealed, None, Some(&dst)).unwrap_err();
        assert_eq!(code(&e), rc::FAIL_NOT_FOUND_CRYPT_KEY, "{e:?}");
        assert!(e.rc.message.contains("no passphrase was given"), "{e:?}");
        let e = reseal(OP, "r", Some(&info), &sealed, Some("target-pw"), Some(&dst)).unwrap_err();
        assert_eq!(code(&e), rc::FAIL_UNKNOWN_ERROR, "{e:?}");
        assert!(e.rc.cause.as_deref().unwrap_or_default().contains("does not open"), "{e:?}");
    }

    #[test]
    fn a_locked_target_and_a_backup_without_keys_are_refused() {
        let (src, info) = cluster("pw");
        let sealed: BTreeMap<u32, Option<String>> = [(0, Some(src.new_volume_secret().unwrap())), (1, None)].into();
        let e = reseal(OP, "r", Some(&info), &sealed, Some("pw"), None).unwrap_err();
        assert_eq!(code(&e), rc::FAIL_NOT_FOUND_CRYPT_KEY, "{e:?}");
        let e = reseal(OP, "r", Some(&info), &sealed, Some("pw"), Some(&src)).unwrap_err();
        assert_eq!(code(&e), rc::FAIL_INVLD_BACKUP_CONFIG, "{e:?}");
        assert!(e.rc.cause.as_deref().unwrap_or_default().contains("volume(s) 1"), "{e:?}");
        let only: BTreeMap<u32, Option<String>> = [(0, sealed[&0].clone())].into();
        let e = reseal(OP, "r", None, &only, Some("pw"), Some(&src)).unwrap_err();
        assert_eq!(code(&e), rc::FAIL_INVLD_BACKUP_CONFIG, "{e:?}");
        // A damaged key: the volume password error, not a panic.
        let bad: BTreeMap<u32, Option<String>> = [(0, Some("zz".into()))].into();
        let e = reseal(OP, "r", Some(&info), &bad, Some("pw"), Some(&src)).unwrap_err();
        assert_eq!(code(&e), rc::FAIL_UNKNOWN_ERROR, "{e:?}");
    }
}
