//! Cove's simulated web: what answers at [`cove_model::region::WEB_HOST`],
//! where public DNS names resolve inside a VPC. It serves a Python package
//! index in the simple repository API (PEP 503) from a directory of wheels
//! and source archives, so that `pip install` in a job works through an
//! internet or NAT gateway, and fails without one, as against PyPI on AWS.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// PEP 503's normalized project name.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
            continue;
        }
        if separator && !out.is_empty() {
            out.push('-');
        }
        separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The project a distribution file belongs to (normalized): a wheel's first
/// field, a source archive's name before its version.
pub fn project_of(file: &str) -> Option<String> {
    if let Some(stem) = file.strip_suffix(".whl") {
        let fields: Vec<&str> = stem.split('-').collect();
        return (fields.len() >= 5).then(|| normalize(fields[0]));
    }
    let stem = [".tar.gz", ".zip", ".tar.bz2"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    let (name, version) = stem.rsplit_once('-')?;
    (!name.is_empty() && version.starts_with(|c: char| c.is_ascii_digit())).then(|| normalize(name))
}

/// The index's files, by project.
fn projects(dir: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(project) = project_of(&name) {
            out.entry(project).or_default().push(name);
        }
    }
    out.values_mut().for_each(|files| files.sort());
    out
}

fn page(title: &str, links: impl Iterator<Item = (String, String)>) -> Response {
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>{title}</title></head><body>\n"
    );
    for (href, text) in links {
        html.push_str(&format!("<a href=\"{href}\">{text}</a><br>\n"));
    }
    html.push_str("</body></html>\n");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("{what} is not in Cove's package index\n"),
    )
        .into_response()
}

/// The router of the simulated web, serving the files in `dir`.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/simple", get(index))
        .route("/simple/", get(index))
        .route("/simple/{project}", get(project))
        .route("/simple/{project}/", get(project))
        .route("/packages/{file}", get(file))
        .with_state(Arc::new(dir))
}

async fn root() -> &'static str {
    "Cove's simulated web: a Python package index at /simple/\n"
}

async fn index(State(dir): State<Arc<PathBuf>>) -> Response {
    let projects = projects(&dir);
    page(
        "Simple index",
        projects.into_keys().map(|p| (format!("/simple/{p}/"), p)),
    )
}

async fn project(State(dir): State<Arc<PathBuf>>, Path(name): Path<String>) -> Response {
    let wanted = normalize(&name);
    let Some(files) = projects(&dir).remove(&wanted) else {
        return not_found(&format!("Project {name}"));
    };
    let mut links = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(dir.join(&f)) else {
            continue;
        };
        let hash = hex::encode(sha2::Sha256::digest(&bytes));
        links.push((format!("/packages/{f}#sha256={hash}"), f));
    }
    page(&format!("Links for {wanted}"), links.into_iter())
}

async fn file(State(dir): State<Arc<PathBuf>>, Path(name): Path<String>) -> Response {
    if project_of(&name).is_none() || name.contains('/') || name.starts_with('.') {
        return not_found(&name);
    }
    match tokio::fs::read(dir.join(&name)).await {
        Ok(bytes) => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(bytes))
            .unwrap_or_else(|_| not_found(&name)),
        Err(_) => not_found(&name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize("Friendly_Bard.Pkg"), "friendly-bard-pkg");
        assert_eq!(normalize("a--b__c"), "a-b-c");
        assert_eq!(
            project_of("cove_demo-1.0-py3-none-any.whl").as_deref(),
            Some("cove-demo")
        );
        assert_eq!(
            project_of("Cove.Demo-2.1.tar.gz").as_deref(),
            Some("cove-demo")
        );
        assert_eq!(project_of("notes.txt"), None);
        assert_eq!(project_of("x-1.0.whl"), None);
    }

    #[test]
    fn projects_group_their_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "cove_demo-1.0-py3-none-any.whl",
            "cove_demo-1.1-py3-none-any.whl",
            "other-0.1.tar.gz",
            "README",
        ] {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let p = projects(dir.path());
        assert_eq!(p.keys().collect::<Vec<_>>(), ["cove-demo", "other"]);
        assert_eq!(p["cove-demo"].len(), 2);
    }
}
