//! `weft init`: scaffolds a runnable project, as `render workflows init`
//! does, from templates inside the binary (Render's CLI clones them from
//! GitHub; weft's work offline). Each one has a fan-out task, a client that
//! triggers it and a README with the commands to run both.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

#[derive(clap::Args)]
pub struct InitArgs {
    /// The language of the project.
    #[arg(long, short = 'l', value_enum, default_value_t = Language::Python)]
    language: Language,
    /// The template: `fan-out` (every language; the default) or `etl`
    /// (Python: the tutorial's sharded customer ETL).
    #[arg(long, short = 't', default_value = "fan-out")]
    template: String,
    /// The project's folder: new, or empty (Render's default name).
    #[arg(long, default_value = "workflows-demo")]
    dir: PathBuf,
    /// Then install its dependencies (the README's set-up command: a
    /// Python venv and `pip install`, `npm install`, `cargo build`).
    #[arg(long)]
    install_deps: bool,
    /// Then make it a Git repository (`git init`), as Render's CLI does.
    #[arg(long)]
    git: bool,
    /// Rust: depend on weft's SDK in this folder (`crates/weft` of weft's
    /// repository) instead of its published crate, to develop against an
    /// unreleased SDK.
    #[arg(long, value_name = "PATH")]
    weft_sdk: Option<PathBuf>,
    /// Accepted for Render's CLI (`render workflows init --confirm`):
    /// `weft init` never asks.
    #[arg(long, hide = true)]
    confirm: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Language {
    #[value(alias = "py")]
    Python,
    /// On `@renderinc/sdk` 1.x; `node` and `ts` as Render's CLI spells it.
    #[value(alias = "ts", alias = "node")]
    Typescript,
    /// On weft's Rust SDK.
    #[value(alias = "rs")]
    Rust,
}

/// One file of a template; `{{name}}` (and, for Rust, `{{weft_dependency}}`)
/// are filled in when it is written.
struct File {
    path: &'static str,
    text: &'static str,
}

struct Template {
    /// `--template`'s name for it.
    name: &'static str,
    label: &'static str,
    files: &'static [File],
    /// The commands of the README's "Run it", in order: set-up, the server,
    /// the client.
    setup: &'static str,
    start: &'static str,
    trigger: &'static str,
}

macro_rules! file {
    ($path:literal => $source:literal) => {
        File {
            path: $path,
            text: include_str!(concat!("../templates/", $source)),
        }
    };
}

/// The templates of a language, the default first.
fn templates(language: Language) -> Vec<Template> {
    let mut all = vec![template(language)];
    if language == Language::Python {
        all.push(Template {
            name: "etl",
            label: "Python ETL",
            files: &[
                file!("main.py" => "python-etl/main.py"),
                file!("client.py" => "python-etl/client.py"),
                file!("generate_data.py" => "python-etl/generate_data.py"),
                file!("test_workflows.py" => "python-etl/test_workflows.py"),
                file!("requirements.txt" => "python/requirements.txt"),
                file!("README.md" => "python-etl/README.md"),
                file!(".gitignore" => "python/gitignore"),
            ],
            setup: PYTHON_SETUP,
            start: "weft dev -- python main.py",
            trigger: "python generate_data.py && python client.py",
        });
    }
    all
}

/// The template `--template` names, with what to say when there is none.
fn find_template(language: Language, name: &str) -> Result<Template> {
    let name = match name {
        "default" | "hello-world" => "fan-out",
        other => other,
    };
    let all = templates(language);
    let names: Vec<&str> = all.iter().map(|t| t.name).collect();
    all.into_iter().find(|t| t.name == name).with_context(|| {
        format!(
            "no template {name:?} for {language:?}: weft ships {} ({})",
            names.join(", "),
            "`weft init --language python --template etl` for the ETL"
        )
    })
}

/// The Python templates' set-up: a venv of their own.
const PYTHON_SETUP: &str =
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt";

fn template(language: Language) -> Template {
    match language {
        Language::Python => Template {
            name: "fan-out",
            label: "Python",
            files: &[
                file!("main.py" => "python/main.py"),
                file!("client.py" => "python/client.py"),
                file!("test_workflows.py" => "python/test_workflows.py"),
                file!("requirements.txt" => "python/requirements.txt"),
                file!("README.md" => "python/README.md"),
                file!(".gitignore" => "python/gitignore"),
            ],
            setup: PYTHON_SETUP,
            start: "weft dev -- python main.py",
            trigger: "python client.py 1 2 3",
        },
        Language::Typescript => Template {
            name: "fan-out",
            label: "TypeScript",
            files: &[
                file!("src/main.ts" => "typescript/src/main.ts"),
                file!("src/client.ts" => "typescript/src/client.ts"),
                file!("package.json" => "typescript/package.json"),
                file!("tsconfig.json" => "typescript/tsconfig.json"),
                file!("README.md" => "typescript/README.md"),
                file!(".gitignore" => "typescript/gitignore"),
            ],
            setup: "npm install && npm run build",
            start: "npx weft dev -- node dist/main.js",
            trigger: "node dist/client.js 1 2 3",
        },
        Language::Rust => Template {
            name: "fan-out",
            label: "Rust",
            files: &[
                file!("src/main.rs" => "rust/src/main.rs"),
                file!("src/client.rs" => "rust/src/client.rs"),
                // `.in`: a Cargo.toml would make cargo leave the folder out of the
                // published crate (it takes it for a package of its own).
                file!("Cargo.toml" => "rust/Cargo.toml.in"),
                file!("README.md" => "rust/README.md"),
                file!(".gitignore" => "rust/gitignore"),
            ],
            setup: "cargo build",
            start: "weft dev -- target/debug/tasks",
            trigger: "cargo run -q --bin client -- 1 2 3",
        },
    }
}

pub fn run(args: InitArgs) -> Result<std::process::ExitCode> {
    let template = find_template(args.language, &args.template)?;
    let dir = &args.dir;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "directory {} already exists and is not empty",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    let name = project_name(dir);
    let (weft_dependency, note) = match args.language {
        Language::Rust => weft_dependency(args.weft_sdk.as_deref())?,
        _ => (String::new(), None),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &name)
            .replace("{{weft_dependency}}", &weft_dependency)
    };

    // Written into a sibling folder and renamed into place, so a failure
    // half-way leaves no half project under the name asked for.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".weft-init-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    for file in template.files {
        let path = staging.path().join(file.path);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(&path, fill(file.text))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The folder's mode: an existing (empty) folder's own, or what a new
    // folder gets under the user's umask (a temporary one is 0700).
    let mode = match std::fs::metadata(dir) {
        Ok(meta) => std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        Err(_) => 0o777 & !umask(),
    };
    set_mode(staging.path(), mode)?;
    // rename(2) replaces an empty directory, so an existing empty --dir works too.
    std::fs::rename(staging.path(), dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // Renamed away: nothing left for the guard to remove.
    let _ = staging.keep();

    let mut out = std::io::stdout().lock();
    let files: Vec<&str> = template.files.iter().map(|f| f.path).collect();
    writeln!(
        out,
        "Created a {} workflows project in {} ({})",
        template.label,
        dir.display(),
        files.join(", ")
    )?;
    if let Some(note) = note {
        writeln!(out, "note: {note}")?;
    }
    if args.git {
        command(dir, "git init -q", "git", &["init", "-q"])?;
    }
    let mut setup = Some(template.setup);
    if args.install_deps {
        writeln!(out, "Installing its dependencies: {}", template.setup)?;
        drop(out);
        install_deps(dir, args.language)?;
        out = std::io::stdout().lock();
        setup = None;
    }
    writeln!(out, "\nNext steps:")?;
    writeln!(out, "  cd {}", shell_words::quote(&dir.to_string_lossy()))?;
    match setup {
        Some(setup) => writeln!(out, "  {setup}")?,
        // Installed into the project's venv: it is activated, not made.
        None if matches!(args.language, Language::Python) => {
            writeln!(out, "  . .venv/bin/activate")?
        }
        None => {}
    }
    let width = template.start.len().max(template.trigger.len());
    writeln!(
        out,
        "  {:width$}  # the local server; leave it running",
        template.start
    )?;
    writeln!(out, "  {:width$}  # in another terminal", template.trigger)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--install-deps`: the set-up step of the README, run in the project.
/// A failure names the step and leaves the project in place.
fn install_deps(dir: &Path, language: Language) -> Result<()> {
    match language {
        Language::Python => {
            command(
                dir,
                "python3 -m venv .venv",
                "python3",
                &["-m", "venv", ".venv"],
            )?;
            command(
                dir,
                "pip install -r requirements.txt",
                ".venv/bin/pip",
                &[
                    "install",
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                ],
            )
        }
        Language::Typescript => {
            command(
                dir,
                "npm install",
                "npm",
                &["install", "--no-audit", "--no-fund"],
            )?;
            command(dir, "npm run build", "npm", &["run", "build"])
        }
        Language::Rust => command(dir, "cargo build", "cargo", &["build"]),
    }
}

/// Runs one set-up step in the project's folder, its output shown as it
/// goes; a step that fails, or cannot start, is an error naming it.
fn command(dir: &Path, what: &str, program: &str, args: &[&str]) -> Result<()> {
    // A program in the project (its venv's pip) by its full path: the
    // child starts in the project, where a relative one would be looked up.
    let status = std::process::Command::new(if program.contains('/') {
        std::path::absolute(dir.join(program))?.into_os_string()
    } else {
        program.into()
    })
    .args(args)
    .current_dir(dir)
    .status()
    .with_context(|| format!("`{what}` could not start in {}", dir.display()))?;
    if !status.success() {
        bail!(
            "`{what}` failed in {} ({status}); the project is in place: fix the cause and run it there",
            dir.display()
        );
    }
    Ok(())
}

/// This process's umask (read by setting it, then putting it back: the
/// only way to read it; `weft init` runs no other thread then).
fn umask() -> u32 {
    // SAFETY: umask cannot fail; the old mask is put back at once.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask as u32
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the permissions of {}", path.display()))
}

/// A package name every tool takes (npm's are lower case; Cargo's and
/// npm's both take letters, digits, `-` and `_`), from the folder's name.
fn project_name(dir: &Path) -> String {
    let base = std::path::absolute(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .collect();
    name = name.trim_matches(|c| c == '-' || c == '_').to_string();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name = format!("workflows-{name}")
            .trim_end_matches('-')
            .to_string();
    }
    name
}

/// The SDK's line in a Rust project's Cargo.toml: the published crate
/// (`weft-workflows`, whose library is `weft`) at this binary's version, or
/// the SDK in `--weft-sdk`'s folder.
fn weft_dependency(explicit: Option<&Path>) -> Result<(String, Option<String>)> {
    let Some(dir) = explicit else {
        return Ok((
            format!("{SDK_PACKAGE} = \"{}\"", env!("CARGO_PKG_VERSION")),
            None,
        ));
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--weft-sdk {}", dir.display()))?;
    let is_sdk = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| {
        toml.lines()
            .any(|l| l.trim() == format!("name = \"{SDK_PACKAGE}\""))
    });
    if !is_sdk {
        bail!(
            "--weft-sdk {}: not weft's SDK crate (no Cargo.toml naming the package \"{SDK_PACKAGE}\"; it is crates/weft in weft's repository)",
            dir.display()
        );
    }
    Ok((
        format!(
            "{SDK_PACKAGE} = {{ path = {} }}",
            toml_string(&dir.to_string_lossy())
        ),
        Some(format!("the SDK comes from {}", dir.display())),
    ))
}

/// The SDK's name on crates.io.
const SDK_PACKAGE: &str = "weft-workflows";

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_readme_shows_the_commands_weft_init_prints() {
        for language in Language::value_variants() {
            for t in templates(*language) {
                let readme = t.files.iter().find(|f| f.path == "README.md").unwrap();
                let client = t.trigger.trim_end_matches(" 1 2 3");
                for command in [t.setup, t.start].into_iter().chain(client.split(" && ")) {
                    assert!(
                        readme.text.contains(command),
                        "{language:?} {}: {command}",
                        t.name
                    );
                }
            }
        }
    }

    #[test]
    fn templates_are_found_by_name_and_an_unknown_one_lists_them() {
        assert_eq!(find_template(Language::Python, "etl").unwrap().name, "etl");
        assert_eq!(
            find_template(Language::Rust, "hello-world").unwrap().name,
            "fan-out"
        );
        let err = find_template(Language::Typescript, "etl").err().unwrap();
        assert!(
            format!("{err:#}").contains("no template \"etl\" for Typescript: weft ships fan-out"),
            "{err:#}"
        );
    }

    #[test]
    fn project_names_suit_npm_and_cargo() {
        assert_eq!(project_name(Path::new("workflows-demo")), "workflows-demo");
        assert_eq!(project_name(Path::new("/tmp/My App!")), "my-app");
        assert_eq!(project_name(Path::new("2024 jobs")), "workflows-2024-jobs");
        assert_eq!(project_name(Path::new("/tmp/a/b/../étl")), "tl");
    }

    #[test]
    fn a_rust_project_depends_on_the_published_sdk_unless_told_a_folder() {
        let (line, note) = weft_dependency(None).unwrap();
        assert_eq!(
            line,
            format!("weft-workflows = \"{}\"", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(note, None);
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft");
        let (line, _) = weft_dependency(Some(&sdk)).unwrap();
        let dir = sdk.canonicalize().unwrap();
        assert_eq!(
            line,
            format!("weft-workflows = {{ path = \"{}\" }}", dir.display())
        );
        let err = weft_dependency(Some(Path::new(env!("CARGO_MANIFEST_DIR")))).unwrap_err();
        assert!(
            format!("{err:#}").contains("not weft's SDK crate"),
            "{err:#}"
        );
    }

    #[test]
    fn paths_are_quoted_for_toml() {
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    }
}
