//! Node config files: `<binary> node --config node.toml [flags]`. Every key is a flag of
//! [`NodeArgs`](crate::ops::host::NodeArgs) without its dashes (`data_dir` or `data-dir`); a flag
//! given on the command line overrides the file. An unknown key or a bad value is an error at
//! the file's line and column, and nothing starts.
//!
//! ```toml
//! id = 1
//! data_dir = "/var/lib/kv/n1"
//! listen = "0.0.0.0:7001"
//! raft_listen = "0.0.0.0:7101"
//! advertise_host = "10.0.0.5"
//! init = true
//! ```

use std::ffi::OsString;
use std::path::Path;

use clap::{Args, Command};

use crate::ops::host::NodeArgs;

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, names an unknown flag, or gives a flag a bad value.
    #[error("{path}:{line}:{col}: {message}")]
    Located {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong, and how to fix it.
        message: String,
    },
}

/// The node's command line with every flag optional: what one key of a file is checked with.
fn node_command() -> Command {
    NodeArgs::augment_args(Command::new("node"))
        .mut_args(|a| a.required(false))
        .no_binary_name(true)
}

/// The line and column where `key` is defined in `text` (1:1 when it cannot be found).
fn locate(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let trimmed = line.trim_start();
            let rest = trimmed
                .strip_prefix(key)
                .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))?;
            rest.trim_start()
                .starts_with('=')
                .then(|| (i + 1, line.len() - trimmed.len() + 1))
        })
        .unwrap_or((1, 1))
}

/// The flags a config file at `path` stands for, each checked against the node's command line.
pub fn flags_from_file(path: &Path) -> Result<Vec<OsString>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    flags_from_text(&shown, &text)
}

/// Like [`flags_from_file`], for the file's text (`path` names it in errors).
pub fn flags_from_text(path: &str, text: &str) -> Result<Vec<OsString>, ConfigError> {
    let located = |(line, col): (usize, usize), message: String| ConfigError::Located {
        path: path.to_string(),
        line,
        col,
        message,
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, col) = e.span().map_or((1, 1), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        });
        located((line, col), format!("not TOML: {}", e.message()))
    })?;
    let command = node_command();
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|long| long != "config" && long != "help")
        .collect();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let at = locate(text, key);
        if !known.contains(&long) {
            return Err(located(
                at,
                format!(
                    "unknown key `{key}`; the keys are the node's flags: {}",
                    known
                        .iter()
                        .map(|k| k.replace('-', "_"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut these = vec![OsString::from(format!("--{long}"))];
        match value {
            toml::Value::String(s) => these.push(s.into()),
            toml::Value::Integer(i) => these.push(i.to_string().into()),
            toml::Value::Float(f) => these.push(f.to_string().into()),
            toml::Value::Boolean(true) => {}
            toml::Value::Boolean(false) => continue,
            other => {
                return Err(located(
                    at,
                    format!(
                        "`{key}` takes a string, a number or a boolean, not {}",
                        other.type_str()
                    ),
                ));
            }
        }
        // One key is checked alone, so a flag that needs others with it (the TLS trio) is not
        // missing them here: the node's own command line checks that, with every key.
        if let Err(e) = node_command().try_get_matches_from(&these)
            && e.kind() != clap::error::ErrorKind::MissingRequiredArgument
        {
            let message = e.render().to_string();
            let first = message.lines().next().unwrap_or("invalid value").trim();
            return Err(located(
                at,
                format!("`{key}`: {}", first.trim_start_matches("error: ")),
            ));
        }
        flags.extend(these);
    }
    Ok(flags)
}

/// `argv` with a `node` command's `--config FILE` replaced by the file's flags, placed before
/// the command line's own (which override them). Other commands pass through unchanged.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    if argv.get(1).and_then(|a| a.to_str()) != Some("node") {
        return Ok(argv);
    }
    let mut config = None;
    let mut rest = Vec::new();
    let mut args = argv.iter().skip(2);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--config") => config = args.next().cloned(),
            Some(a) if a.starts_with("--config=") => {
                config = Some(OsString::from(&a["--config=".len()..]));
            }
            _ => rest.push(arg.clone()),
        }
    }
    let Some(config) = config else {
        return Ok(argv);
    };
    let mut out: Vec<OsString> = argv.iter().take(2).cloned().collect();
    out.extend(flags_from_file(Path::new(&config))?);
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(flags: Vec<OsString>) -> Vec<String> {
        flags
            .into_iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keys_become_flags_in_either_spelling() {
        let text = "id = 3\ndata-dir = \"/tmp/n3\"\nraft_listen = \"127.0.0.1:7103\"\ninit = true\nredirect_writes = false\n";
        let flags = flags_from_text("node.toml", text).expect("valid");
        assert_eq!(
            strings(flags),
            [
                "--data-dir",
                "/tmp/n3",
                "--id",
                "3",
                "--init",
                "--raft-listen",
                "127.0.0.1:7103"
            ]
        );
    }

    /// The TLS flags (flattened into the node's command line) and the limits are keys too.
    #[test]
    fn tls_and_limit_keys_become_flags() {
        let text = "tls_ca = \"ca.pem\"\ntls-cert = \"n1.pem\"\ntls_key = \"n1.key\"\nmax_command_bytes = 1000\nidle_timeout_secs = 30\n";
        let flags = strings(flags_from_text("node.toml", text).expect("valid"));
        for pair in [
            ["--tls-ca", "ca.pem"],
            ["--tls-cert", "n1.pem"],
            ["--tls-key", "n1.key"],
            ["--max-command-bytes", "1000"],
            ["--idle-timeout-secs", "30"],
        ] {
            assert!(flags.windows(2).any(|w| w == pair), "{pair:?} in {flags:?}");
        }
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_is_located() {
        let unknown = flags_from_text("node.toml", "id = 1\n  heartbeat = 100\n").unwrap_err();
        assert!(
            unknown
                .to_string()
                .starts_with("node.toml:2:3: unknown key `heartbeat`"),
            "{unknown}"
        );
        let bad =
            flags_from_text("node.toml", "id = 1\nelection_timeout_ms = \"fast\"\n").unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("node.toml:2:1: `election_timeout_ms`"),
            "{bad}"
        );
        let not_toml = flags_from_text("node.toml", "id = 1\nlisten = \n").unwrap_err();
        assert!(
            not_toml.to_string().starts_with("node.toml:2:"),
            "{not_toml}"
        );
    }

    #[test]
    fn the_command_line_comes_after_the_file_and_other_commands_pass_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "id = 1\nheartbeat_ms = 100\n").expect("write");
        let argv: Vec<OsString> = ["kv", "node", "--config"]
            .iter()
            .map(OsString::from)
            .chain([
                file.clone().into_os_string(),
                "--heartbeat-ms".into(),
                "200".into(),
            ])
            .collect();
        assert_eq!(
            strings(expand(argv).expect("expanded")),
            [
                "kv",
                "node",
                "--heartbeat-ms",
                "100",
                "--id",
                "1",
                "--heartbeat-ms",
                "200"
            ]
        );
        let other: Vec<OsString> = ["kv", "top"].iter().map(OsString::from).collect();
        assert_eq!(expand(other.clone()).expect("same"), other);
    }
}
