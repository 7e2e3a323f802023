//! Staging a data set: build into `OUT.partial`, resume it after a kill, and
//! publish it by renaming only when complete.

use std::path::{Path, PathBuf};

use crate::DataError;

/// The settings file of a build in progress.
pub const PARAMS: &str = "build-params.json";

/// `OUT.partial` beside `OUT`.
pub fn partial_dir(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "dataset".into());
    name.push(".partial");
    out.with_file_name(name)
}

/// Refuses an existing non-empty `out` unless `force`.
pub fn check_out(out: &Path, force: bool) -> Result<(), DataError> {
    if out.exists() && !force {
        let nonempty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
        if nonempty {
            return Err(DataError::Exists(format!(
                "{} already exists; pass --force to replace it (it is replaced only once the new data set is complete)",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Reuses `partial` if it was made with the same parameters, else starts it
/// afresh.
pub fn prepare_partial(partial: &Path, params: &serde_json::Value) -> Result<(), DataError> {
    let pfile = partial.join(PARAMS);
    let same = std::fs::read(&pfile)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|old| &old == params);
    if same {
        tracing::info!("resuming the interrupted build in {}", partial.display());
        return Ok(());
    }
    if partial.exists() {
        tracing::info!(
            "discarding {} (made with other settings)",
            partial.display()
        );
        std::fs::remove_dir_all(partial).map_err(|e| DataError::io(partial, e))?;
    }
    for d in ["fg", "mask", "bg", "hole"] {
        std::fs::create_dir_all(partial.join(d)).map_err(|e| DataError::io(partial, e))?;
    }
    fos_image::atomic::write_atomic(&pfile, params.to_string().as_bytes())
        .map_err(|e| DataError::io(&pfile, e))
}

/// Renames the finished `partial` to `out`, replacing an old `out` only after
/// the new one is complete.
pub fn publish(partial: &Path, out: &Path) -> Result<(), DataError> {
    if out.exists() {
        let mut old = out.as_os_str().to_os_string();
        old.push(format!(".old-{}", std::process::id()));
        let old = PathBuf::from(old);
        std::fs::rename(out, &old).map_err(|e| DataError::io(out, e))?;
        std::fs::rename(partial, out).map_err(|e| DataError::io(out, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
    } else {
        std::fs::rename(partial, out).map_err(|e| DataError::io(out, e))?;
    }
    Ok(())
}
