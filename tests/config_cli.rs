//! Configuration as `main` sees it: real files on disk, command-line flags, the
//! `--print-config` / `--check-config` modes, and the shipped config and tuning
//! profiles. Calls `shardcast::server::cli` directly; the binary's own flag handling
//! belongs to `main`.

use std::path::{Path, PathBuf};

use clap::Parser;
use shardcast::server::cli::{self, Cli, ConfigSource, Startup};
use shardcast::server::config::{parse, Config, ConfigError, Cores, LogFormat};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch directory for one test, emptied on creation.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcast-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file is writable");
    path
}

fn args(list: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("shardcast").chain(list.iter().copied()))
        .expect("test arguments are valid flags")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn missing_config_file_is_an_error_naming_it() {
    let dir = scratch("missing");
    let path = dir.join("nope.toml");
    let err = cli::load(&args(&["--config", arg(&path)])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { path: p, .. } if *p == path),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.starts_with(&format!("cannot read config file {}", path.display())));
    assert!(message.contains("No such file"), "{message}");
}

#[test]
fn flags_override_the_file() {
    let dir = scratch("override");
    let file = write(
        &dir,
        "a.toml",
        "[server]\ncores = \"0\"\nbind = \"10.0.0.1\"\nlog_format = \"json\"\n\
         [rtmp]\nport = 1940\n[http]\nport = 8090\n[record]\ndir = \"/var/rec\"\n\
         [auth]\npublish = false\n",
    );
    let from_file = cli::load(&args(&["--config", arg(&file)])).unwrap().config;
    assert_eq!(from_file.rtmp.port, 1940);
    assert_eq!(from_file.server.log_format, LogFormat::Json);

    let loaded = cli::load(&args(&[
        "--config",
        arg(&file),
        "--cores",
        "0-1",
        "--bind",
        "::",
        "--rtmp-port",
        "2000",
        "--http-port",
        "9000",
        "--log-format",
        "human",
        "--log-level",
        "debug",
        "--record-dir",
        "/srv/rec",
    ]))
    .unwrap();
    let c = &loaded.config;
    assert_eq!(loaded.source, ConfigSource::Files(vec![file.clone()]));
    assert_eq!(c.server.cores, Cores::List(vec![0, 1]));
    assert_eq!(c.server.bind.to_string(), "::");
    assert_eq!((c.rtmp.port, c.http.port), (2000, 9000));
    assert_eq!(c.server.log_format, LogFormat::Human);
    assert_eq!(c.server.log_level, "debug");
    assert_eq!(c.record.dir, PathBuf::from("/srv/rec"));
    // Keys no flag touched keep the file's value.
    assert_eq!(c.server.bind, "::".parse::<std::net::IpAddr>().unwrap());
}

#[test]
fn a_flag_can_repair_a_file_and_errors_name_the_key() {
    let dir = scratch("repair");
    let file = write(&dir, "a.toml", "[http]\nport = 1935\n");
    let err = cli::load(&args(&["--config", arg(&file)]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "http.port = 1935: expected a port different from rtmp.port (1935)"
    );
    let loaded = cli::load(&args(&["--config", arg(&file), "--rtmp-port", "1936"])).unwrap();
    assert_eq!(
        (loaded.config.rtmp.port, loaded.config.http.port),
        (1936, 1935)
    );
    let err = cli::load(&args(&["--config", arg(&file), "--cores", "2-"])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("server.cores = \"2-\": expected"),
        "{err}"
    );
}

#[test]
fn file_errors_carry_path_line_column_and_key() {
    let dir = scratch("errors");
    let cases = [
        (
            "[hls]\nsegment_ms = 2000\npart_ms = \"fast\"\n",
            ":3:11: hls.part_ms: invalid type",
        ),
        (
            "[rtmp]\nchunk_sise = 4096\n",
            ":2:1: rtmp.chunk_sise: unknown field `chunk_sise`",
        ),
        ("[streams]\nring_slots = 1000\n", ""),
        (
            "[record]\npath = \"{stream}/{start}-{node}.flv\"\n",
            ":2:8: record.path:",
        ),
    ];
    for (text, expected) in cases {
        let file = write(&dir, "bad.toml", text);
        let err = cli::load(&args(&["--config", arg(&file)]))
            .unwrap_err()
            .to_string();
        if expected.is_empty() {
            assert_eq!(
                err,
                "streams.ring_slots = 1000: expected a power of two from 16 to 65536"
            );
        } else {
            assert_eq!(
                err.find(expected),
                Some(file.display().to_string().len()),
                "{err}"
            );
        }
    }
}

#[test]
fn default_file_is_used_only_without_config_flag() {
    let dir = scratch("default");
    let default = write(&dir, "shardcast.toml", "[rtmp]\nport = 1999\n");
    let loaded = cli::load_with_default(&Cli::default(), &default).unwrap();
    assert_eq!(loaded.source, ConfigSource::DefaultFile(default.clone()));
    assert_eq!(loaded.config.rtmp.port, 1999);

    let other = write(&dir, "other.toml", "");
    let loaded = cli::load_with_default(&args(&["--config", arg(&other)]), &default).unwrap();
    assert_eq!(loaded.config.rtmp.port, 1935);

    let loaded = cli::load_with_default(&Cli::default(), &dir.join("absent.toml")).unwrap();
    assert_eq!(loaded.source, ConfigSource::BuiltIn);
    assert!(loaded.source.to_string().contains("built-in defaults"));
}

#[test]
fn print_config_round_trips() {
    let dir = scratch("print");
    let file = write(
        &dir,
        "a.toml",
        "[server]\ncores = \"3,0-1\"\nnode_name = \"edge-7\"\n[streams]\n\
         viewer_send_buffer_bytes = 131072\n[record]\nenabled = true\nformat = \"fmp4\"\n",
    );
    for cli_args in [
        vec!["--print-config"],
        vec!["--config", arg(&file), "--print-config"],
    ] {
        let cli = args(&cli_args);
        let mut out = Vec::new();
        assert!(matches!(
            cli::startup(&cli, &mut out).unwrap(),
            Startup::Exit
        ));
        let printed = String::from_utf8(out).unwrap();
        let reparsed = parse("printed", &printed).unwrap();
        reparsed.validate().unwrap();
        assert_eq!(reparsed, cli::load(&cli).unwrap().config, "{printed}");
    }
    let printed_default = {
        let mut out = Vec::new();
        let cli = args(&[
            "--config",
            arg(&write(&dir, "empty.toml", "")),
            "--print-config",
        ]);
        cli::startup(&cli, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        parse("printed", &printed_default).unwrap(),
        Config::default()
    );
}

#[test]
fn check_config_reports_and_exits() {
    let dir = scratch("check");
    let good = write(&dir, "good.toml", "[hls]\nsegment_ms = 4000\n");
    let mut out = Vec::new();
    let outcome = cli::startup(&args(&["--config", arg(&good), "--check-config"]), &mut out);
    assert!(matches!(outcome, Ok(Startup::Exit)));
    let report = String::from_utf8(out).unwrap();
    assert!(
        report.starts_with("shardcast: configuration OK (config file "),
        "{report}"
    );

    let bad = write(&dir, "bad.toml", "[hls]\npart_ms = 50\n");
    let mut out = Vec::new();
    let err = cli::startup(&args(&["--config", arg(&bad), "--check-config"]), &mut out)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "hls.part_ms = 50: expected a whole number of milliseconds from 100 to 1000"
    );
    assert!(out.is_empty(), "nothing is reported as OK");

    let mut out = Vec::new();
    let run = cli::startup(&args(&["--config", arg(&good)]), &mut out).unwrap();
    assert!(matches!(run, Startup::Run(loaded) if loaded.config.hls.segment_ms == 4000));
    assert!(out.is_empty());
}

#[test]
fn shipped_config_and_profiles_are_valid_overlays() {
    let base = Path::new(ROOT).join("shardcast.toml");
    let loaded = cli::load(&args(&["--config", arg(&base)])).unwrap();
    assert_eq!(loaded.config, Config::default());

    let profiles = Path::new(ROOT).join("tuning/profiles");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&profiles).expect("tuning/profiles exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let layered = cli::load(&args(&["--config", arg(&base), "--config", arg(&path)]))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_ne!(
                layered.config,
                Config::default(),
                "{} changes nothing",
                path.display()
            );
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["high-density.toml", "low-latency.toml"]);
}
