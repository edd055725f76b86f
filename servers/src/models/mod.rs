//! One file per I/O model; nothing else lives here. Each shows its whole loop, and
//! neighbours differ only where the models do: `diff poll.rs epoll_lt.rs`.

pub mod blocking;
pub mod busy_poll;
pub mod epoll_et;
pub mod epoll_lt;
pub mod epoll_mt;
pub mod io_uring;
pub mod poll;
pub mod prefork;
pub mod reactor;
pub mod select;
pub mod sigio;
pub mod thread_pool;
