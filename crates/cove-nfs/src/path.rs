//! Export paths as clients name them: an EFS access point's or mount's
//! `DirectoryPath` (`/`, `/data/train`) checked and put in the one form the
//! server's MOUNT handler matches.

/// Why a directory path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid directory path {path:?}: {reason}")]
pub struct InvalidPath {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest path EFS accepts for an access point's root directory.
const MAX_LEN: usize = 100;

/// Checks a directory path inside an export and returns its normal form:
/// absolute, components joined by single slashes, no trailing slash (`/`
/// alone for the root).
///
/// Refused: relative paths, `.` and `..` components (a client must not
/// climb out of its access point), NUL bytes, and paths longer than EFS's
/// 100 characters.
///
/// ```
/// assert_eq!(cove_nfs::parse_directory_path("/data//train/").unwrap(), "/data/train");
/// assert!(cove_nfs::parse_directory_path("/data/../etc").is_err());
/// ```
pub fn parse_directory_path(path: &str) -> Result<String, InvalidPath> {
    let refuse = |reason| InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(refuse("it must start with '/'"));
    }
    if path.len() > MAX_LEN {
        return Err(refuse("it is longer than 100 characters"));
    }
    if path.contains('\0') {
        return Err(refuse("it contains a NUL byte"));
    }
    let mut normal = String::with_capacity(path.len());
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(refuse("'.' and '..' components are not allowed"));
        }
        normal.push('/');
        normal.push_str(component);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        for (given, normal) in [
            ("/", "/"),
            ("//", "/"),
            ("/data", "/data"),
            ("/data/", "/data"),
            ("/data//train", "/data/train"),
            ("/a/b/c/d", "/a/b/c/d"),
            ("/.hidden/x", "/.hidden/x"),
        ] {
            assert_eq!(
                parse_directory_path(given).as_deref(),
                Ok(normal),
                "{given}"
            );
        }
    }

    #[test]
    fn refusals() {
        for bad in ["", "data", "./data", "/data/..", "/../x", "/a/./b", "/a\0b"] {
            assert!(parse_directory_path(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("/{}", "x".repeat(MAX_LEN));
        assert!(parse_directory_path(&long).is_err());
        let fits = format!("/{}", "x".repeat(MAX_LEN - 1));
        assert!(parse_directory_path(&fits).is_ok());
    }

    #[test]
    fn the_error_names_the_path() {
        let e = parse_directory_path("relative").unwrap_err();
        assert!(e.to_string().contains("\"relative\""), "{e}");
    }
}
