use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use super::layering::Layer;
use super::{Cli, Command, Config, LogFormat, MlflowArgs, ModelControlMode, OtlpProtocol, Secret, ServeArgs};

fn args() -> ServeArgs {
    ServeArgs { model_repository: Some(PathBuf::from("models")), ..ServeArgs::default() }
}

/// `text` written as `name` in a folder of its own for this test; returns the file's path.
fn config_file(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infergate-config-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn remove_folder_of(path: &Path) {
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

fn with_file(path: &Path) -> ServeArgs {
    ServeArgs { config: Some(path.to_owned()), ..args() }
}

#[test]
fn defaults_are_valid() {
    let config = Config::resolve(args()).unwrap();
    assert_eq!(config.http_port, 8000);
    assert_eq!(config.grpc_port, 8001);
    assert_eq!(config.metrics_port, 8002);
    assert_eq!(config.max_request_bytes, 64 << 20);
}

#[test]
fn equal_ports_are_refused() {
    let err = Config::resolve(ServeArgs { grpc_port: Some(8000), ..args() }).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--http-port and --grpc-port are both set to port 8000; each server needs its own port"
    );
    let zeros = ServeArgs { http_port: Some(0), grpc_port: Some(0), metrics_port: Some(0), ..args() };
    assert!(Config::resolve(zeros).is_ok());
}

#[test]
fn missing_repository_is_refused() {
    let err =
        Config::resolve(ServeArgs { model_repository: Some("/nonexistent/models".into()), ..args() }).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/models"), "{err}");
}

#[test]
fn bad_limits_are_refused() {
    assert!(Config::resolve(ServeArgs { max_request_bytes: Some(0), ..args() }).is_err());
    assert!(Config::resolve(ServeArgs { shutdown_grace_seconds: Some(100_000), ..args() }).is_err());
    assert!(Config::resolve(ServeArgs { log_level: Some("info,[".into()), ..args() }).is_err());
    assert!(Config::resolve(ServeArgs { metrics_window_seconds: Some(0), ..args() }).is_err());
}

#[test]
fn secrets_stay_out_of_debug_output_and_tls_needs_both_files() {
    let secret = ServeArgs {
        admin_token: Some("admin-secret-0123456789".into()),
        api_keys: vec!["key-secret-0123456789".into()],
        ..args()
    };
    let text = format!("{:?}", Config::resolve(secret).unwrap());
    assert!(!text.contains("admin-secret") && !text.contains("key-secret"), "{text}");
    let short = ServeArgs { api_keys: vec!["short".into()], ..args() };
    assert!(Config::resolve(short).unwrap_err().to_string().contains("--api-key"));
    let half = ServeArgs { tls_cert: Some("cert.pem".into()), ..args() };
    assert!(Config::resolve(half).unwrap_err().to_string().contains("go together"));
    let ca_only = ServeArgs { tls_client_ca: Some("ca.pem".into()), ..args() };
    assert!(Config::resolve(ca_only).is_err());
    let missing =
        ServeArgs { tls_cert: Some("/nonexistent/cert.pem".into()), tls_key: Some("key.pem".into()), ..args() };
    assert!(Config::resolve(missing).unwrap_err().to_string().contains("/nonexistent/cert.pem"));
    assert!(Config::resolve(ServeArgs { header_read_timeout_secs: Some(0.0), ..args() }).is_err());
    assert!(Config::resolve(ServeArgs { max_request_rows: Some(0), ..args() }).is_err());
}

#[test]
fn file_is_layered_under_flags() {
    let dir = std::env::temp_dir().join(format!("infergate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.toml");
    std::fs::write(&path, "http_port = 9000\nmetrics_port = 9002\nlog_format = \"json\"\n").unwrap();
    let config = Config::resolve(ServeArgs { config: Some(path.clone()), metrics_port: Some(9102), ..args() }).unwrap();
    assert_eq!(config.http_port, 9000);
    assert_eq!(config.metrics_port, 9102);
    assert_eq!(config.log_format, LogFormat::Json);

    std::fs::write(&path, "http_prot = 9000\n").unwrap();
    let err = Config::resolve(ServeArgs { config: Some(path), ..args() }).unwrap_err();
    assert!(err.to_string().contains("http_prot"), "{err}");
}

#[test]
fn mlflow_models_from_flags_and_file() {
    let flags = ServeArgs {
        mlflow: MlflowArgs {
            mlflow_uri: Some("http://127.0.0.1:5000".into()),
            mlflow_models: vec!["iris@champion".into(), "iris@challenger".into(), "fraud@latest".into()],
            ..MlflowArgs::default()
        },
        ..args()
    };
    let mlflow = Config::resolve(flags.clone()).unwrap().mlflow.unwrap();
    let served: Vec<(&str, Vec<&str>)> =
        mlflow.models.iter().map(|m| (m.serve_as.as_str(), m.aliases.iter().map(String::as_str).collect())).collect();
    assert_eq!(served, [("iris", vec!["champion", "challenger"]), ("fraud", vec!["latest"])]);
    assert_eq!(mlflow.poll, Duration::from_secs(5));

    let with_mlflow = |change: fn(&mut MlflowArgs)| {
        let mut args = flags.clone();
        change(&mut args.mlflow);
        args
    };
    let no_alias = with_mlflow(|m| m.mlflow_models = vec!["iris".into()]);
    assert!(Config::resolve(no_alias).unwrap_err().to_string().contains("NAME@ALIAS"));
    let no_models = with_mlflow(|m| m.mlflow_models.clear());
    assert!(Config::resolve(no_models).is_err());
    let no_uri = with_mlflow(|m| m.mlflow_uri = None);
    assert!(Config::resolve(no_uri).is_err());
    let ftp = with_mlflow(|m| m.mlflow_uri = Some("ftp://mlflow".into()));
    assert!(Config::resolve(ftp).is_err());
    let inside = with_mlflow(|m| m.mlflow_cache = Some("models/.cache".into()));
    assert!(Config::resolve(inside).unwrap_err().to_string().contains("inside the model repository"));

    let file = "[mlflow]\nuri = \"http://mlflow:5000\"\npoll_secs = 2.5\n\n[[mlflow.models]]\nname = \"Fraud Model\"\n\
                serve_as = \"fraud\"\naliases = [\"champion\"]\n[mlflow.models.config]\nmax_batch_size = 64\n";
    let path = config_file("mlflow", file);
    let mlflow = Config::resolve(with_file(&path)).unwrap().mlflow.unwrap();
    assert_eq!(mlflow.poll, Duration::from_millis(2500));
    assert_eq!(mlflow.models[0].registered, "Fraud Model");
    assert_eq!(mlflow.models[0].serve_as, "fraud");
    assert_eq!(mlflow.models[0].config.max_batch_size, 64);
    std::fs::write(&path, file.replace("max_batch_size", "max_bacth_size")).unwrap();
    assert!(Config::resolve(with_file(&path)).is_err());
    remove_folder_of(&path);
}

#[test]
fn cli_parses_with_and_without_subcommand() {
    let port = |args: &[&str]| match Cli::try_parse_from(args).unwrap().into_command() {
        Command::Serve(serve) => serve.http_port,
        Command::Reference(_) | Command::Backends(_) | Command::Docs(_) => panic!("not serve"),
    };
    assert_eq!(port(&["infergate", "--http-port", "1234"]), Some(1234));
    assert_eq!(port(&["infergate", "serve", "--http-port", "4321"]), Some(4321));
    assert!(Cli::try_parse_from(["infergate", "--http-port", "70000"]).is_err());
}

#[test]
fn flag_beats_file_and_file_beats_default() {
    let merged = ServeArgs { grpc_port: Some(9101), ..ServeArgs::default() }.over(ServeArgs {
        http_port: Some(9000),
        grpc_port: Some(9001),
        ..ServeArgs::default()
    });
    assert_eq!((merged.http_port, merged.grpc_port, merged.metrics_port), (Some(9000), Some(9101), None));

    let path = config_file(
        "precedence",
        "http_port = 9000\ngrpc_port = 9001\nlog_level = \"debug\"\n[mlflow]\nuri = \"http://mlflow:5000\"\n\
         poll_secs = 2.5\n[[mlflow.models]]\nname = \"iris\"\naliases = [\"champion\"]\n",
    );
    let flags = ServeArgs {
        grpc_port: Some(9101),
        mlflow: MlflowArgs { mlflow_poll_secs: Some(7.0), ..MlflowArgs::default() },
        ..with_file(&path)
    };
    let config = Config::resolve(flags).unwrap();
    assert_eq!(config.http_port, 9000, "the file beats the default");
    assert_eq!(config.grpc_port, 9101, "the flag beats the file");
    assert_eq!(config.metrics_port, 8002, "the default stays where no layer sets it");
    assert_eq!(config.log_level, "debug");
    let mlflow = config.mlflow.unwrap();
    assert_eq!(mlflow.uri, "http://mlflow:5000", "a file key in [mlflow] beats the default");
    assert_eq!(mlflow.poll, Duration::from_secs(7), "an --mlflow-* flag beats [mlflow]");
    remove_folder_of(&path);
}

#[test]
fn a_flag_list_replaces_the_file_list() {
    assert_eq!(vec![1].over(vec![2, 3]), [1]);
    assert_eq!(Vec::<u8>::new().over(vec![2, 3]), [2, 3]);

    let path = config_file(
        "lists",
        "model_control_mode = \"explicit\"\nload_models = [\"iris\", \"fraud\"]\n\
         api_keys = [\"file-key-0123456789a\", \"file-key-0123456789b\"]\n\
         [mlflow]\nuri = \"http://mlflow:5000\"\n[[mlflow.models]]\nname = \"iris\"\naliases = [\"champion\"]\n",
    );
    let from_file = Config::resolve(with_file(&path)).unwrap();
    assert_eq!(from_file.model_control_mode, ModelControlMode::Explicit);
    assert_eq!(from_file.load_models, ["iris", "fraud"]);
    assert_eq!(from_file.api_keys.len(), 2);
    assert_eq!(from_file.mlflow.unwrap().models[0].aliases, ["champion"]);

    let flags = ServeArgs {
        load_models: vec!["resnet".into()],
        api_keys: vec!["flag-key-0123456789".into()],
        mlflow: MlflowArgs { mlflow_models: vec!["fraud@latest".into()], ..MlflowArgs::default() },
        ..with_file(&path)
    };
    let config = Config::resolve(flags).unwrap();
    assert_eq!(config.load_models, ["resnet"]);
    assert_eq!(config.api_keys, [Secret("flag-key-0123456789".into())]);
    let models = config.mlflow.unwrap().models;
    assert_eq!((models.len(), models[0].registered.as_str()), (1, "fraud"));
    remove_folder_of(&path);
}

#[test]
fn unknown_file_keys_are_refused() {
    let path = config_file("unknown", "");
    for (text, key) in [
        ("http_prot = 9000\n", "http_prot"),
        // The file's own path is a flag only.
        ("config = \"other.toml\"\n", "config"),
        // Flag spellings are not file keys.
        ("load-model = [\"iris\"]\n", "load-model"),
        ("api_key = [\"key-0123456789abcdef\"]\n", "api_key"),
        ("mlflow_uri = \"http://mlflow:5000\"\n", "mlflow_uri"),
        ("[mlflow]\nmlflow_uri = \"http://mlflow:5000\"\n", "mlflow_uri"),
        ("[mlflow]\nmlflow_models = [\"iris@champion\"]\n", "mlflow_models"),
        ("[mlflow]\nuri = \"http://mlflow:5000\"\n[[mlflow.models]]\nname = \"iris\"\nalias = [\"a\"]\n", "alias"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = Config::resolve(with_file(&path)).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("invalid config file"), "{text}: {message}");
        assert!(message.contains(&format!("unknown field `{key}`")), "{text}: {message}");
    }
    remove_folder_of(&path);
}

#[test]
fn every_file_key_is_read() {
    let dir = std::env::temp_dir().join(format!("infergate-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for pem in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.join(pem), "").unwrap();
    }
    let text = format!(
        "model_repository = \"models\"\nhost = \"127.0.0.1\"\nhttp_host = \"127.0.0.2\"\ngrpc_host = \"::1\"\n\
         metrics_host = \"0.0.0.0\"\nhttp_port = 1\ngrpc_port = 2\nmetrics_port = 3\n\
         http_socket = \"run/http.sock\"\ngrpc_socket = \"run/grpc.sock\"\nsocket_mode = \"600\"\n\
         sockets_only = false\nshared_memory = true\n\
         max_request_bytes = 4\nshutdown_grace_seconds = 5\nmetrics_window_seconds = 6\nort_library = \"ort.so\"\n\
         admin_token = \"admin-token-0123456789\"\nstate_dir = \"state\"\nmodel_control_mode = \"explicit\"\n\
         repository_poll_secs = 7\nrepository_settle_secs = 8\nload_models = [\"iris\"]\n\
         max_loaded_bytes = 19\nmax_loaded_models = 20\ncold_start_timeout_secs = 21\n\
         api_keys = [\"api-key-0123456789ab\"]\ntls_cert = \"{d}/cert.pem\"\ntls_key = \"{d}/key.pem\"\n\
         tls_client_ca = \"{d}/ca.pem\"\nmax_connections = 9\nheader_read_timeout_secs = 10\n\
         body_read_timeout_secs = 11\nmax_concurrent_streams = 12\nmax_tensor_elements = 13\n\
         max_request_elements = 14\nmax_request_rows = 15\nmax_bytes_element = 16\nmax_model_bytes = 17\n\
         log_format = \"json\"\nlog_level = \"warn\"\n\
         otlp_endpoint = \"http://collector:4318\"\notlp_protocol = \"http\"\ntrace_sample_ratio = 0.5\n\
         trace_service_name = \"scoring\"\n\
         [mlflow]\nuri = \"http://mlflow:5000\"\npoll_secs = 18\ncache = \"{d}/cache\"\n\
         webhook_secret = \"webhook-secret-0123456789\"\n\
         [[mlflow.models]]\nname = \"Fraud Model\"\naliases = [\"champion\"]\nserve_as = \"fraud\"\n",
        d = dir.display()
    );
    std::fs::write(dir.join("server.toml"), text).unwrap();
    let config = Config::resolve(ServeArgs { config: Some(dir.join("server.toml")), ..ServeArgs::default() }).unwrap();
    assert_eq!(config.model_repository, Path::new("models"));
    let hosts = [config.http_host, config.grpc_host, config.metrics_host].map(|host| host.to_string());
    assert_eq!(hosts, ["127.0.0.2", "::1", "0.0.0.0"]);
    assert_eq!((config.http_port, config.grpc_port, config.metrics_port), (1, 2, 3));
    assert_eq!(config.http_socket.as_deref(), Some(Path::new("run/http.sock")));
    assert_eq!(config.grpc_socket.as_deref(), Some(Path::new("run/grpc.sock")));
    assert_eq!((config.socket_mode, config.sockets_only, config.shared_memory), (0o600, false, true));
    assert_eq!(config.max_request_bytes, 4);
    assert_eq!((config.shutdown_grace, config.metrics_window), (Duration::from_secs(5), Duration::from_secs(6)));
    assert_eq!(config.ort_library.as_deref(), Some(Path::new("ort.so")));
    assert_eq!(config.admin_token, Some(Secret("admin-token-0123456789".into())));
    assert_eq!(config.state_dir.as_deref(), Some(Path::new("state")));
    assert_eq!(config.model_control_mode, ModelControlMode::Explicit);
    assert_eq!((config.repository_poll, config.repository_settle), (Duration::from_secs(7), Duration::from_secs(8)));
    assert_eq!(config.load_models, ["iris"]);
    let on_demand = config.on_demand;
    assert_eq!(
        (on_demand.max_loaded_bytes, on_demand.max_loaded_models, on_demand.cold_start_timeout),
        (Some(19), Some(20), Duration::from_secs(21))
    );
    assert_eq!(config.api_keys, [Secret("api-key-0123456789ab".into())]);
    let tls = config.tls.unwrap();
    assert_eq!(
        (tls.cert, tls.key, tls.client_ca),
        (dir.join("cert.pem"), dir.join("key.pem"), Some(dir.join("ca.pem")))
    );
    assert_eq!(config.connections.max_connections, 9);
    assert_eq!(config.connections.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.connections.body_read_timeout, Duration::from_secs(11));
    assert_eq!(config.connections.max_concurrent_streams, 12);
    let limits = config.request_limits;
    assert_eq!(
        (limits.max_tensor_elements, limits.max_request_elements, limits.max_request_rows, limits.max_bytes_element),
        (13, 14, 15, 16)
    );
    assert_eq!(config.max_model_bytes, 17);
    assert_eq!((config.log_format, config.log_level.as_str()), (LogFormat::Json, "warn"));
    let tracing = config.tracing.unwrap();
    assert_eq!((tracing.endpoint.as_str(), tracing.protocol), ("http://collector:4318", OtlpProtocol::Http));
    assert_eq!((tracing.sample_ratio, tracing.service_name.as_str()), (0.5, "scoring"));
    let mlflow = config.mlflow.unwrap();
    assert_eq!((mlflow.uri.as_str(), mlflow.poll), ("http://mlflow:5000", Duration::from_secs(18)));
    assert_eq!(mlflow.cache, dir.join("cache"));
    assert_eq!(mlflow.webhook_secret, Some(Secret("webhook-secret-0123456789".into())));
    assert_eq!((mlflow.models[0].registered.as_str(), mlflow.models[0].serve_as.as_str()), ("Fraud Model", "fraud"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tracing_needs_an_http_collector_and_a_ratio_in_range() {
    let config = Config::resolve(serve_flags(&["--otlp-endpoint", "http://127.0.0.1:4317"])).unwrap();
    let tracing = config.tracing.unwrap();
    assert_eq!(
        (tracing.protocol, tracing.sample_ratio, tracing.service_name.as_str()),
        (OtlpProtocol::Grpc, 0.01, "infergate")
    );
    assert!(Config::resolve(serve_flags(&[])).unwrap().tracing.is_none());
    let refusals: [(&[&str], &str); 5] = [
        (&["--trace-sample-ratio", "0.5"], "need --otlp-endpoint"),
        (&["--otlp-endpoint", "https://collector:4317"], "must be an http:// URL"),
        (&["--otlp-endpoint", "collector:4317"], "must be an http:// URL"),
        (&["--otlp-endpoint", "http://c:4317", "--trace-sample-ratio", "1.5"], "between 0 and 1"),
        (&["--otlp-endpoint", "http://c:4317", "--trace-service-name", " "], "must not be empty"),
    ];
    for (flags, message) in refusals {
        let error = Config::resolve(serve_flags(flags)).unwrap_err().to_string();
        assert!(error.contains(message), "{flags:?}: {error}");
    }
}

#[test]
fn payload_log_and_feedback_settings_have_defaults_and_bounds() {
    let config = Config::resolve(serve_flags(&[])).unwrap();
    assert_eq!((config.payload_log.dir.as_ref(), config.payload_log.url.as_ref()), (None, None));
    assert_eq!(
        (config.payload_log.queue, config.feedback.max_predictions, config.feedback.max_batch),
        (10_000, 1_000_000, 10_000)
    );
    let config = Config::resolve(serve_flags(&[
        "--payload-log-url",
        "https://sink.example:8443/events",
        "--payload-log-dir",
        "/var/log/infergate",
        "--payload-log-max-file-age-secs",
        "60",
        "--feedback-max-age-secs",
        "86400",
    ]))
    .unwrap();
    assert_eq!(config.payload_log.url.as_deref(), Some("https://sink.example:8443/events"));
    assert_eq!(config.payload_log.dir, Some(PathBuf::from("/var/log/infergate")));
    assert_eq!(
        (config.payload_log.max_file_age, config.feedback.max_age),
        (Duration::from_secs(60), Duration::from_secs(86400))
    );
    let refusals: [(&[&str], &str); 5] = [
        (&["--payload-log-url", "sink:8080"], "http:// or https://"),
        (&["--payload-log-url", "http:///events"], "with a host"),
        (&["--payload-log-queue", "0"], "at least 1"),
        (&["--feedback-max-batch", "0"], "at least 1"),
        (&["--payload-log-source", " "], "printable ASCII"),
    ];
    for (flags, message) in refusals {
        let error = Config::resolve(serve_flags(flags)).unwrap_err().to_string();
        assert!(error.contains(message), "{flags:?}: {error}");
    }
}

/// `infergate serve --model-repository models <flags>`, parsed.
fn serve_flags(flags: &[&str]) -> ServeArgs {
    let line = ["infergate", "serve", "--model-repository", "models"].iter().chain(flags);
    let Command::Serve(serve) = Cli::try_parse_from(line).unwrap().into_command() else { panic!("not serve") };
    serve
}

#[test]
fn each_listener_binds_host_unless_its_own_address_is_set() {
    let config = Config::resolve(serve_flags(&["--host", "127.0.0.1", "--metrics-host", "0.0.0.0"])).unwrap();
    let hosts = [config.http_host, config.grpc_host, config.metrics_host].map(|host| host.to_string());
    assert_eq!(hosts, ["127.0.0.1", "127.0.0.1", "0.0.0.0"]);
    let config = Config::resolve(serve_flags(&["--grpc-host", "::1"])).unwrap();
    let hosts = [config.http_host, config.grpc_host, config.metrics_host].map(|host| host.to_string());
    assert_eq!(hosts, ["0.0.0.0", "::1", "0.0.0.0"]);
}

#[test]
fn flags_keep_their_names() {
    let cli = Cli::try_parse_from([
        "infergate",
        "--load-model",
        "iris",
        "--load-model",
        "fraud",
        "--api-key",
        "a,b",
        "--mlflow-uri",
        "http://mlflow:5000",
        "--mlflow-model",
        "iris@champion",
        "--mlflow-poll-secs",
        "3",
        "--mlflow-cache",
        "cache",
        "--mlflow-webhook-secret",
        "secret",
    ])
    .unwrap();
    let Command::Serve(serve) = cli.into_command() else { panic!("not serve") };
    assert_eq!(serve.load_models, ["iris", "fraud"]);
    assert_eq!(serve.api_keys, ["a", "b"]);
    let mlflow = serve.mlflow;
    assert_eq!(mlflow.mlflow_uri.as_deref(), Some("http://mlflow:5000"));
    assert_eq!(mlflow.mlflow_models, ["iris@champion"]);
    assert_eq!((mlflow.mlflow_poll_secs, mlflow.mlflow_cache), (Some(3.0), Some(PathBuf::from("cache"))));
    assert_eq!(mlflow.mlflow_webhook_secret.as_deref(), Some("secret"));
    assert!(mlflow.registry_models.is_empty(), "[[mlflow.models]] is a file table, never a flag");
}

#[test]
fn shared_memory_is_off_unless_asked_for() {
    assert!(!Config::resolve(serve_flags(&[])).unwrap().shared_memory);
    assert!(Config::resolve(serve_flags(&["--shared-memory"])).unwrap().shared_memory);
    assert!(!Config::resolve(serve_flags(&["--shared-memory=false"])).unwrap().shared_memory);
}

#[test]
fn sockets_are_checked_at_start() {
    let config =
        Config::resolve(serve_flags(&["--http-socket", "h.sock", "--grpc-socket", "g.sock", "--sockets-only"]));
    let config = config.unwrap();
    assert!(config.sockets_only && config.socket_mode == 0o660, "{config:?}");
    let refused = |flags: &[&str], fragment: &str| {
        let error = Config::resolve(serve_flags(flags)).unwrap_err().to_string();
        assert!(error.contains(fragment), "{flags:?}: {error}");
    };
    refused(&["--http-socket", "h.sock", "--sockets-only"], "needs both --http-socket and --grpc-socket");
    refused(&["--http-socket", "same.sock", "--grpc-socket", "same.sock"], "different paths");
    refused(&["--http-socket", &"x".repeat(108)], "the kernel's limit");
    refused(&["--socket-mode", "8"], "not an octal file mode");
    refused(&["--socket-mode", "1777"], "up to 777");
    refused(&["--socket-mode", "060"], "read and write for the owner");
    let config = Config::resolve(serve_flags(&["--socket-mode", "0o640"])).unwrap();
    assert_eq!(config.socket_mode, 0o640);
}

#[test]
fn on_demand_mode_and_its_budget_are_read_and_checked() {
    let config = Config::resolve(serve_flags(&[
        "--model-control-mode",
        "on-demand",
        "--max-loaded-bytes",
        "1000000",
        "--max-loaded-models",
        "50",
        "--cold-start-timeout-secs",
        "2.5",
    ]))
    .unwrap();
    assert_eq!(config.model_control_mode, ModelControlMode::OnDemand);
    assert_eq!((config.on_demand.max_loaded_bytes, config.on_demand.max_loaded_models), (Some(1_000_000), Some(50)));
    assert_eq!(config.on_demand.cold_start_timeout, Duration::from_millis(2500));
    let defaults = Config::resolve(serve_flags(&[])).unwrap().on_demand;
    assert_eq!(defaults, crate::config::OnDemandSettings::default());
    for (flags, refusal) in [
        (["--max-loaded-bytes", "0"], "must be at least 1"),
        (["--max-loaded-models", "0"], "must be at least 1"),
        (["--cold-start-timeout-secs", "0"], "between 0.1 and 3600"),
    ] {
        let error = Config::resolve(serve_flags(&flags)).and_then(|c| c.validate().map(|()| c)).unwrap_err();
        assert!(error.to_string().contains(refusal), "{flags:?}: {error}");
    }
}
