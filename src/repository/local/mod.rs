//! The local folder source: `<repository>/<model>/[model.toml]` and `<repository>/<model>/<version>/model.onnx`,
//! scanned on demand and watched for changes (`watch`).

mod watch;

pub use watch::{FolderFollower, watch};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{ModelConfig, ModelListing, ModelSpec, RepositoryError, VersionListing, is_valid_model_name};

pub const MODEL_FILE: &str = "model.onnx";
pub const MODEL_CONFIG_FILE: &str = "model.toml";
/// Optional, beside the model file: its SHA-256 in hex (as `sha256sum` writes it). A file that does not match is
/// refused.
pub const CHECKSUM_FILE: &str = "model.onnx.sha256";

/// Size and modification time of a file, to tell whether it changed (or is still being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp { len: meta.len(), modified: meta.modified().ok() })
    }

    /// Unchanged for at least `settle`: a writer that is still copying it keeps touching it.
    pub fn settled(&self, settle: Duration) -> bool {
        self.modified.and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= settle)
    }
}

/// What the watcher compares between two polls of one model folder: the stamps of its `model.toml` and of every
/// version folder's model file and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelFingerprint(Vec<(String, Option<FileStamp>)>);

impl ModelFingerprint {
    pub fn of(root: &Path, name: &str) -> ModelFingerprint {
        let dir = root.join(name);
        let mut stamps = vec![(MODEL_CONFIG_FILE.to_owned(), FileStamp::of(&dir.join(MODEL_CONFIG_FILE)))];
        for entry in read_dir(&dir).unwrap_or_default() {
            let Some(version) = entry.file_name().to_str().filter(|v| parse_version(v).is_some()).map(str::to_owned)
            else {
                continue;
            };
            for file in [MODEL_FILE, CHECKSUM_FILE] {
                stamps.push((format!("{version}/{file}"), FileStamp::of(&entry.path().join(file))));
            }
        }
        stamps.sort_by(|a, b| a.0.cmp(&b.0));
        ModelFingerprint(stamps)
    }

    /// Every file present has been left alone for `settle`.
    pub fn settled(&self, settle: Duration) -> bool {
        self.0.iter().all(|(_, stamp)| stamp.is_none_or(|s| s.settled(settle)))
    }
}

/// Checks the model file against its `model.onnx.sha256`, when the version folder has one.
pub fn verify_checksum(model_path: &Path) -> Result<(), String> {
    let Some(checksum_path) = model_path.parent().map(|dir| dir.join(CHECKSUM_FILE)) else { return Ok(()) };
    let expected = match std::fs::read_to_string(&checksum_path) {
        Ok(text) => text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", checksum_path.display())),
    };
    let bytes = std::fs::read(model_path).map_err(|e| format!("cannot read {}: {e}", model_path.display()))?;
    let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{} has SHA-256 {actual}, but {} says {expected}", model_path.display(), checksum_path.display()))
    }
}

/// Lists every model of a repository folder with the versions its policy selects. Folders whose names cannot
/// be model names (hidden ones among them) are skipped with a warning; one broken model never hides the others.
pub fn scan(root: &Path) -> Result<Vec<ModelListing>, RepositoryError> {
    let mut names = Vec::new();
    for entry in read_dir(root)? {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %entry.path().display(), "skipping a folder whose name is not UTF-8");
            continue;
        };
        if !entry.path().is_dir() {
            continue;
        }
        if !is_valid_model_name(&name) {
            if !name.starts_with('.') {
                tracing::warn!(path = %entry.path().display(), "skipping: model names use letters, digits, '_', '-', '.'");
            }
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let versions = scan_model(&root.join(&name), &name);
            ModelListing::plain(name, versions)
        })
        .collect())
}

/// The listing of one model of a repository folder; `None` when the repository has no folder of that name.
pub fn scan_one(root: &Path, name: &str) -> Option<ModelListing> {
    if !is_valid_model_name(name) || !root.join(name).is_dir() {
        return None;
    }
    Some(ModelListing::plain(name.to_owned(), scan_model(&root.join(name), name)))
}

/// The names of the model folders of a repository, sorted.
pub fn model_names(root: &Path) -> Result<Vec<String>, RepositoryError> {
    let mut names: Vec<String> = read_dir(root)?
        .into_iter()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| is_valid_model_name(name))
        .collect();
    names.sort();
    Ok(names)
}

fn scan_model(dir: &Path, name: &str) -> Result<Vec<VersionListing>, RepositoryError> {
    let config = read_model_config(dir)?;
    let mut present: Vec<u64> = read_dir(dir)?
        .into_iter()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().and_then(parse_version))
        .collect();
    present.sort_unstable();
    if present.is_empty() {
        return Err(RepositoryError::NoVersions { path: dir.to_owned() });
    }
    let (selected, missing) = config.version_policy.select(&present);
    let config = Arc::new(config);
    let mut listings: Vec<VersionListing> = selected
        .into_iter()
        .map(|version| {
            let model_path = dir.join(version.to_string()).join(MODEL_FILE);
            let spec = if model_path.is_file() {
                Ok(ModelSpec {
                    name: name.to_owned(),
                    version,
                    model_path,
                    config: Arc::clone(&config),
                    declared: None,
                })
            } else {
                Err(RepositoryError::MissingModelFile { path: model_path })
            };
            VersionListing { version, spec }
        })
        .collect();
    listings.extend(missing.into_iter().map(|version| VersionListing {
        version,
        spec: Err(RepositoryError::MissingVersion { version, path: dir.join(version.to_string()) }),
    }));
    listings.sort_by_key(|listing| listing.version);
    Ok(listings)
}

/// Versions are positive decimal numbers without sign or leading zeros ("1", "42"), so each has one folder name.
fn parse_version(name: &str) -> Option<u64> {
    if name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The model's `model.toml`, or the defaults when it has none.
pub fn read_model_config(dir: &Path) -> Result<ModelConfig, RepositoryError> {
    let path = dir.join(MODEL_CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
        Err(e) => return Err(RepositoryError::Read { path, reason: e.to_string() }),
    };
    ModelConfig::parse(&text).map_err(|message| RepositoryError::ModelConfig { path, message })
}

fn read_dir(path: &Path) -> Result<Vec<std::fs::DirEntry>, RepositoryError> {
    let read_error = |e: std::io::Error| RepositoryError::Read { path: PathBuf::from(path), reason: e.to_string() };
    std::fs::read_dir(path).map_err(read_error)?.collect::<Result<Vec<_>, _>>().map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_canonical_numbers() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("42"), Some(42));
        for bad in ["0", "01", "-1", "+1", "1a", "", "99999999999999999999999"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn scans_the_bundled_repository() {
        let listings = scan(Path::new("models")).unwrap();
        let names: Vec<&str> = listings.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["gbt", "iris", "mlp"]);
        let iris = listings[1].versions.as_ref().unwrap();
        assert_eq!(iris.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn reports_broken_layouts() {
        let root = std::env::temp_dir().join(format!("infergate-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(root.join("nofile/1")).unwrap();
        std::fs::create_dir_all(root.join("typo/1")).unwrap();
        std::fs::write(root.join("typo/model.toml"), "versoin_policy = \"all\"").unwrap();
        std::fs::create_dir_all(root.join("pinned/2")).unwrap();
        std::fs::write(root.join("pinned/2/model.onnx"), b"").unwrap();
        std::fs::write(root.join("pinned/model.toml"), "version_policy = { specific = [2, 3] }").unwrap();
        std::fs::create_dir_all(root.join(".hidden/1")).unwrap();

        let listings = scan(&root).unwrap();
        let find = |name: &str| listings.iter().find(|l| l.name == name).unwrap();
        assert!(listings.iter().all(|l| l.name != ".hidden"));
        assert!(matches!(find("empty").versions, Err(RepositoryError::NoVersions { .. })));
        assert!(matches!(find("typo").versions, Err(RepositoryError::ModelConfig { .. })));
        let nofile = find("nofile").versions.as_ref().unwrap();
        assert!(matches!(nofile[0].spec, Err(RepositoryError::MissingModelFile { .. })));
        let pinned = find("pinned").versions.as_ref().unwrap();
        assert!(pinned[0].spec.is_ok());
        assert!(matches!(pinned[1].spec, Err(RepositoryError::MissingVersion { version: 3, .. })));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
