//! `--print-config`: the effective value of every option, as a `--config`
//! file would set it, each with where it came from: `flag --x`,
//! `env FORKLESS_X` (or the app's variable), `FILE:LINE`, or `default`.
//! Options without a value (`admin`, off by default) are shown commented out.

use std::fmt::Write;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::file::{FileValues, key, settable};

/// What `--print-config` prints from.
pub(super) struct Shown<'a> {
    pub(super) name: &'a str,
    pub(super) command: &'a Command,
    pub(super) matches: &'a ArgMatches,
    pub(super) file: Option<&'a FileValues>,
    pub(super) app: &'a [String],
}

impl Shown<'_> {
    /// The text: loadable as a `--config` file.
    pub(super) fn render(&self) -> String {
        let mut out = format!("# The effective configuration of {}.\n", self.name);
        let mut tables: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
        for arg in self.command.get_arguments().filter(|arg| settable(arg)) {
            let full = key(arg.get_id().as_str(), self.app);
            let (table, name) = match full.split_once('.') {
                Some((table, name)) => (table.to_owned(), name.to_owned()),
                None => (String::new(), full.clone()),
            };
            let line = self.line(arg, &name);
            match tables.iter_mut().find(|(t, _)| *t == table) {
                Some((_, lines)) => lines.push(line),
                None => tables.push((table, vec![line])),
            }
        }
        for (table, lines) in tables {
            if !table.is_empty() {
                let _ = writeln!(out, "\n[{table}]");
            }
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    fn line(&self, arg: &Arg, name: &str) -> String {
        let id = arg.get_id().as_str();
        let values = super::raw_values(self.matches, id);
        let source = self.source(arg);
        let quoted: Vec<String> = values.iter().map(|v| value(arg, v)).collect();
        match (
            matches!(arg.get_action(), ArgAction::Append),
            quoted.as_slice(),
        ) {
            (_, []) => format!("# {name} = (unset)  # {source}"),
            (true, _) => format!("{name} = [{}]  # {source}", quoted.join(", ")),
            (false, [one, ..]) => format!("{name} = {one}  # {source}"),
        }
    }

    fn source(&self, arg: &Arg) -> String {
        let id = arg.get_id().as_str();
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("flag --{}", arg.get_long().unwrap_or(id)),
            Some(ValueSource::EnvVariable) => {
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                format!("env {}", env.unwrap_or_default())
            }
            _ => match self
                .file
                .and_then(|file| Some((file, file.values.get(id)?)))
            {
                Some((file, (_, line))) => format!("{}:{line}", file.path.display()),
                None => "default".to_owned(),
            },
        }
    }
}

/// One value as TOML: booleans bare, the rest quoted.
fn value(arg: &Arg, text: &str) -> String {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return text.to_owned();
    }
    format!("{text:?}")
}
