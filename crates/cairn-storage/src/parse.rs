//! Parsers for the tools' output. Pure; tested on captured real output in
//! `testdata/`.

use serde::Deserialize;

use crate::StorageError;

/// One loop device as `losetup --json --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub name: String,
    pub back_file: String,
}

#[derive(Deserialize)]
struct LosetupJson {
    #[serde(default)]
    loopdevices: Vec<LosetupEntry>,
}

#[derive(Deserialize)]
struct LosetupEntry {
    name: String,
    #[serde(rename = "back-file", default)]
    back_file: Option<String>,
}

/// Parses `losetup --json --list [--associated FILE]`. Empty output (no
/// device at all, on some versions) is an empty list.
pub fn losetup_list(out: &str) -> Result<Vec<LoopDevice>, StorageError> {
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let j: LosetupJson = serde_json::from_str(out).map_err(|e| StorageError::Output { program: "losetup", detail: e.to_string() })?;
    Ok(j.loopdevices
        .into_iter()
        .map(|e| LoopDevice { name: e.name, back_file: e.back_file.unwrap_or_default().trim_end_matches(" (deleted)").to_string() })
        .collect())
}

/// Parses `losetup --find --show FILE`: the new device's path.
pub fn losetup_show(out: &str) -> Result<String, StorageError> {
    let dev = out.trim();
    let ok = dev.strip_prefix("/dev/loop").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(dev.to_string())
    } else {
        Err(StorageError::Output { program: "losetup", detail: format!("expected /dev/loopN, got '{dev}'") })
    }
}

/// Parses `df --output=size,avail --block-size=1K DIR`: (total, free) KiB.
pub fn df_kib(out: &str) -> Result<(i64, i64), StorageError> {
    let bad = |d: &str| StorageError::Output { program: "df", detail: d.to_string() };
    let line = out.lines().nth(1).ok_or_else(|| bad("no data line"))?;
    let mut f = line.split_whitespace().map(|v| v.parse::<i64>());
    match (f.next(), f.next()) {
        (Some(Ok(total)), Some(Ok(free))) => Ok((total, free)),
        _ => Err(bad(&format!("cannot read sizes from '{line}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSOCIATED: &str = include_str!("../testdata/losetup-associated.json");
    const ASSOCIATED_TWO: &str = include_str!("../testdata/losetup-associated-two.json");
    const EMPTY: &str = include_str!("../testdata/losetup-associated-none.json");
    const LIST: &str = include_str!("../testdata/losetup-list.json");
    const DF: &str = include_str!("../testdata/df.txt");

    #[test]
    fn losetup_json_gives_devices_and_files() {
        let d = losetup_list(ASSOCIATED).unwrap();
        assert_eq!(d, vec![LoopDevice { name: "/dev/loop0".into(), back_file: "/tmp/fx/web_00000.img".into() }]);
        assert_eq!(losetup_list(ASSOCIATED_TWO).unwrap().len(), 2);
        assert!(losetup_list(EMPTY).unwrap().is_empty());
        assert_eq!(losetup_list(LIST).unwrap().iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["/dev/loop1", "/dev/loop0"]);
        assert!(losetup_list("").unwrap().is_empty());
        assert!(losetup_list("garbage").is_err());
    }

    #[test]
    fn deleted_backing_files_are_recognised() {
        let j = r#"{"loopdevices":[{"name":"/dev/loop3","back-file":"/p/r_00000.img (deleted)"}]}"#;
        assert_eq!(losetup_list(j).unwrap()[0].back_file, "/p/r_00000.img");
    }

    #[test]
    fn losetup_show_accepts_only_loop_devices() {
        assert_eq!(losetup_show("/dev/loop12\n").unwrap(), "/dev/loop12");
        assert!(losetup_show("/dev/sda").is_err());
        assert!(losetup_show("").is_err());
        assert!(losetup_show("/dev/loop").is_err());
    }

    #[test]
    fn df_gives_total_and_free_kib() {
        assert_eq!(df_kib(DF).unwrap(), (264212084, 79435608));
        assert!(df_kib("1K-blocks Avail\n").is_err());
        assert!(df_kib("1K-blocks Avail\nx y\n").is_err());
    }
}
