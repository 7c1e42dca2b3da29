//! The environment variable of every standard option: `FORKLESS_` and the
//! flag's name in capitals (`--max-body-size`: `FORKLESS_MAX_BODY_SIZE`).
//! A list option (`--listen`) takes a comma-separated list. clap reads them
//! (after the flags, before the defaults) and shows them in `--help`.

use clap::{Arg, ArgAction, Command};

/// Options that have no variable: they are about this invocation only.
const WITHOUT: &[&str] = &["help", "version", "print_config"];

/// The variable of the option `id`.
pub(super) fn name(id: &str) -> String {
    format!("FORKLESS_{}", id.to_ascii_uppercase())
}

/// `command` (the standard options only) with a variable on each option.
pub(super) fn add(command: Command) -> Command {
    command.mut_args(|arg: Arg| {
        let id = arg.get_id().to_string();
        if WITHOUT.contains(&id.as_str()) {
            return arg;
        }
        let list = matches!(arg.get_action(), ArgAction::Append);
        let arg = arg.env(name(&id));
        if list { arg.value_delimiter(',') } else { arg }
    })
}
