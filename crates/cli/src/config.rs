//! The configuration file (`/etc/ferry/ferry.toml`, or `--config PATH` / `FERRY_CONFIG`): every
//! option of `ferry serve` and `ferry agent` can be set there, as a flag, or as a `FERRY_*`
//! environment variable. Precedence: flag > environment > file > built-in default.
//!
//! One generic mechanism, no per-option code: every option of `serve` and `agent` gets the
//! environment variable `FERRY_<NAME>` / `FERRY_AGENT_<NAME>` (unless it has one), and the file's values become the
//! options' defaults in clap, so the environment and flags still win. Top-level keys set the global
//! options (`state_dir`, `log_format`, ...), `[serve]` and `[agent]` those of the daemons. Keys are
//! the long flag names (`monitor-interval` or `monitor_interval`); an unknown key is an error that
//! names it. See docs/CONFIG.md.

use clap::Command;
use std::ffi::OsString;
use std::path::PathBuf;

pub const DEFAULT_PATH: &str = "/etc/ferry/ferry.toml";
/// Subcommands whose options the file (and `FERRY_*` variables) can set.
const SECTIONS: [&str; 2] = ["serve", "agent"];

/// The file to read: `--config PATH` anywhere in the arguments, else `FERRY_CONFIG`, else the
/// default path if it exists. The bool says whether it was asked for (then it must exist).
pub fn locate(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os("FERRY_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let p = PathBuf::from(DEFAULT_PATH);
    p.exists().then_some((p, false))
}

/// Reads and parses the file `locate` found.
pub fn load(args: &[OsString]) -> Result<Option<(PathBuf, toml::Table)>, String> {
    let Some((path, asked)) = locate(args) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !asked && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        }
    };
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    Ok(Some((path, table)))
}

/// A TOML value as the string clap would read from the command line.
fn as_arg(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a.iter().map(as_arg).collect::<Option<Vec<_>>>()?.join(","),
        _ => return None,
    })
}

/// Gives every option of `cmd` without an environment variable one: `FERRY_<ID>` for `serve`,
/// `FERRY_AGENT_<ID>` for `agent` (so that one environment file can hold both daemons' settings).
fn with_env(cmd: Command) -> Command {
    let agent = cmd.get_name() == "agent";
    let ids: Vec<String> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && a.get_env().is_none() && a.get_id() != "help")
        .map(|a| a.get_id().to_string())
        .collect();
    ids.into_iter().fold(cmd, |c, id| {
        let var = if agent {
            format!(
                "FERRY_AGENT_{}",
                id.strip_prefix("agent_").unwrap_or(&id).to_uppercase()
            )
        } else {
            format!("FERRY_{}", id.to_uppercase())
        };
        let var: &'static str = Box::leak(var.into_boxed_str());
        c.mut_arg(id, |a| a.env(var))
    })
}

/// Sets the values of `table` as defaults of `cmd`'s options; `section` names it in errors.
fn with_defaults(
    mut cmd: Command,
    table: &toml::Table,
    section: &str,
    path: &std::path::Path,
) -> Result<Command, String> {
    for (key, value) in table {
        if value.is_table() {
            continue; // sections are handled by the caller
        }
        let id = key.replace('-', "_");
        let full = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        let known = cmd
            .get_arguments()
            .any(|a| a.get_id() == id.as_str() && !a.is_positional() && id != "config");
        if !known {
            return Err(format!("unknown key `{full}` in config file {}: see docs/CONFIG.md (or `ferry {section} --help`) for the keys", path.display()));
        }
        let v = as_arg(value).ok_or_else(|| {
            format!(
                "key `{full}` in config file {}: use a string, number, boolean or list",
                path.display()
            )
        })?;
        let v: &'static str = Box::leak(v.into_boxed_str());
        cmd = cmd.mut_arg(id, |a| a.default_value(v).required(false));
    }
    Ok(cmd)
}

/// `cmd` (the whole CLI) with `FERRY_*` variables for the daemons' options and the file's values as
/// defaults.
pub fn apply(
    mut cmd: Command,
    file: Option<(&std::path::Path, &toml::Table)>,
) -> Result<Command, String> {
    for s in SECTIONS {
        cmd = cmd.mut_subcommand(s, with_env);
    }
    let Some((path, table)) = file else {
        return Ok(cmd);
    };
    for (key, value) in table {
        if value.is_table() && !SECTIONS.contains(&key.as_str()) {
            return Err(format!(
                "unknown section `[{key}]` in config file {}: the sections are [serve] and [agent]",
                path.display()
            ));
        }
    }
    cmd = with_defaults(cmd, table, "", path)?;
    for s in SECTIONS {
        if let Some(t) = table.get(s).and_then(|v| v.as_table()) {
            let sub = cmd
                .find_subcommand(s)
                .expect("section is a subcommand")
                .clone();
            let sub = with_defaults(sub, t, s, path)?;
            cmd = cmd.mut_subcommand(s, |_| sub);
        }
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Cmd};
    use clap::{CommandFactory, FromArgMatches};

    fn parse(file: &str, args: &[&str]) -> Result<Cli, String> {
        let table: toml::Table = toml::from_str(file).unwrap();
        let cmd = apply(
            Cli::command(),
            Some((std::path::Path::new("/test/ferry.toml"), &table)),
        )?;
        let m = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    fn err(file: &str, args: &[&str]) -> String {
        match parse(file, args) {
            Ok(_) => panic!("{file:?} should have been refused"),
            Err(e) => e,
        }
    }

    fn serve(c: Cli) -> crate::args::ServeArgs {
        match c.cmd {
            Cmd::Serve(s) => s,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn plan_egress_comes_from_the_file_or_repeated_flags() {
        let s = serve(
            parse(
                "[serve]\nplan-egress = [\"free=deny\", \"team=allow\"]\n",
                &["ferry", "serve"],
            )
            .unwrap(),
        );
        assert_eq!(s.plan_egress, ["free=deny", "team=allow"]);
        let s = serve(
            parse(
                "",
                &[
                    "ferry",
                    "serve",
                    "--plan-egress",
                    "free=deny",
                    "--plan-egress=pro=deny",
                ],
            )
            .unwrap(),
        );
        assert_eq!(s.plan_egress, ["free=deny", "pro=deny"]);
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let file = "state_dir = \"/srv/ferry\"\nlog-format = \"json\"\n[serve]\nsubnet = \"10.9.0.0\"\nmonitor-interval = \"7s\"\nno_auto = true\nthresholds = [40, 60, 80, 90]\n";
        // File over default.
        let c = parse(file, &["ferry", "serve"]).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/ferry"));
        assert_eq!(c.log_format, "json");
        let s = serve(c);
        assert_eq!(s.subnet.to_string(), "10.9.0.0");
        assert_eq!(s.monitor_interval, std::time::Duration::from_secs(7));
        assert!(s.no_auto);
        assert_eq!(s.thresholds, vec![40.0, 60.0, 80.0, 90.0]);
        assert_eq!(
            s.idle_after,
            std::time::Duration::from_secs(900),
            "untouched options keep their default"
        );
        // Environment over file (the only test touching these variables).
        std::env::set_var("FERRY_SUBNET", "10.8.0.0");
        std::env::set_var("FERRY_DEBOUNCE", "9s");
        let s = serve(parse(file, &["ferry", "serve"]).unwrap());
        assert_eq!(s.subnet.to_string(), "10.8.0.0");
        assert_eq!(
            s.debounce,
            std::time::Duration::from_secs(9),
            "every option has a FERRY_ variable"
        );
        // Flag over environment.
        let s = serve(parse(file, &["ferry", "serve", "--subnet", "10.7.0.0"]).unwrap());
        assert_eq!(s.subnet.to_string(), "10.7.0.0");
        std::env::remove_var("FERRY_SUBNET");
        std::env::remove_var("FERRY_DEBOUNCE");
        // No file: the built-in defaults.
        let s = serve(parse("", &["ferry", "serve"]).unwrap());
        assert_eq!(s.subnet.to_string(), "10.201.0.0");
        assert!(!s.no_auto);
    }

    #[test]
    fn agent_section_and_errors() {
        let c = parse(
            "[agent]\nname = \"h2\"\ntoken-file = \"/etc/ferry/agent-token\"\n",
            &["ferry", "agent"],
        )
        .unwrap();
        match c.cmd {
            Cmd::Agent(a) => assert_eq!(
                (a.name.as_str(), a.token_file.to_str().unwrap()),
                ("h2", "/etc/ferry/agent-token")
            ),
            _ => panic!(),
        }
        let e = err("[serve]\nmonitor_intervall = \"5s\"\n", &["ferry", "serve"]);
        assert!(e.contains("unknown key `serve.monitor_intervall`"), "{e}");
        let e = err("colour = 1\n", &["ferry", "serve"]);
        assert!(e.contains("unknown key `colour`"), "{e}");
        let e = err("[proxy]\nx = 1\n", &["ferry", "serve"]);
        assert!(e.contains("unknown section `[proxy]`"), "{e}");
        let e = err("[serve]\nlisten = \"not-an-ip\"\n", &["ferry", "serve"]); // (FERRY_SUBNET is another test's)
        assert!(e.contains("not-an-ip"), "{e}");
    }

    #[test]
    fn locate_finds_the_flag() {
        let a: Vec<OsString> = ["ferry", "serve", "--config", "/x.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(locate(&a), Some((PathBuf::from("/x.toml"), true)));
        let a: Vec<OsString> = ["ferry", "--config=/y.toml", "agent"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(locate(&a), Some((PathBuf::from("/y.toml"), true)));
    }
}
