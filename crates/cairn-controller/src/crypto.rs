//! The master passphrase and the keys it protects, in LINSTOR's layout:
//! a random 16-byte master key, stored only encrypted with a key derived
//! from the passphrase (controller properties `encrypted/masterkey`,
//! `encrypted/passphrasesalt`, `encrypted/masterhash`). While the controller
//! runs unlocked, the master key seals each LUKS volume's random passphrase.
//!
//! Cairn's choices inside that layout: PBKDF2-HMAC-SHA256 with 100 000
//! iterations (LINSTOR: SHA-1, 5 000) and AES-128-GCM, which also detects a
//! wrong passphrase (LINSTOR: AES-CFB plus a SHA-512 check). Values are hex.

use std::num::NonZeroU32;

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};

pub const PROP_MASTER_KEY: &str = "encrypted/masterkey";
pub const PROP_SALT: &str = "encrypted/passphrasesalt";
pub const PROP_HASH: &str = "encrypted/masterhash";
const ITERATIONS: u32 = 100_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the passphrase is wrong")]
    WrongPassphrase,
    #[error("the stored key material is damaged: {0}")]
    Damaged(&'static str),
    #[error("no random numbers from the operating system")]
    Random,
}

/// The unlocked master key.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 16]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| CryptoError::Random)?;
    Ok(b)
}

fn derive(passphrase: &str, salt: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, passphrase.as_bytes(), &mut k);
    k
}

fn seal_with(key: &[u8; 16], plain: &[u8]) -> Result<String, CryptoError> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).map_err(|_| CryptoError::Damaged("key"))?);
    let nonce = random::<12>()?;
    let mut data = plain.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data).map_err(|_| CryptoError::Random)?;
    Ok(hex(&[nonce.as_slice(), &data].concat()))
}

fn open_with(key: &[u8; 16], sealed: &str) -> Result<Vec<u8>, CryptoError> {
    let raw = unhex(sealed).ok_or(CryptoError::Damaged("not hex"))?;
    if raw.len() < 12 + 16 {
        return Err(CryptoError::Damaged("too short"));
    }
    let (nonce, body) = raw.split_at(12);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Damaged("nonce"))?;
    let k = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).map_err(|_| CryptoError::Damaged("key"))?);
    let mut data = body.to_vec();
    let plain = k.open_in_place(nonce, Aad::empty(), &mut data).map_err(|_| CryptoError::WrongPassphrase)?;
    Ok(plain.to_vec())
}

/// The properties that store `key` under `passphrase`.
fn stored(key: &MasterKey, passphrase: &str) -> Result<Vec<(String, String)>, CryptoError> {
    let salt = random::<16>()?;
    let sealed = seal_with(&derive(passphrase, &salt), &key.0)?;
    Ok(vec![
        (PROP_MASTER_KEY.to_string(), sealed),
        (PROP_SALT.to_string(), hex(&salt)),
        (PROP_HASH.to_string(), hex(digest::digest(&digest::SHA512, &key.0).as_ref())),
    ])
}

impl MasterKey {
    /// A new random master key and the properties that store it.
    pub fn create(passphrase: &str) -> Result<(MasterKey, Vec<(String, String)>), CryptoError> {
        let key = MasterKey(random::<16>()?);
        let props = stored(&key, passphrase)?;
        Ok((key, props))
    }

    /// Unlocks the stored master key.
    pub fn unlock(passphrase: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<MasterKey, CryptoError> {
        let sealed = get(PROP_MASTER_KEY).ok_or(CryptoError::Damaged("no master key stored"))?;
        let salt = get(PROP_SALT).and_then(|s| unhex(&s)).ok_or(CryptoError::Damaged("salt"))?;
        let plain = open_with(&derive(passphrase, &salt), &sealed)?;
        let key: [u8; 16] = plain.try_into().map_err(|_| CryptoError::Damaged("master key length"))?;
        if get(PROP_HASH).is_some_and(|h| h != hex(digest::digest(&digest::SHA512, &key).as_ref())) {
            return Err(CryptoError::Damaged("master key hash"));
        }
        Ok(MasterKey(key))
    }

    /// The key's SHA-512 in hex, as `encrypted/masterhash` stores it: two
    /// clusters (or a backup's metadata and a cluster) with the same hash
    /// have the same master key.
    pub fn hash_hex(&self) -> String {
        hex(digest::digest(&digest::SHA512, &self.0).as_ref())
    }

    /// The properties that store this key under a new passphrase.
    pub fn rewrap(&self, new_passphrase: &str) -> Result<Vec<(String, String)>, CryptoError> {
        stored(self, new_passphrase)
    }

    /// A fresh random LUKS passphrase for a volume, sealed.
    pub fn new_volume_secret(&self) -> Result<String, CryptoError> {
        self.seal(&hex(&random::<32>()?))
    }

    /// Seals any secret (a remote's keys or passphrase), as LINSTOR's
    /// `EncryptionHelper.encrypt` does with the master key.
    pub fn seal(&self, plain: &str) -> Result<String, CryptoError> {
        seal_with(&self.0, plain.as_bytes())
    }

    /// The plain text of a sealed volume secret or [`MasterKey::seal`]ed
    /// secret.
    pub fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        String::from_utf8(open_with(&self.0, sealed)?).map_err(|_| CryptoError::Damaged("not text"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn create_unlock_rewrap_and_seal() {
        let (key, props) = MasterKey::create("correct horse").unwrap();
        let mut store: BTreeMap<String, String> = props.into_iter().collect();
        assert!(!store.values().any(|v| v.contains("correct horse")));
        let get = |s: &BTreeMap<String, String>| {
            let s = s.clone();
            move |k: &str| s.get(k).cloned()
        };
        assert_eq!(MasterKey::unlock("correct horse", &get(&store)).unwrap(), key);
        assert_eq!(MasterKey::unlock("wrong", &get(&store)), Err(CryptoError::WrongPassphrase));
        let sealed = key.new_volume_secret().unwrap();
        let plain = key.open(&sealed).unwrap();
        assert_eq!(plain.len(), 64);
        assert_ne!(key.new_volume_secret().unwrap(), sealed, "random nonce and secret");
        store.extend(key.rewrap("new one").unwrap());
        let again = MasterKey::unlock("new one", &get(&store)).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), plain, "volume secrets survive a passphrase change");
        assert!(MasterKey::unlock("correct horse", &get(&store)).is_err());
        let (other, _) = MasterKey::create("x").unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(key.open("zz").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey(<secret>)");
        let sealed = key.seal("s3 secret key").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(again.open(&sealed).unwrap(), "s3 secret key");
    }
}
