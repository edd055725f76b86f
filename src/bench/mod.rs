//! `iomodels bench`: every experiment, end to end, into a run folder.
//!
//! Each server is a child process pinned to its own CPU; the load generator runs in
//! this process on the other CPUs. A run is four steps, a file each: the rig is set up
//! (`rig.rs`), the jobs are planned (`jobs.rs`), each is measured (`measure.rs`) and
//! saved (`save.rs`, `log.rs`): run.json is saved after every point, so an interrupted
//! run keeps what it measured.

pub mod child;
pub mod cpustat;
pub mod delay_line;
pub mod jobs;
pub mod log;
pub mod machine;
pub mod measure;
pub mod network;
pub mod options;
pub mod pace;
pub mod peers;
pub mod plan;
pub mod procfs;
pub mod quota;
pub mod remote;
pub mod rig;
pub mod save;
pub mod slowloris;
pub mod stop;
pub mod wait_cost;

use std::collections::HashMap;

use crate::experiments::Experiment;
use crate::results::{Discarded, Limit, Point, Run};
use crate::series::SeriesKey;
use log::Log;
pub use options::Options;
pub use plan::{Overrides, Profile};
use rig::Rig;
pub use save::default_out;

/// A window disturbed by other work ([`cpustat::THRESHOLD`]) is measured again, at
/// most this many times; the last is kept then, with what it carried.
pub const AGAIN: usize = 2;

/// The job measured in a window nothing else disturbed, or after [`AGAIN`] more tries;
/// the windows discarded on the way are kept in the point, with why.
fn undisturbed(rig: &Rig, job: &measure::Job, log: &Log) -> Point {
    let mut discarded = Vec::new();
    loop {
        let mut point = measure::measure(rig, job, log);
        let found = point.interference.clone().filter(|_| point.limit.is_none());
        let why = found.as_ref().and_then(|i| cpustat::THRESHOLD.exceeded(i));
        match (why, found) {
            (Some(why), Some(interference)) if discarded.len() < AGAIN => {
                log.say(&format!("{}: measured again: {why}", job.label));
                discarded.push(Discarded {
                    why,
                    interference,
                    rps: point.rps(),
                    cpu_us_per_request: point.cpu_us_per_request(),
                });
            }
            _ => {
                point.discarded = discarded;
                return point;
            }
        }
    }
}

/// Run the suite; returns the run (also saved as run.json in `options.out`).
pub fn run(options: &Options) -> Result<Run, String> {
    // First of all, so that a signal at any later moment finds the run ready to stop.
    let stop = stop::Stop::install()?;
    let out = &options.out;
    save::claim(out)?;
    for removed in stop::leftovers() {
        eprintln!("iomodels: removed what an earlier run left behind: {removed}");
    }
    let (rig, rig_notes) = Rig::set_up(options.rig())?;
    let (peers, mut notes) = jobs::peers(options);
    notes.extend(rig_notes);
    for note in &notes {
        eprintln!("iomodels: {note}");
    }
    let mut run = save::header(options, &rig, notes);

    let jobs = jobs::plan(options, &peers, &rig);
    let log = Log::new(jobs.len());
    // Past a model's limit in a series, larger points are recorded, not run.
    let mut limited: HashMap<(Experiment, SeriesKey, u32), (usize, Limit)> = HashMap::new();
    for job in &jobs {
        if stop.asked() {
            run.stopped = Some(format!(
                "stopped by a signal after {} of {} points; the point under way then was \
                 dropped",
                run.points.len(),
                jobs.len()
            ));
            break;
        }
        log.bar.set_message(job.label.clone());
        let key = (
            job.point.experiment,
            job.point.series_key(),
            job.point.repeat,
        );
        let point = match limited.get(&key) {
            Some((x, limit)) if job.x > *x => Point {
                limit: Some(limit.not_run_past(*x)),
                ..job.point.clone()
            },
            _ => undisturbed(&rig, job, &log),
        };
        if stop.asked() {
            // Measured while the run was being stopped (its server may have had the
            // terminal's SIGINT too): not a finished point.
            continue;
        }
        if let Some(limit) = &point.limit {
            limited.entry(key).or_insert((job.x, limit.clone()));
        }
        log.point(&job.label, &point);
        run.points.push(point);
        run.save(out)?;
        log.bar.inc(1);
    }
    log.bar.finish_and_clear();

    if run.stopped.is_none() && options.experiments.iter().any(|e| e.has_load()) {
        match peers::wrk_missing() {
            Some(why) => run.notes.push(why),
            None => match measure::crosscheck(&rig, &log) {
                Ok(c) => run.crosscheck = Some(c),
                Err(e) => run.notes.push(format!("the wrk cross-check failed: {e}")),
            },
        }
        if stop.asked() {
            // Its server and wrk are gone with the cross-check; what it measured while
            // being stopped is no cross-check.
            run.crosscheck = None;
            run.stopped = Some(format!(
                "stopped by a signal during the wrk cross-check, after all {} points",
                run.points.len()
            ));
        }
    }
    run.save(out)?;
    Ok(run)
}
