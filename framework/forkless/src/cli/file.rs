//! The `--config` file: TOML whose keys are the flags' names with `_`
//! (`shards = 4`, `listen = ["0.0.0.0:8080"]`), the HTTP limits under
//! `[limits]` (`max_body_size = "1m"`), the TLS files under `[tls]`
//! (`cert`, `key`) and the app's own arguments under `[app]`.
//!
//! Contract: every value is checked with the flag's own parser before
//! anything runs; an unknown key, a value of the wrong shape or one the
//! parser refuses is a one-line error `FILE:LINE: key `K`: why`. The values
//! become the options' defaults, so a flag or an environment variable still
//! wins over them.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::Error;

/// The HTTP limits: under `[limits]`.
const LIMITS: &[&str] = &[
    "header_read_timeout",
    "keep_alive_timeout",
    "max_header_size",
    "max_body_size",
    "body_read_timeout",
    "body_min_rate",
    "send_timeout",
    "max_connections",
];

/// Options the file cannot set.
const NOT_IN_FILE: &[&str] = &["help", "version", "config", "print_config"];

/// The tables of the file, besides the top level.
const TABLES: &[&str] = &["limits", "tls", "app"];

/// What a file set: each option's values and the line it is on.
#[derive(Debug)]
pub(super) struct FileValues {
    pub(super) path: PathBuf,
    /// Option id -> (values as text, line).
    pub(super) values: BTreeMap<String, (Vec<String>, usize)>,
}

/// The file's key of the option `id` (`app` ids are the app's own).
pub(super) fn key(id: &str, app: &[String]) -> String {
    if app.iter().any(|a| a == id) {
        format!("app.{id}")
    } else if let Some(file) = id.strip_prefix("tls_") {
        format!("tls.{file}")
    } else if LIMITS.contains(&id) {
        format!("limits.{id}")
    } else {
        id.to_owned()
    }
}

/// Whether the file may set `arg`.
pub(super) fn settable(arg: &Arg) -> bool {
    !NOT_IN_FILE.contains(&arg.get_id().as_str())
}

/// The file `--config PATH` (or `--config=PATH`) names, else
/// `FORKLESS_CONFIG`'s.
pub(super) fn path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(super::env::name("config"))
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Reads and checks the file against `command`'s options.
pub(super) fn load(path: &Path, command: &Command, app: &[String]) -> Result<FileValues, Error> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read the config file {shown}: {e}")))?;
    let table = DeTable::parse(&text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of(&text, span.start));
        let why = e.message().lines().next().unwrap_or("not TOML").to_owned();
        Error::config(format!("{shown}:{line}: {why}"))
    })?;
    let mut keys = BTreeMap::new();
    for arg in command.get_arguments().filter(|arg| settable(arg)) {
        keys.insert(key(arg.get_id().as_str(), app), arg);
    }
    let mut values = BTreeMap::new();
    let mut reader = Reader {
        path: path.to_owned(),
        text: &text,
        keys: &keys,
        values: &mut values,
    };
    reader.table(table.get_ref(), "")?;
    Ok(FileValues {
        path: path.to_owned(),
        values,
    })
}

impl FileValues {
    /// `command` with the file's values as its defaults.
    pub(super) fn apply(&self, mut command: Command) -> Command {
        for (id, (values, _)) in &self.values {
            let values = values.clone();
            command = command.mut_arg(id, |arg| arg.default_values(values));
        }
        command
    }
}

struct Reader<'a> {
    path: PathBuf,
    text: &'a str,
    keys: &'a BTreeMap<String, &'a Arg>,
    values: &'a mut BTreeMap<String, (Vec<String>, usize)>,
}

impl Reader<'_> {
    fn table(&mut self, table: &DeTable<'_>, prefix: &str) -> Result<(), Error> {
        for (name, value) in table {
            let full = format!("{prefix}{}", name.get_ref());
            let line = line_of(self.text, name.span().start);
            if let DeValue::Table(inner) = value.get_ref()
                && prefix.is_empty()
                && TABLES.contains(&full.as_str())
            {
                self.table(inner, &format!("{full}."))?;
                continue;
            }
            let Some(arg) = self.keys.get(&full) else {
                return Err(self.error(line, &full, "unknown key (`--print-config` lists them)"));
            };
            let texts = self.texts(arg, value, line, &full)?;
            self.values.insert(arg.get_id().to_string(), (texts, line));
        }
        Ok(())
    }

    /// The value(s) of `key` as the flag would take them, each checked.
    fn texts(
        &self,
        arg: &Arg,
        value: &Spanned<DeValue<'_>>,
        line: usize,
        key: &str,
    ) -> Result<Vec<String>, Error> {
        let list = matches!(arg.get_action(), ArgAction::Append);
        let scalars: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
            DeValue::Array(items) if list => items.iter().collect(),
            DeValue::Array(_) => {
                return Err(self.error(line, key, "takes one value, not a list"));
            }
            _ => vec![value],
        };
        let mut texts = Vec::with_capacity(scalars.len());
        for scalar in scalars {
            let line = line_of(self.text, scalar.span().start);
            let text = match scalar.get_ref() {
                DeValue::String(text) => text.to_string(),
                DeValue::Integer(number) => number.as_str().replace('_', ""),
                DeValue::Float(number) => number.as_str().replace('_', ""),
                DeValue::Boolean(flag) => flag.to_string(),
                other => {
                    let why = format!(
                        "expected a string, a number or a boolean, got {}",
                        other.type_str()
                    );
                    return Err(self.error(line, key, &why));
                }
            };
            if let Err(error) = check(arg, &text) {
                let why = format!("bad value `{text}`: {}", reason(&error));
                return Err(self.error(line, key, &why));
            }
            texts.push(text);
        }
        Ok(texts)
    }

    fn error(&self, line: usize, key: &str, why: &str) -> Error {
        Error::config(format!(
            "{}:{line}: key `{key}`: {why}",
            self.path.display()
        ))
    }
}

/// Runs `arg`'s own parser on `text`, as the flag would.
fn check(arg: &Arg, text: &str) -> Result<(), clap::Error> {
    let value = Arg::new("value")
        .value_parser(arg.get_value_parser().clone())
        .allow_hyphen_values(true);
    Command::new("check")
        .no_binary_name(true)
        .arg(value)
        .try_get_matches_from([OsStr::new(text)])
        .map(drop)
}

/// The one-line reason of a value parser's error.
fn reason(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use std::error::Error as _;
    if let Some(source) = error.source() {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_owned()
}

/// The line (from 1) of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
