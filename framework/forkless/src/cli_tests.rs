//! The standard command line: flags, environment, file, `--print-config`.

use super::*;
use crate::LogFormat;
use crate::Shards;

/// Parses `args` into a config (the environment is not read in these tests
/// unless a test sets a variable of its own).
fn try_parse<I, T>(options: &MainOptions, args: I) -> Result<Config, Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match super::try_parse(options, args, true)? {
        Invocation::Serve(config) => Ok(*config),
        other => panic!("expected a config, got {other:?}"),
    }
}

fn command(options: &MainOptions) -> Command {
    super::command(options, true)
}

const OPTIONS: MainOptions = MainOptions {
    name: "app",
    version: "0.0.0",
    about: None,
    default_listen: Some("127.0.0.1:9000"),
    default_shards: Some(3),
    args: None,
};

#[test]
fn app_defaults_apply_when_flags_are_absent() {
    let config = try_parse(&OPTIONS, ["app"]).expect("no flags parse");
    assert_eq!(config.get_shards(), Shards::Count(3));
    assert_eq!(
        config.get_listen(),
        &["127.0.0.1:9000".parse().expect("addr")]
    );
    assert_eq!(config.http.header_read_timeout, Duration::from_secs(30));
    let defaults = Config::default();
    assert_eq!(
        config.http.keep_alive_timeout,
        defaults.http.keep_alive_timeout
    );
    assert_eq!(config.http.max_header_size, defaults.http.max_header_size);
    assert_eq!(config.http.max_body_size, defaults.http.max_body_size);
    assert_eq!(
        config.http.body_read_timeout,
        defaults.http.body_read_timeout
    );
    assert_eq!(config.http.body_min_rate, defaults.http.body_min_rate);
    assert_eq!(config.http.send_timeout, defaults.http.send_timeout);
    assert_eq!(config.http.max_connections, defaults.http.max_connections);
    assert_eq!(config.get_admin(), None);
}

#[test]
fn limit_flags_set_the_limits() {
    let config = try_parse(
        &OPTIONS,
        [
            "app",
            "--keep-alive-timeout",
            "5s",
            "--max-header-size",
            "8k",
            "--max-body-size",
            "2m",
            "--body-read-timeout",
            "1s",
            "--body-min-rate",
            "1k",
            "--send-timeout",
            "3s",
            "--max-connections",
            "10",
        ],
    )
    .expect("flags parse");
    assert_eq!(config.http.keep_alive_timeout, Duration::from_secs(5));
    assert_eq!(config.http.max_header_size, 8 * 1024);
    assert_eq!(config.http.max_body_size, 2 * 1024 * 1024);
    assert_eq!(config.http.body_read_timeout, Duration::from_secs(1));
    assert_eq!(config.http.body_min_rate, 1024);
    assert_eq!(config.http.send_timeout, Duration::from_secs(3));
    assert_eq!(config.http.max_connections, 10);
    assert!(try_parse(&OPTIONS, ["app", "--max-connections", "0"]).is_err());
    assert!(try_parse(&OPTIONS, ["app", "--send-timeout", "0s"]).is_err());
    assert!(try_parse(&OPTIONS, ["app", "--max-header-size", "0"]).is_err());
}

#[test]
fn flags_override_defaults() {
    let config = try_parse(
        &OPTIONS,
        [
            "app",
            "--shards",
            "max",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--log-format",
            "json",
            "--header-read-timeout",
            "500ms",
            "--no-pin",
            "--admin",
            "127.0.0.1:0",
        ],
    )
    .expect("flags parse");
    assert_eq!(
        config.get_admin(),
        Some("127.0.0.1:0".parse().expect("addr"))
    );
    assert_eq!(config.get_shards(), Shards::Max);
    assert_eq!(config.get_listen().len(), 2);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.http.header_read_timeout, Duration::from_millis(500));
    assert!(!config.pin);
}

#[test]
fn top_is_a_subcommand_with_its_own_flags() {
    let matches = command(&OPTIONS)
        .try_get_matches_from(["app", "top", "--admin", "127.0.0.1:9090", "--once"])
        .expect("top parses");
    let (name, top) = matches.subcommand().expect("a subcommand");
    assert_eq!(name, "top");
    assert!(TopArgs::from_arg_matches(top).is_ok());
    // Without a subcommand the server's flags parse as before.
    assert!(try_parse(&OPTIONS, ["app", "--admin", "127.0.0.1:0"]).is_ok());
    let usage = |args: &[&str]| command(&OPTIONS).try_get_matches_from(args).is_err();
    assert!(usage(&["app", "top"]), "top needs --admin");
    assert!(usage(&[
        "app",
        "--shards",
        "2",
        "top",
        "--admin",
        "127.0.0.1:1"
    ]));
    assert!(command(&OPTIONS).render_help().to_string().contains("top"));
}

#[test]
fn tls_needs_both_files() {
    let config = try_parse(
        &OPTIONS,
        ["app", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
    )
    .expect("both files parse");
    let files = config.tls.expect("TLS on");
    assert_eq!(files.cert, std::path::Path::new("c.pem"));
    assert_eq!(files.key, std::path::Path::new("k.pem"));
    assert!(try_parse(&OPTIONS, ["app"]).expect("parses").tls.is_none());
    assert!(try_parse(&OPTIONS, ["app", "--tls-cert", "c.pem"]).is_err());
    assert!(try_parse(&OPTIONS, ["app", "--tls-key", "k.pem"]).is_err());
}

#[test]
fn bad_values_are_usage_errors() {
    assert!(try_parse(&OPTIONS, ["app", "--shards", "0"]).is_err());
    assert!(try_parse(&OPTIONS, ["app", "--listen", "localhost"]).is_err());
    assert!(try_parse(&OPTIONS, ["app", "--unknown"]).is_err());
    assert!(try_parse(&OPTIONS, ["app", "--admin", "localhost:9000"]).is_err());
}

/// A config file with `text`, in a directory of its own.
fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("forkless-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("forkless.toml");
    std::fs::write(&path, text).expect("write the file");
    path
}

fn failure(args: &[&str]) -> String {
    match super::try_parse(&OPTIONS, args, true) {
        Err(Failure::Config(error)) => error.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn the_file_sets_defaults_and_flags_win() {
    let path = file(
        "defaults",
        "shards = 2\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\n[limits]\nmax_body_size = \"2m\"\n\
         [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    );
    let path = path.to_str().expect("utf-8 path");
    let config = try_parse(&OPTIONS, ["app", "--config", path]).expect("the file parses");
    assert_eq!(config.get_shards(), Shards::Count(2));
    assert_eq!(config.get_listen().len(), 2);
    assert_eq!(config.http.max_body_size, 2 << 20);
    assert!(config.tls.is_some());
    let config = try_parse(&OPTIONS, ["app", "--shards", "4", "--config", path]).expect("parses");
    assert_eq!(config.get_shards(), Shards::Count(4), "the flag wins");
    assert_eq!(config.http.max_body_size, 2 << 20);
}

#[test]
fn bad_files_name_the_file_line_and_key() {
    let cases = [
        (
            "unknown",
            "shards = 2\n\n[limits]\nmax_bodysize = 1\n",
            ":4: key `limits.max_bodysize`: unknown key (`--print-config` lists them)",
        ),
        (
            "bad-value",
            "# shards\nshards = 0\n",
            ":2: key `shards`: bad value `0`: the shard count must be at least 1",
        ),
        (
            "bad-enum",
            "log_format = \"xml\"\n",
            ":1: key `log_format`: bad value `xml`: expected one of text, json",
        ),
        (
            "not-a-list",
            "admin = [\"127.0.0.1:1\"]\n",
            ":1: key `admin`: takes one value, not a list",
        ),
    ];
    for (name, text, expected) in cases {
        let path = file(name, text);
        let path = path.to_str().expect("utf-8");
        let message = failure(&["app", "--config", path]);
        assert!(message.ends_with(&format!("{path}{expected}")), "{message}");
    }
    let path = file("not-toml", "shards = \n");
    let message = failure(&["app", "--config", path.to_str().expect("utf-8")]);
    assert!(message.contains(":1: "), "{message}");
    let message = failure(&["app", "--config", "/nonexistent/forkless.toml"]);
    assert!(
        message.contains("cannot read the config file /nonexistent/forkless.toml"),
        "{message}"
    );
}

#[test]
fn print_config_says_where_each_value_came_from() {
    let path = file(
        "print",
        "\nshare_port = true\n[limits]\nsend_timeout = \"3s\"\n",
    );
    let path = path.to_str().expect("utf-8");
    let args = ["app", "--config", path, "--shards", "2", "--print-config"];
    let Ok(Invocation::Print(text)) = super::try_parse(&OPTIONS, args, true) else {
        panic!("expected the printed configuration");
    };
    assert!(
        text.contains("\nshards = \"2\"  # flag --shards\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nshare_port = true  # {path}:2\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nsend_timeout = \"3s\"  # {path}:4\n")),
        "{text}"
    );
    assert!(
        text.contains("\nlisten = [\"127.0.0.1:9000\"]  # default\n"),
        "{text}"
    );
    assert!(text.contains("\n# admin = (unset)  # default\n"), "{text}");
    // What it prints loads back as a file.
    let again = file("print-again", &text);
    assert!(
        try_parse(
            &OPTIONS,
            ["app", "--config", again.to_str().expect("utf-8")]
        )
        .is_ok()
    );
}

#[derive(clap::Args, Debug, PartialEq)]
struct AppArgs {
    /// Largest value.
    #[arg(long, default_value_t = 10)]
    max_value_size: usize,
}

#[test]
fn app_arguments_join_the_command_line_and_the_file() {
    let options = MainOptions {
        args: Some(AppArgsSpec::of::<AppArgs>()),
        ..OPTIONS
    };
    let config = try_parse(&options, ["app", "--max-value-size", "5"]).expect("parses");
    assert_eq!(config.get_app_args(), Some(&AppArgs { max_value_size: 5 }));
    let path = file("app", "[app]\nmax_value_size = 7\n");
    let config =
        try_parse(&options, ["app", "--config", path.to_str().expect("utf-8")]).expect("parses");
    assert_eq!(config.get_app_args(), Some(&AppArgs { max_value_size: 7 }));
    let help = command(&options).render_help().to_string();
    assert!(help.contains("App options:"), "{help}");
    assert!(help.contains("--max-value-size"), "{help}");
    assert!(try_parse(&OPTIONS, ["app", "--max-value-size", "5"]).is_err());
}

#[test]
fn help_opens_with_the_description_and_lists_env_and_routes() {
    let help = command(&MainOptions {
        about: Some("A key-value store"),
        ..OPTIONS
    })
    .render_help()
    .to_string();
    assert!(help.starts_with("A key-value store\n"), "{help}");
    assert!(help.contains("[env: FORKLESS_MAX_BODY_SIZE=]"), "{help}");
    assert!(help.contains("POST /reload"), "{help}");
    assert!(help.contains("POST /upgrade"), "{help}");
    let bare = command(&MainOptions {
        about: Some(""),
        ..OPTIONS
    })
    .render_help()
    .to_string();
    assert!(bare.starts_with("app: a forkless server\n"), "{bare}");
}
