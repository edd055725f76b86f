//! The suite's files: run.json read back unchanged, charts and REPORT.md drawn from a
//! small fixed run, limits and saturation marked as such; and one short real run of
//! `iomodels bench` end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use iomodels::experiments::Experiment;
use iomodels::results::{Run, SCHEMA_VERSION};

/// tests/fixtures/run: a small run (select and epoll-et beside 0 and 1,100 idle
/// connections, two repeats, wait-cost, blocking, churn), cut down from a real one.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run")
}

/// A fresh folder under the target dir holding a copy of the fixture's run.json.
fn scratch(name: &str, with_fixture: bool) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if with_fixture {
        std::fs::copy(fixture().join("run.json"), dir.join("run.json")).unwrap();
    }
    dir
}

#[test]
fn run_json_reads_back_unchanged() {
    let run = Run::load(&fixture()).unwrap();
    assert_eq!(run.schema_version, SCHEMA_VERSION);
    assert!(run.points.len() >= 10, "the fixture has its points");
    let dir = scratch("round-trip", false);
    run.save(&dir).unwrap();
    let again = Run::load(&dir).unwrap();
    assert_eq!(again, run);
    // Nothing in the file is dropped on the way: the JSON values agree field by field.
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("run.json")).unwrap()).unwrap()
    };
    assert_eq!(read(&dir), read(&fixture()));
}

/// A run written with schema 1, when a limit was one string (cut down from the reference
/// run of that time): it still loads, each limit taken apart into the suite's words and
/// the server's.
#[test]
fn a_schema_1_run_still_loads_with_its_limits_taken_apart() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-1");
    let text = std::fs::read_to_string(dir.join("run.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema_version"], 1);
    let run = Run::load(&dir).unwrap();
    assert_eq!(run.points.len(), json["points"].as_array().unwrap().len());
    let select = run
        .points
        .iter()
        .filter(|p| p.experiment == Experiment::Idle && p.model == "select")
        .find_map(|p| p.limit.as_ref())
        .expect("select meets FD_SETSIZE in that run");
    assert!(select.why.starts_with("held "), "{select:?}");
    let said = select.server_said.as_deref().unwrap_or_default();
    assert!(said.contains("FD_SETSIZE"), "{select:?}");
    // Read back into one string, each limit is the text schema 1 wrote.
    for (point, written) in run.points.iter().zip(json["points"].as_array().unwrap()) {
        let text = point.limit.as_ref().map(|l| l.to_string());
        assert_eq!(text.as_deref(), written["limit"].as_str());
    }
}

#[test]
fn another_schema_version_is_refused_with_both_versions_named() {
    let dir = scratch("old-schema", true);
    let text = std::fs::read_to_string(dir.join("run.json")).unwrap();
    let old = text.replacen(
        &format!("\"schema_version\": {SCHEMA_VERSION}"),
        "\"schema_version\": 999",
        1,
    );
    assert_ne!(old, text);
    std::fs::write(dir.join("run.json"), old).unwrap();
    let e = Run::load(&dir).unwrap_err();
    assert!(
        e.contains("999") && e.contains(&SCHEMA_VERSION.to_string()),
        "{e}"
    );
}

#[test]
fn a_limit_is_a_limit_never_a_zero_and_saturation_is_flagged() {
    let run = Run::load(&fixture()).unwrap();
    let series = run.series(Experiment::Idle, |p| p.rps());
    let select = series.iter().find(|s| s.name == "select").unwrap();
    assert_eq!(select.limits.len(), 1, "{select:?}");
    assert_eq!(select.limits[0].0, 1100.0);
    assert!(
        select.limits[0].1.to_string().contains("FD_SETSIZE"),
        "{:?}",
        select.limits
    );
    assert!(
        select.values.iter().all(|v| v.0 != 1100.0),
        "the limit has no value drawn: {select:?}"
    );
    let epoll = series.iter().find(|s| s.name == "epoll-et").unwrap();
    assert!(epoll.limits.is_empty());
    assert_eq!(epoll.values.len(), 2);
    // The fixture's epoll-et at 0 idle was saturated in one of its two repeats.
    assert!(epoll.values[0].2, "{epoll:?}");
    assert!(!epoll.values[1].2, "{epoll:?}");

    let wait = run.series(Experiment::WaitCost, |p| p.ns_per_wait);
    let select = wait.iter().find(|s| s.name == "select").unwrap();
    assert!(select.limits.iter().any(|l| l.0 == 10_000.0));
}

#[test]
fn the_median_of_repeats_is_what_is_shown() {
    let run = Run::load(&fixture()).unwrap();
    let at = |model: &str, idle: usize| -> Vec<f64> {
        run.points
            .iter()
            .filter(|p| {
                p.experiment == Experiment::Idle && p.model == model && p.idle == Some(idle)
            })
            .filter_map(|p| p.rps())
            .collect()
    };
    let repeats = at("epoll-et", 1100);
    assert_eq!(repeats.len(), 2, "two repeats in the fixture");
    let series = run.series(Experiment::Idle, |p| p.rps());
    let epoll = series.iter().find(|s| s.name == "epoll-et").unwrap();
    let shown = epoll.values.iter().find(|v| v.0 == 1100.0).unwrap().1;
    assert_eq!(shown, (repeats[0] + repeats[1]) / 2.0);
}

#[test]
fn charts_and_report_are_drawn_from_a_fixed_run() {
    let dir = scratch("plot", true);
    let (run, drawn) = iomodels::plot(&dir).unwrap();
    let files: Vec<&str> = drawn.iter().map(|c| c.file).collect();
    for file in [
        "idle-throughput.svg",
        "idle-p99.svg",
        "idle-cpu-per-request.svg",
        "memory-per-connection.svg",
        "wait-cost.svg",
        "blocking.svg",
        "churn.svg",
    ] {
        assert!(files.contains(&file), "{file} not drawn: {files:?}");
        let svg = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // One legend entry per model (wait-cost compares the calls themselves).
        let model = if file == "wait-cost.svg" {
            ">\nepoll\n<"
        } else {
            "epoll-et"
        };
        assert!(svg.contains(model), "{file} has no {model} line");
    }
    let idle = std::fs::read_to_string(dir.join("idle-throughput.svg")).unwrap();
    assert!(
        idle.contains("× select: limit from 1100"),
        "the limit is noted"
    );
    assert!(idle.contains("saturated"), "the saturated point is noted");
    assert!(idle.contains("idle connections") && idle.contains("requests per second"));

    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    for chart in &drawn {
        assert!(
            report.contains(&format!("]({})", chart.file)),
            "{} not in the report",
            chart.file
        );
    }
    assert!(report.contains(&run.machine.cpu_model));
    assert!(report.contains("| select |") && report.contains("limit"));
    assert!(report.contains("Kerrisk"));
    assert!(report.contains('*'), "saturated figures are starred");
    // The sentence under the headline chart is computed from the run.
    assert!(
        report.contains("kept their 0-idle throughput") && report.contains("noise floor"),
        "{report}"
    );
}

#[test]
fn plot_says_why_when_there_is_no_run() {
    let dir = scratch("empty", false);
    let out = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .arg("plot")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run.json") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn bench_refuses_a_cpu_share_that_is_none() {
    for share in ["0", "1.5", "half"] {
        let out = Command::new(env!("CARGO_BIN_EXE_iomodels"))
            .args(["bench", "--server-cpu", share])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{share} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--server-cpu"), "{share}: {err}");
    }
}

#[test]
fn bench_refuses_a_typo_with_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["bench", "--models", "epol"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("epoll-et"), "{err}");
}

/// The idle point of `model` (as it comes) at `idle` idle connections.
#[track_caller]
fn point_of<'a>(run: &'a Run, model: &str, idle: usize) -> &'a iomodels::results::Point {
    run.points
        .iter()
        .find(|p| {
            p.experiment == Experiment::Idle
                && p.model == model
                && p.server_args.is_empty()
                && p.idle == Some(idle)
        })
        .unwrap_or_else(|| panic!("no idle point of {model} at {idle}"))
}

/// A short real run: two models, idle 0 and 1,100 (past select's FD_SETSIZE), the
/// blocking experiment (with the reactor, whose variants ask their own routes); everything written, the limit recorded with select's own words,
/// the counters taken over the window.
#[test]
fn bench_runs_end_to_end_and_records_a_real_limit() {
    let dir = scratch("bench", false).join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args([
            "bench",
            "--experiments",
            "idle,blocking",
            "--models",
            "select,epoll-et,reactor",
            "--idle-points",
            "0,1100",
            "--warmup",
            "100ms",
            "--window",
            "500ms",
            "--repeats",
            "1",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {err}");
    let run = Run::load(&dir).unwrap();
    assert_eq!(run.profile, "quick");
    assert!(run.machine.cores >= 1 && run.machine.memory_kb > 0);
    // Two idle points for select, epoll-et and its naive variant (--et-drain eagain),
    // epoll-et's A/A twin, and the reactor; the blocking point for each model, four for
    // the reactor.
    assert_eq!(run.points.len(), 2 * 5 + 2 + 4, "{:#?}", run.points);
    let twin = point_of(&run, "epoll-et (A/A)", 1100);
    assert_eq!(
        twin.limit, None,
        "the A/A twin is epoll-et under another name"
    );
    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    assert!(report.contains("## Noise"), "{report}");

    let point = |model: &str, idle: usize| point_of(&run, model, idle);
    let select = point("select", 1100);
    let limit = select.limit.as_ref().expect("select cannot hold 1,100");
    // select's own words, kept apart from ours.
    let said = limit.server_said.as_deref().unwrap_or_default();
    assert!(said.contains("FD_SETSIZE"), "{limit:?}");

    let epoll = point("epoll-et", 1100);
    assert_eq!(epoll.limit, None);
    let load = epoll.load.as_ref().unwrap();
    assert_eq!(load.idle.verified, 1100);
    assert!(load.completed > 0);
    let server = epoll.server.as_ref().unwrap();
    let counters = server.counters.as_ref().unwrap();
    assert!(counters.wait_calls > 0 && counters.requests > 0);
    assert!(counters.open >= 1100, "{counters:?}");
    // The server's count over the window and ours agree to within the edges.
    let diff = counters.requests.abs_diff(load.completed);
    assert!(
        diff * 10 <= load.completed,
        "server {} vs loadgen {}",
        counters.requests,
        load.completed
    );
    assert!(server.rss_kb > 0 && server.threads >= 1);

    let blocking: Vec<_> = run
        .points
        .iter()
        .filter(|p| p.experiment == Experiment::Blocking)
        .collect();
    // The experiment's route, or a variant's own, which its series name says.
    assert!(!blocking.is_empty());
    for p in &blocking {
        let path = p.path.as_deref().expect("a blocking point has a path");
        if p.own_path {
            let key = p.series_key();
            assert!(key.to_string().ends_with(path), "{key}");
            assert_eq!(key.route(), Some(path), "{key}");
        } else {
            assert_eq!(path, "/sleep/50", "{}", p.series_key());
        }
    }
    let waits = blocking
        .iter()
        .filter(|p| p.path.as_deref() == Some("/wait/50"));
    assert_eq!(waits.count(), 2, "the reactor's coroutine and callback");

    for file in ["REPORT.md", "idle-throughput.svg", "blocking.svg"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("limit") && stdout.contains("epoll-et"),
        "{stdout}"
    );
    // A second run into the same folder is refused rather than mixed in.
    let again = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["bench", "--experiments", "wait-cost", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
}

/// Past what one process may hold: under a descriptor limit of 2,000, a point of 2,500
/// idle connections is a limit for epoll-et (one process) that names the limit, and
/// prefork holds it with workers enough, driven by load processes enough.
#[test]
fn past_one_process_prefork_holds_what_one_process_cannot() {
    use nix::sys::resource::{setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let dir = scratch("bench-processes", false).join("run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iomodels"));
    cmd.args([
        "bench",
        "--experiments",
        "idle",
        "--models",
        "epoll-et,prefork",
        "--idle-points",
        "0,2500",
        "--warmup",
        "100ms",
        "--window",
        "500ms",
        "--out",
    ])
    .arg(&dir);
    // SAFETY: setrlimit is a plain system call, safe between fork and exec; lowering a
    // limit needs no privilege.
    unsafe {
        cmd.pre_exec(|| {
            setrlimit(Resource::RLIMIT_NOFILE, 2000, 2000)?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {err}");
    let run = Run::load(&dir).unwrap();
    let per_process = run.settings.connections_per_process.unwrap();
    assert!(per_process < 2000, "{per_process}");
    let at = |model: &str, idle: usize| {
        run.points
            .iter()
            .find(|p| p.model == model && p.server_args.is_empty() && p.idle == Some(idle))
            .unwrap_or_else(|| panic!("no {model} point at {idle}"))
    };
    let epoll = at("epoll-et", 2500);
    let limit = epoll.limit.as_ref().expect("one process cannot hold 2,510");
    assert!(
        limit.why.contains("RLIMIT_NOFILE 2000") && epoll.load.is_none(),
        "{limit:?}"
    );
    let prefork = at("prefork", 2500);
    assert_eq!(prefork.limit, None, "{:?}", prefork.limit);
    assert!(prefork.workers.unwrap() >= 2, "{:?}", prefork.workers);
    let load = prefork.load.as_ref().unwrap();
    assert!(load.config.processes >= 2, "{:?}", load.config);
    assert_eq!(load.idle.verified, 2500);
    let counters = prefork.server.as_ref().unwrap().counters.as_ref().unwrap();
    assert!(counters.open >= 2500, "{counters:?}");
}

/// `--server NAME=COMMAND`: a server of one's own beside the models, in the same run
/// and the same tables; one that never listens is a limit that says so.
#[test]
fn a_server_of_ones_own_joins_the_run() {
    let dir = scratch("bench-own-server", false).join("run");
    let exe = env!("CARGO_BIN_EXE_iomodels");
    let out = Command::new(exe)
        .args(["bench", "--experiments", "idle", "--models", "select"])
        .args([
            "--idle-points",
            "0",
            "--warmup",
            "100ms",
            "--window",
            "300ms",
        ])
        .arg("--server")
        .arg(format!(
            "mine={exe} serve epoll-lt --bind {{host}} --port {{port}}"
        ))
        .args(["--server", "silent=sleep 30 # {port}"])
        // One that dies mid-point, with its last words.
        .arg("--server")
        .arg(format!(
            "dies=sh -c '{exe} serve epoll-et --bind {{host}} --port {{port}} & sleep 0.25; \
             echo first words >&2; echo out of luck >&2; kill $!; exit 3'"
        ))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {err}");
    let run = Run::load(&dir).unwrap();
    assert!(run.settings.servers["mine"].contains("serve epoll-lt"));
    let of = |name: &str| run.points.iter().find(|p| p.model == name).unwrap();
    let mine = of("mine");
    assert_eq!(mine.limit, None, "{:?}", mine.limit);
    assert!(mine.load.as_ref().unwrap().completed > 0);
    assert!(
        mine.server.as_ref().unwrap().cpu_user_s + mine.server.as_ref().unwrap().cpu_sys_s > 0.0
    );
    let silent = of("silent").limit.as_ref().expect("it never listens");
    assert!(silent.why.contains("did not listen"), "{silent:?}");
    let dies = of("dies").limit.as_ref().expect("it died");
    assert!(
        dies.why.contains("exited (exit status: 3)") && dies.why.ends_with("out of luck"),
        "{dies:?}"
    );
    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    assert!(report.contains("mine"));
}

/// `--netns`: the server in one network namespace, the load in another, a veth pair
/// between; both namespaces gone when the run ends. `--link-delay` delays the link.
#[test]
fn netns_puts_the_server_and_the_load_on_two_hosts() {
    let dir = scratch("bench-netns", false).join("run");
    let exe = env!("CARGO_BIN_EXE_iomodels");
    let bench = |extra: &[&str], out: &Path| {
        Command::new(exe)
            .args([
                "bench",
                "--netns",
                "--experiments",
                "idle",
                "--models",
                "epoll-lt",
            ])
            .args([
                "--idle-points",
                "100",
                "--warmup",
                "100ms",
                "--window",
                "400ms",
            ])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = bench(&[], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --netns failed: {err}");
    let run = Run::load(&dir).unwrap();
    let network = run
        .settings
        .network
        .as_ref()
        .expect("the network is recorded");
    assert_eq!(
        (network.kind.as_str(), network.server.as_str()),
        ("netns", "10.200.0.1")
    );
    let point = &run.points[0];
    assert_eq!(point.limit, None, "{:?}", point.limit);
    let load = point.load.as_ref().unwrap();
    assert_eq!(load.config.target.ip().to_string(), "10.200.0.1");
    assert_eq!(load.idle.verified, 100);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains("iomodels-"),
        "namespaces left behind: {left}"
    );

    // 2 ms each way, by netem or (on a kernel without it, as here) by our delay line:
    // no answer comes sooner than the round trip, and every idle one is still held.
    let delayed = scratch("bench-netns-delay", false).join("run");
    let out = bench(&["--link-delay", "2ms"], &delayed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --link-delay failed: {err}");
    let run = Run::load(&delayed).unwrap();
    let network = run.settings.network.as_ref().unwrap();
    assert_eq!(network.link_delay_us, Some(2000));
    assert!(network.link_delay_by.is_some());
    let point = &run.points[0];
    assert_eq!(point.limit, None, "{:?}", point.limit);
    let load = point.load.as_ref().unwrap();
    assert!(load.latency_us.p50 >= 4000, "{:?}", load.latency_us);
    assert_eq!(load.idle.verified, 100);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains("iomodels-"),
        "namespaces left behind: {left}"
    );
}

/// A run made of chosen repeats: `(model, idle, CPU µs per request of each repeat)`,
/// every point otherwise the fixture's first idle point of epoll-et.
fn synthetic(series: &[(&str, usize, &[f64])]) -> Run {
    let mut run = Run::load(&fixture()).unwrap();
    let template = run
        .points
        .iter()
        .find(|p| p.experiment == Experiment::Idle && p.model == "epoll-et" && p.limit.is_none())
        .unwrap()
        .clone();
    run.points.clear();
    for (model, idle, repeats) in series {
        for (repeat, us) in repeats.iter().enumerate() {
            let mut p = template.clone();
            p.model = model.to_string();
            p.server_args.clear();
            p.idle = Some(*idle);
            p.repeat = repeat as u32;
            let answered = p.load.as_ref().unwrap().answered_in_window as f64;
            let server = p.server.as_mut().unwrap();
            server.cpu_user_s = us * answered / 1e6;
            server.cpu_sys_s = 0.0;
            run.points.push(p);
        }
    }
    run
}

/// Every comparative word comes from the repeats and the A/A floor: an equal pair is
/// indistinguishable, a model that grows is said to grow, and one burst among three
/// repeats does not make a lesson.
#[test]
fn verdicts_come_from_the_repeats_and_the_noise_floor() {
    use iomodels::experiments::idle::idle_cpu_per_request;
    use iomodels::verdict::NoiseFloor;
    let twin = "epoll-et (A/A)";
    let run = synthetic(&[
        ("epoll-et", 0, &[5.0, 5.1, 4.9]),
        ("epoll-et", 1100, &[5.05, 4.95, 5.0]),
        (twin, 0, &[5.1, 5.0, 5.2]),
        (twin, 1100, &[4.9, 5.0, 5.1]),
        ("select", 0, &[5.0, 5.2, 4.8]),
        ("select", 1100, &[20.0, 21.0, 19.0]),
    ]);
    let floor = NoiseFloor::of(&run).expect("the pair is there");
    assert!(floor.worst() > 0.0 && floor.worst() < 0.05, "{floor:?}");
    let said = idle_cpu_per_request(&run);
    assert!(
        said.contains("indistinguishable from 0 idle at the most each held: epoll-et;"),
        "{said}"
    );
    assert!(
        said.contains("grew, most first: select 5.0 → 20.0 µs"),
        "{said}"
    );
    assert!(
        !said.contains(twin),
        "the twin is the floor's, not a result: {said}"
    );

    // One repeat of three doubled by a burst: the median stays, and so does the verdict.
    let burst = synthetic(&[
        ("epoll-et", 0, &[5.0, 5.1, 4.9]),
        ("epoll-et", 1100, &[5.0, 10.2, 5.1]),
        (twin, 0, &[5.1, 5.0, 5.2]),
        (twin, 1100, &[4.9, 5.0, 5.1]),
    ]);
    let said = idle_cpu_per_request(&burst);
    assert!(said.contains("indistinguishable from 0 idle"), "{said}");
    assert!(!said.contains("grew"), "{said}");
}

/// A bench run started in the background, and the folder it writes.
fn bench_in_background(name: &str) -> (std::process::Child, PathBuf) {
    let dir = scratch(name, false).join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args([
            "bench",
            "--experiments",
            "idle",
            "--models",
            "epoll-et,poll",
            "--idle-points",
            "0,1000",
            "--warmup",
            "100ms",
            "--window",
            "500ms",
            "--repeats",
            "20",
            "--out",
        ])
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, dir)
}

/// Waits (at most 60 s) until the run has saved `points` points.
#[track_caller]
fn wait_for_points(dir: &Path, points: usize) {
    for _ in 0..600 {
        if Run::load(dir).is_ok_and(|r| r.points.len() >= points) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the run saved fewer than {points} points in 60 s");
}

/// The cgroups a run of `pid` makes, if any is still there.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/unified",
    ]
    .iter()
    .map(|root| Path::new(root).join(format!("iomodels-bench-{pid}")))
    .filter(|d| d.exists())
    .collect()
}

/// Processes whose parent is `pid` (its servers).
fn children_of(pid: u32) -> Vec<String> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    list.unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// SIGINT, SIGTERM and SIGHUP each stop a run between or inside points: it exits 130,
/// keeps every point finished before (drawn by plot), and leaves no server or cgroup
/// behind.
#[test]
fn a_stopped_run_keeps_its_points_and_leaves_nothing_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for (i, signal) in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]
        .into_iter()
        .enumerate()
    {
        let (mut child, dir) = bench_in_background(&format!("stopped-{i}"));
        let pid = child.id();
        wait_for_points(&dir, 2 + i);
        kill(Pid::from_raw(pid as i32), signal).unwrap();
        let mut waited = 0;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(waited < 300, "{signal}: the run did not stop within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        };
        assert_eq!(status.code(), Some(130), "{signal}");
        let run = Run::load(&dir).unwrap();
        let stopped = run.stopped.as_deref().unwrap_or_default();
        assert!(
            stopped.contains("stopped by a signal"),
            "{signal}: {stopped:?}"
        );
        assert!(
            run.points.len() >= 2 + i,
            "{signal}: {} points",
            run.points.len()
        );
        assert!(
            run.points.iter().all(|p| p.limit.is_none()),
            "{signal}: a point broken by the stop was kept"
        );
        assert!(dir.join("REPORT.md").exists(), "{signal}: plot drew it");
        assert!(
            cgroups_of(pid).is_empty(),
            "{signal}: {:?}",
            cgroups_of(pid)
        );
        assert!(children_of(pid).is_empty(), "{signal}: servers left");
    }
}

/// What a run killed outright left (its cgroups) is removed by the next run, which says
/// so; its servers died with it.
#[test]
fn a_killed_runs_leftovers_are_removed_by_the_next() {
    let (mut child, dir) = bench_in_background("killed");
    let pid = child.id();
    wait_for_points(&dir, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    if Run::load(&dir).unwrap().settings.server_cpu_quota.is_none() {
        // No cgroup could be made here (no controller, or not root): nothing to leave.
        assert!(cgroups_of(pid).is_empty());
        return;
    }
    assert!(
        !cgroups_of(pid).is_empty(),
        "a SIGKILLed run cannot clean up"
    );
    let next = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["bench", "--experiments", "wait-cost", "--out"])
        .arg(scratch("after-killed", false).join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&next.stderr);
    assert!(next.status.success(), "{err}");
    assert!(
        err.contains("removed what an earlier run left behind: cgroup")
            && err.contains(&format!("iomodels-bench-{pid}")),
        "{err}"
    );
    assert!(cgroups_of(pid).is_empty());
}

/// Network namespaces, veths and TUN devices of the run of `pid` still here.
fn links_of(pid: u32) -> String {
    let out = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let found: Vec<String> = [out(&["netns", "list"]), out(&["link", "show"])]
        .join("\n")
        .lines()
        .filter(|l| {
            l.contains(&format!("iomodels-server-{pid}"))
                || l.contains(&format!("iomodels-client-{pid}"))
                || l.contains(&format!("iom{pid}"))
        })
        .map(String::from)
        .collect();
    found.join("\n")
}

/// Stopped at other moments: at once (while it sets up its namespaces and starts the
/// first server), inside a window across namespaces joined by a delay line, and during
/// the wrk cross-check. Each time: exit 130, why in run.json, and no process, cgroup,
/// namespace, veth or TUN device of the run left.
#[test]
fn a_run_stopped_at_any_moment_leaves_nothing_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let exe = env!("CARGO_BIN_EXE_iomodels");
    let stop_and_check =
        |mut child: std::process::Child, dir: &Path, signal: Signal, when: &str| {
            let pid = child.id();
            kill(Pid::from_raw(pid as i32), signal).unwrap();
            let asked = std::time::Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    asked.elapsed().as_secs() < 60,
                    "{when}: not stopped within 60 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            assert_eq!(status.code(), Some(130), "{when}");
            if let Ok(run) = Run::load(dir) {
                assert!(
                    run.stopped.is_some(),
                    "{when}: run.json does not say it stopped"
                );
            }
            assert!(cgroups_of(pid).is_empty(), "{when}: {:?}", cgroups_of(pid));
            assert!(children_of(pid).is_empty(), "{when}: processes left");
            let links = links_of(pid);
            assert!(links.is_empty(), "{when}: left {links}");
        };
    let netns = |name: &str| {
        let dir = scratch(name, false).join("run");
        let child = Command::new(exe)
            .args([
                "bench",
                "--netns",
                "--link-delay",
                "1ms",
                "--experiments",
                "idle",
            ])
            .args([
                "--models",
                "epoll-et",
                "--idle-points",
                "0,100",
                "--repeats",
                "20",
            ])
            .args(["--warmup", "100ms", "--window", "500ms", "--out"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (child, dir)
    };
    // At once: the namespaces and the delay line are being made.
    let (child, dir) = netns("stopped-at-once");
    std::thread::sleep(std::time::Duration::from_millis(150));
    stop_and_check(
        child,
        &dir,
        Signal::SIGINT,
        "at once, with --netns --link-delay",
    );
    // Inside a window, across the delay line.
    let (child, dir) = netns("stopped-in-netns");
    wait_for_points(&dir, 1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop_and_check(
        child,
        &dir,
        Signal::SIGHUP,
        "in a window, with --netns --link-delay",
    );
    // During the wrk cross-check (where wrk is installed).
    if Command::new("wrk").arg("--version").output().is_err() {
        return;
    }
    let dir = scratch("stopped-in-wrk", false).join("run");
    let child = Command::new(exe)
        .args(["bench", "--experiments", "idle", "--models", "epoll-et"])
        .args([
            "--idle-points",
            "0",
            "--repeats",
            "1",
            "--warmup",
            "100ms",
            "--window",
            "300ms",
            "--out",
        ])
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = std::time::Instant::now();
    let wrk_runs = || {
        children_of(pid).iter().any(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "wrk")
        })
    };
    while !wrk_runs() {
        assert!(started.elapsed().as_secs() < 60, "wrk never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop_and_check(child, &dir, Signal::SIGTERM, "during the wrk cross-check");
    let run = Run::load(&dir).unwrap();
    assert!(run.stopped.unwrap().contains("cross-check"));
    assert!(run.crosscheck.is_none());
}
