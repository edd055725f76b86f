//! The measured window: the one place that says whether an instant counts.

use std::time::{Duration, Instant};

/// From the end of the warm-up (`from`) to the end of the run (`end`, excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Instant,
    pub end: Instant,
}

impl Window {
    /// The window of a run that starts at `start`: `warmup`, then `duration` measured.
    pub fn after(start: Instant, warmup: Duration, duration: Duration) -> Window {
        let from = start + warmup;
        Window {
            from,
            end: from + duration,
        }
    }

    /// `t` falls inside the window: what happens then is counted.
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.end
    }

    /// The warm-up is over at `t` (the window has opened, and may have closed).
    pub fn opened_by(&self, t: Instant) -> bool {
        t >= self.from
    }

    /// The second of the window `t` falls in, from 0; an instant after the window's end
    /// counts in its last second.
    pub fn second_of(&self, t: Instant) -> usize {
        let last = (self.end - self.from).as_secs() as usize;
        (t.saturating_duration_since(self.from).as_secs() as usize).min(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edges_of_the_window() {
        let start = Instant::now();
        let w = Window::after(start, Duration::from_secs(1), Duration::from_secs(3));
        assert!(!w.contains(start), "warm-up is not counted");
        assert!(w.contains(w.from), "the window opens at its start");
        assert!(!w.contains(w.end), "and closes before its end");
        assert!(!w.opened_by(start) && w.opened_by(w.end));
        assert_eq!(w.second_of(start), 0);
        assert_eq!(w.second_of(w.from + Duration::from_millis(1500)), 1);
        assert_eq!(w.second_of(w.end + Duration::from_secs(5)), 3);
    }
}
