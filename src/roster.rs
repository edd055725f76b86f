//! The roster: every contender the suite can run, one row each, as libevent lists its
//! backends in one `eventop` table. Our models (from [`iomodels_servers::MODELS`]), the
//! real servers beside them (peers), the engineer's own (`--server NAME=COMMAND`) and
//! the wait calls the wait-cost experiment times without a server.
//!
//! A row says how the contender is started or found, how it is drawn, its chapter and
//! what the report and the book say of it. Every other part of the suite asks the
//! roster; none compares a contender's name with a string of its own.

use plotters::style::RGBColor;

use iomodels_servers::{Model, MODELS};

use crate::bench::peers::{self, Custom, Peer};
use crate::bench::wait_cost::Call;

/// One contender.
pub struct Contender {
    /// The one spelling: the CLI value, `"model"` in run.json, the chart legend.
    pub name: &'static str,
    pub start: Start,
    pub look: Look,
    /// How its parallelism is set, where it has more than one thread of work.
    pub parallel: Parallel,
    /// Its chapter's results page (`book/src/generated/models/NAME.md`): the series its
    /// tables show, itself first, then what it is compared with. Empty: no chapter.
    pub chapter: &'static [&'static Contender],
    /// What an idle connection costs it where it is more than a descriptor and a few
    /// small buffers: (the series' server arguments, what it pays for).
    pub memory: &'static [(&'static [&'static str], &'static str)],
}

/// How a contender is started, or found.
pub enum Start {
    /// A model of ours: `iomodels serve NAME`.
    Model,
    /// A real server, started when installed.
    Peer(&'static Peer),
    /// The engineer's own (`--server NAME=COMMAND`): every one of them is this row.
    Own,
    /// The same model as another row, measured again under a name of its own: the run's
    /// A/A pair, whose gap is the run's noise floor. Not drawn, not in the tables but
    /// the noise floor's.
    Twin(&'static Contender),
    /// No server: a wait call, timed on its own (`bench/wait_cost.rs`).
    WaitCall(Call),
}

/// How its lines and bars are drawn.
pub enum Look {
    /// A colour of its own (no other row has it).
    Colour(RGBColor),
    /// A series started with these server arguments (and no route of its own) is drawn
    /// a darker shade: the reactor with its work on the loop (`--executor 0`).
    Shaded(RGBColor, &'static [&'static str]),
    /// The colour of another row: a wait call is drawn as the model that makes it.
    As(&'static Contender),
}

/// How its parallelism is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallel {
    /// One thread of work, or a thread per connection (blocking), nothing to set.
    One,
    /// `--threads N`; `per_cpu`: the suite says N on every point, one per server CPU
    /// (its default would follow the pinning silently).
    Threads { per_cpu: bool },
    /// `--workers N` worker processes.
    Workers,
}

impl Parallel {
    /// The server arguments that give it `n` threads or workers; none for `One`.
    pub fn args(self, n: usize) -> Vec<String> {
        let flag = match self {
            Parallel::One => return Vec::new(),
            Parallel::Threads { .. } => "--threads",
            Parallel::Workers => "--workers",
        };
        vec![flag.to_string(), n.to_string()]
    }
}

impl Contender {
    /// Its row in the table of models, if it is one of ours.
    pub fn model(&self) -> Option<&'static Model> {
        match self.start {
            Start::Model => MODELS.iter().find(|m| m.name == self.name),
            _ => None,
        }
    }

    /// The peer it is, if it is one.
    pub fn peer(&self) -> Option<&'static Peer> {
        match self.start {
            Start::Peer(peer) => Some(peer),
            _ => None,
        }
    }

    /// The row it is the A/A twin of, if it is one.
    pub fn twin_of(&self) -> Option<&'static Contender> {
        match self.start {
            Start::Twin(of) => Some(of),
            _ => None,
        }
    }

    /// The model `iomodels serve` runs for it: its own, or its twin's.
    pub fn serves(&self) -> Option<&'static Model> {
        match self.start {
            Start::Twin(of) => of.model(),
            _ => self.model(),
        }
    }

    /// The wait call it is, if it is one.
    pub fn call(&self) -> Option<Call> {
        match self.start {
            Start::WaitCall(call) => Some(call),
            _ => None,
        }
    }

    /// The colour of its series started with `args`, asking a route of its own or not.
    pub fn colour(&self, args: &[String], own_route: bool) -> RGBColor {
        match self.look {
            Look::Colour(c) => c,
            Look::Shaded(c, shaded) => {
                let shade = !own_route && args.ends_with_strs(shaded);
                if shade {
                    let RGBColor(r, g, b) = c;
                    RGBColor(r / 2, g / 2, b / 2)
                } else {
                    c
                }
            }
            Look::As(other) => other.colour(args, own_route),
        }
    }

    /// Whether `name` (a point's `"model"`) is this contender.
    pub fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// `args` ends with `tail`, spelled as `&str`s.
trait EndsWith {
    fn ends_with_strs(&self, tail: &[&str]) -> bool;
}

impl EndsWith for [String] {
    fn ends_with_strs(&self, tail: &[&str]) -> bool {
        self.len() >= tail.len() && self[self.len() - tail.len()..].iter().eq(tail.iter())
    }
}

const fn model(name: &'static str, colour: RGBColor) -> Contender {
    Contender {
        name,
        start: Start::Model,
        look: Look::Colour(colour),
        parallel: Parallel::One,
        chapter: &[],
        memory: &[],
    }
}

// ANCHOR: roster
pub static BLOCKING: Contender = Contender {
    chapter: &[&BLOCKING, &THREAD_POOL, &EPOLL_ET],
    memory: &[(&[], "a thread: its stack and its kernel task")],
    ..model("blocking", RGBColor(214, 39, 40))
};
pub static BUSY_POLL: Contender = Contender {
    chapter: &[&BUSY_POLL, &BLOCKING, &EPOLL_ET],
    ..model("busy-poll", RGBColor(140, 86, 75))
};
pub static SELECT: Contender = Contender {
    chapter: &[&SELECT, &POLL, &EPOLL_ET],
    ..model("select", RGBColor(255, 127, 14))
};
pub static POLL: Contender = Contender {
    chapter: &[&POLL, &SELECT, &EPOLL_ET],
    ..model("poll", RGBColor(148, 103, 189))
};
pub static EPOLL_LT: Contender = Contender {
    chapter: &[&EPOLL_LT, &EPOLL_ET, &POLL],
    ..model("epoll-lt", RGBColor(23, 190, 207))
};
pub static EPOLL_ET: Contender = Contender {
    chapter: &[&EPOLL_ET, &EPOLL_LT, &POLL],
    ..model("epoll-et", RGBColor(31, 119, 180))
};
pub static THREAD_POOL: Contender = Contender {
    parallel: Parallel::Threads { per_cpu: false },
    chapter: &[&THREAD_POOL, &BLOCKING, &EPOLL_ET],
    ..model("thread-pool", RGBColor(227, 119, 194))
};
pub static REACTOR: Contender = Contender {
    look: Look::Shaded(RGBColor(188, 189, 34), &["--executor", "0"]),
    chapter: &[&REACTOR, &EPOLL_LT, &TORNADO],
    ..model("reactor", RGBColor(188, 189, 34))
};
pub static SIGIO: Contender = Contender {
    chapter: &[&SIGIO, &EPOLL_ET],
    ..model("sigio", RGBColor(127, 127, 127))
};
pub static IO_URING: Contender = Contender {
    chapter: &[&IO_URING, &EPOLL_ET],
    memory: &[(
        &["--uring-mode", "basic"],
        "a receive buffer of its own, held by the kernel while it waits",
    )],
    ..model("io-uring", RGBColor(0, 0, 0))
};
pub static EPOLL_MT: Contender = Contender {
    parallel: Parallel::Threads { per_cpu: true },
    chapter: &[&EPOLL_MT, &EPOLL_ET, &NGINX],
    ..model("epoll-mt", RGBColor(57, 59, 121))
};
pub static PREFORK: Contender = Contender {
    parallel: Parallel::Workers,
    chapter: &[&PREFORK, &EPOLL_ET, &EPOLL_MT, &NGINX],
    ..model("prefork", RGBColor(23, 107, 59))
};

pub static NGINX: Contender = Contender {
    start: Start::Peer(&peers::NGINX),
    ..model("nginx", RGBColor(44, 160, 44))
};
pub static TORNADO: Contender = Contender {
    start: Start::Peer(&peers::TORNADO),
    memory: &[(
        &[],
        "Python objects (a socket, an IOStream and its buffers) on its one thread",
    )],
    ..model("tornado", RGBColor(140, 162, 82))
};

/// epoll-et again, under another name: every run's A/A pair.
pub static EPOLL_ET_TWIN: Contender = Contender {
    start: Start::Twin(&EPOLL_ET),
    look: Look::As(&EPOLL_ET),
    ..model("epoll-et (A/A)", RGBColor(0, 0, 0))
};

/// Every server of the engineer's own (`--server`), whatever its name.
pub static OWN: Contender = Contender {
    start: Start::Own,
    ..model("(your own)", RGBColor(120, 120, 120))
};

pub static SELECT_CALL: Contender = Contender {
    start: Start::WaitCall(Call::Select),
    look: Look::As(&SELECT),
    ..model("select", RGBColor(0, 0, 0))
};
pub static POLL_CALL: Contender = Contender {
    start: Start::WaitCall(Call::Poll),
    look: Look::As(&POLL),
    ..model("poll", RGBColor(0, 0, 0))
};
pub static EPOLL_CALL: Contender = Contender {
    start: Start::WaitCall(Call::Epoll),
    look: Look::As(&EPOLL_ET),
    ..model("epoll", RGBColor(0, 0, 0))
};

/// Every contender: the models in the order the book teaches them, the peers, the
/// engineer's own, the wait calls.
pub static ROSTER: &[&Contender] = &[
    &BLOCKING,
    &BUSY_POLL,
    &SELECT,
    &POLL,
    &EPOLL_LT,
    &EPOLL_ET,
    &THREAD_POOL,
    &REACTOR,
    &SIGIO,
    &IO_URING,
    &EPOLL_MT,
    &PREFORK,
    &NGINX,
    &TORNADO,
    &EPOLL_ET_TWIN,
    &OWN,
    &SELECT_CALL,
    &POLL_CALL,
    &EPOLL_CALL,
];
// ANCHOR_END: roster

/// The twins of the models in `models`, in the roster's order.
pub fn twins_of<'a>(models: &'a [String]) -> impl Iterator<Item = &'static Contender> + 'a {
    ROSTER.iter().copied().filter(move |c| {
        c.twin_of()
            .is_some_and(|of| models.iter().any(|m| of.is(m)))
    })
}

/// The server the wrk cross-check runs against.
pub static CROSSCHECK: &Contender = &EPOLL_ET;

/// The contender a point's `"model"` names: a server (a model, a peer) before a wait
/// call of the same name (select, poll), and the engineer's own for any other name.
pub fn find(name: &str) -> &'static Contender {
    ROSTER
        .iter()
        .copied()
        .filter(|c| !matches!(c.start, Start::Own))
        .find(|c| c.is(name))
        .unwrap_or(&OWN)
}

/// The server named `name` (a model or a peer), if any.
pub fn server(name: &str) -> Option<&'static Contender> {
    ROSTER
        .iter()
        .copied()
        .filter(|c| matches!(c.start, Start::Model | Start::Peer(_) | Start::Twin(_)))
        .find(|c| c.is(name))
}

/// The peers, in the roster's order.
pub fn peers() -> impl Iterator<Item = &'static Contender> {
    ROSTER.iter().copied().filter(|c| c.peer().is_some())
}

/// The wait calls, in the roster's order.
pub fn wait_calls() -> impl Iterator<Item = &'static Contender> {
    ROSTER.iter().copied().filter(|c| c.call().is_some())
}

/// The wait call named `name` (a wait-cost point's `"model"`).
pub fn wait_call(name: &str) -> Option<Call> {
    wait_calls().find(|c| c.is(name)).and_then(Contender::call)
}

/// The contenders with a chapter's results page, in the roster's order.
pub fn chapters() -> impl Iterator<Item = &'static Contender> {
    ROSTER.iter().copied().filter(|c| !c.chapter.is_empty())
}

/// `--server NAME=COMMAND`, with a name no model or peer has.
pub fn own_server(text: &str) -> Result<Custom, String> {
    let custom = Custom::parse(text)?;
    if let Some(taken) = server(&custom.name) {
        return Err(format!(
            "{:?} is already a model or a peer: name yours otherwise",
            taken.name
        ));
    }
    Ok(custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_has_one_row_and_every_row_a_model_or_a_start_of_its_own() {
        for m in MODELS {
            let rows: Vec<&&Contender> = ROSTER
                .iter()
                .filter(|c| matches!(c.start, Start::Model) && c.name == m.name)
                .collect();
            assert_eq!(rows.len(), 1, "{}: no roster row, or more than one", m.name);
            assert_eq!(rows[0].model().map(|r| r.name), Some(m.name));
        }
        for c in ROSTER.iter().filter(|c| matches!(c.start, Start::Model)) {
            assert!(c.model().is_some(), "{} is in no row of MODELS", c.name);
        }
    }

    #[test]
    fn no_two_rows_share_a_colour_and_a_borrowed_colour_is_a_servers() {
        let own: Vec<(&str, RGBColor)> = ROSTER
            .iter()
            .filter_map(|c| match c.look {
                Look::Colour(rgb) | Look::Shaded(rgb, _) => Some((c.name, rgb)),
                Look::As(other) => {
                    assert!(
                        server(other.name).is_some(),
                        "{} borrows a non-server",
                        c.name
                    );
                    None
                }
            })
            .collect();
        for (i, (a, ca)) in own.iter().enumerate() {
            for (b, cb) in &own[i + 1..] {
                assert_ne!(ca, cb, "{a} and {b} share a colour");
            }
        }
        // The reactor with its work on the loop is a shade of its own too.
        let dark = REACTOR.colour(&["--executor".into(), "0".into()], false);
        assert!(own.iter().all(|(_, c)| *c != dark));
        assert_ne!(
            dark,
            REACTOR.colour(&["--executor".into(), "30".into()], false)
        );
    }

    #[test]
    fn a_name_finds_its_server_before_its_wait_call_and_anything_else_is_ones_own() {
        assert!(std::ptr::eq(find("select"), &SELECT));
        assert!(std::ptr::eq(find("epoll"), &EPOLL_CALL));
        assert!(std::ptr::eq(find("mine"), &OWN));
        assert_eq!(wait_call("select"), Some(Call::Select));
        assert_eq!(wait_call("epoll-et"), None);
        assert!(server("epoll").is_none());
    }

    #[test]
    fn every_chapter_page_shows_its_own_model_first() {
        for c in chapters() {
            assert!(std::ptr::eq(c.chapter[0], c), "{}", c.name);
            assert!(
                c.model().is_some(),
                "{} has a chapter page but is no model",
                c.name
            );
        }
        assert_eq!(chapters().count(), MODELS.len());
    }

    #[test]
    fn a_server_of_ones_own_may_not_take_a_models_or_a_peers_name() {
        assert!(own_server("epoll-et=./srv {port}")
            .unwrap_err()
            .contains("already"));
        assert!(own_server("nginx=./srv {port}")
            .unwrap_err()
            .contains("already"));
        assert_eq!(own_server("mine=./srv {port}").unwrap().name, "mine");
    }
}
