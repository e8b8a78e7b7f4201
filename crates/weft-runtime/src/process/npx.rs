//! `npx NAME ...` in a start command, found once instead of per process.
//!
//! `npx tsx main.ts` (the TypeScript tutorials' habit) asks npm, for every
//! task process, which `tsx` to run: about half a second on this machine
//! before the program starts, each attempt again. When the project has the
//! package installed, npx runs `node_modules/.bin/NAME` (the nearest one,
//! walking up from the working folder) with that folder on `PATH`; weft
//! does the same once at start. Anything else (`npx -y`, `npx pkg@1.2`, a
//! package not installed, which npx would download) is left to npx.

use std::path::{Path, PathBuf};

/// The start command with `npx NAME` replaced by the project's own
/// `node_modules/.bin/NAME`, and the `bin` folder npx would put first on
/// `PATH`; `None` when npx is not the program or must stay (flags, a
/// version, a package that is not installed).
pub(crate) fn resolve(command: &[String], cwd: &Path) -> Option<(Vec<String>, PathBuf)> {
    let (program, rest) = command.split_first()?;
    let is_npx = Path::new(program).file_name().is_some_and(|n| n == "npx");
    let name = rest.first()?;
    // A flag (`-y`, `--package`), a version (`tsx@4`), a scope or a path
    // (`@scope/pkg`, `./bin`): npx's own business.
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.']);
    if !is_npx || !plain {
        return None;
    }
    let bin = cwd
        .ancestors()
        .map(|dir| dir.join("node_modules/.bin"))
        .find(|bin| is_executable(&bin.join(name)))?;
    let mut resolved = vec![bin.join(name).to_string_lossy().into_owned()];
    resolved.extend(rest[1..].iter().cloned());
    Some((resolved, bin))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `PATH` with `bin` first, as npx runs a package's binary.
pub(crate) fn path_with(bin: &Path) -> String {
    match std::env::var_os("PATH") {
        Some(path) if !path.is_empty() => {
            format!("{}:{}", bin.display(), path.to_string_lossy())
        }
        _ => bin.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn project_with(bins: &[&str]) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("node_modules/.bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in bins {
            let path = bin.join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn an_installed_package_is_run_from_the_nearest_bin_folder() {
        let project = project_with(&["tsx"]);
        let sub = project.path().join("src/deep");
        std::fs::create_dir_all(&sub).unwrap();
        let bin = project.path().join("node_modules/.bin");
        for cwd in [project.path(), sub.as_path()] {
            let (command, found) =
                resolve(&strings(&["npx", "tsx", "src/main.ts", "--x"]), cwd).unwrap();
            assert_eq!(
                command,
                [bin.join("tsx").to_str().unwrap(), "src/main.ts", "--x"]
            );
            assert_eq!(found, bin);
        }
        assert!(
            resolve(
                &strings(&["/usr/local/bin/npx", "tsx", "a.ts"]),
                project.path()
            )
            .is_some(),
            "npx by its path too"
        );
        assert!(path_with(&bin).starts_with(&format!("{}:", bin.display())));
    }

    #[test]
    fn what_npx_must_decide_is_left_to_it() {
        let project = project_with(&["tsx"]);
        for command in [
            &["npx", "-y", "tsx", "a.ts"][..],
            &["npx", "tsx@4", "a.ts"],
            &["npx", "@scope/tool"],
            &["npx", "ts-node", "a.ts"],
            &["npx"],
            &["node", "tsx"],
            &["npx", "../tsx"],
        ] {
            assert_eq!(
                resolve(&strings(command), project.path()),
                None,
                "{command:?}"
            );
        }
        // Not executable: npx would not run it either.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/.bin")).unwrap();
        std::fs::write(dir.path().join("node_modules/.bin/tsx"), "").unwrap();
        assert_eq!(resolve(&strings(&["npx", "tsx"]), dir.path()), None);
    }
}
