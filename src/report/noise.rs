//! What a run can tell apart: its A/A pair (the noise floor every verdict is held
//! against), and what else ran on the machine while it measured.

use std::fmt::Write as _;

use crate::bench::cpustat::THRESHOLD;
use crate::bench::AGAIN;
use crate::results::Run;
use crate::series::median;
use crate::verdict::{NoiseFloor, FLOOR_WITHOUT_PAIR};
use crate::words::thousands;

/// The noise section, near the top of REPORT.md.
pub fn noise_md(run: &Run) -> String {
    String::from("## Noise: what this run can tell apart\n\n") + &noise_body(run)
}

/// What the section says, without its heading (the book includes it in a chapter).
pub fn noise_body(run: &Run) -> String {
    floor_md(run) + &interference_md(run)
}

fn floor_md(run: &Run) -> String {
    let Some(floor) = NoiseFloor::of(run) else {
        return format!(
            "This run has no A/A pair (it is older than the pair, or its idle experiment \
             did not run epoll-et): its verdicts are held against a floor of {:.0}%.\n\n",
            FLOOR_WITHOUT_PAIR * 100.0
        );
    };
    let mut md = format!(
        "The same server was measured twice in every round of the idle experiment, as \
         `{}` and as `{}`. Their median server CPU per request (µs), and the gap between \
         them:\n\n| idle connections | {} | {} | gap |\n|---:|---:|---:|---:|\n",
        floor.name, floor.twin, floor.name, floor.twin
    );
    for (x, a, b, gap) in &floor.gaps {
        let _ = writeln!(
            md,
            "| {} | {a:.2} | {b:.2} | {:.1}% |",
            thousands(*x),
            gap * 100.0
        );
    }
    let _ = write!(
        md,
        "\nThe widest gap, {:.1}% (the median over the points: {:.1}%), is this run's noise \
         floor: two figures of this report are called different (\"lower\", \"higher\") only \
         when they are further apart than that and the bootstrap over their repeats leaves \
         no doubt; otherwise they are indistinguishable in this run.\n\n",
        floor.worst() * 100.0,
        floor.median() * 100.0
    );
    md
}

/// "0.98–1.12×, median 1.01×" of the pace probe's slowdowns; "unmeasured" without any.
fn pace(slow: &[f64]) -> String {
    let (Some(lo), Some(hi), Some(mid)) = (
        slow.iter().copied().reduce(f64::min),
        slow.iter().copied().reduce(f64::max),
        median(slow),
    ) else {
        return "(unmeasured)".into();
    };
    format!("{lo:.2}–{hi:.2}× (median {mid:.2}×)")
}

fn interference_md(run: &Run) -> String {
    let measured: Vec<_> = run
        .points
        .iter()
        .filter_map(|p| p.interference.as_ref().map(|i| (p, i)))
        .collect();
    if measured.is_empty() {
        return "No window of this run recorded what else ran on its CPUs (runs from before \
                that was measured, or servers not pinned).\n\n"
            .into();
    }
    let again: usize = run.points.iter().map(|p| p.discarded.len()).sum();
    let points_again = run
        .points
        .iter()
        .filter(|p| !p.discarded.is_empty())
        .count();
    // Windows still disturbed after every try (a limit is never measured again).
    let kept_over = measured
        .iter()
        .filter(|(p, i)| {
            p.limit.is_none() && p.discarded.len() == AGAIN && THRESHOLD.exceeded(i).is_some()
        })
        .count();
    let slow: Vec<f64> = measured
        .iter()
        .filter_map(|(_, i)| i.server_slowdown)
        .collect();
    let steal: Vec<f64> = measured
        .iter()
        .map(|(_, i)| i.server_steal_pct.max(i.load_steal_pct))
        .collect();
    let others: Vec<f64> = measured.iter().map(|(_, i)| i.server_others_pct).collect();
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut md = format!(
        "What else ran on the CPUs, window by window (`/proc/stat`): steal (the hypervisor \
         running another guest) on the server's or the load generator's CPUs, median {:.1}% \
         of a window, worst {:.1}%; other tasks on the server's CPU, median {:.1}%, worst \
         {:.1}%; a fixed piece of work on the server's CPU ran at {} of its pace in the \
         run's windows before. A window with more than {:.0}% steal, {:.0}% other tasks or a CPU \
         {:.0}% slow is measured again, up to {AGAIN} times: ",
        median(&steal).unwrap_or(0.0),
        worst(&steal),
        median(&others).unwrap_or(0.0),
        worst(&others),
        pace(&slow),
        THRESHOLD.steal_pct,
        THRESHOLD.others_pct,
        (THRESHOLD.slowdown - 1.0) * 100.0
    );
    if again == 0 {
        let _ = write!(md, "none of the {} windows was.", measured.len());
    } else {
        let _ = write!(
            md,
            "{again} windows of {points_again} points were (run.json keeps each, with why), \
             of {} windows kept.",
            measured.len()
        );
    }
    if kept_over > 0 {
        let _ = write!(
            md,
            " {kept_over} windows were still over it after {AGAIN} more tries and are kept, \
             marked in run.json by their `interference`."
        );
    }
    md.push_str("\n\n");
    md
}
